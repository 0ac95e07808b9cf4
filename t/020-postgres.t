# PostgreSQL of the stack: its own data directory and port, the schema from
# sql/ applied by numbered migrations, and applying them again changes
# nothing.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use FluxGate::Test;

is(psql('select 1'), 1, 'postgres answers on its own port');
like(psql('show data_directory'), qr/^\Q$ENV{FG_RUN_DIR}\E/,
     'data directory is the stack\'s own');

my @tables = psql(q{select table_name from information_schema.tables
                    where table_schema = 'public' order by 1});
for my $t (qw(dead_letters orders products schema_migrations)) {
    ok((grep { $_ eq $t } @tables), "table $t exists");
}

my @files = map { m{/(\d+)_[^/]*\.sql$} ? $1 : () } glob "$ENV{FG_ROOT}/sql/*.sql";
ok(@files > 0, 'sql/ has numbered migrations');
my @applied = psql('select version from schema_migrations order by 1');
is_deeply([map { $_ + 0 } @applied], [map { $_ + 0 } sort @files],
          'every migration recorded once, in order');

my $out = `$ENV{FG_ROOT}/build/fluxgate-worker --migrate --sql-dir $ENV{FG_ROOT}/sql 2>&1`;
is($?, 0, 'migrating again succeeds') or diag($out);
is(scalar(psql('select count(*) from schema_migrations')), scalar(@files),
   'and applies nothing twice');

like(`psql -X -Atqc "insert into products(id, stock) values ('t020', -1)" 2>&1`,
     qr/check constraint/, 'products.stock can never go negative');

done_testing();
