# Runs last: the suite ran against the module and the worker built with
# AddressSanitizer + UndefinedBehaviorSanitizer (make test); any report they
# wrote, and any nginx worker that died on a signal, fails the run.
use strict;
use warnings;
use lib 't/lib';
use Test::More;

plan skip_all => 'suite not built with sanitizers (SANITIZE=0)'
    unless ($ENV{FG_SANITIZE} // '') eq '1';

my $logs = "$ENV{FG_RUN_DIR}/logs";
my @reports = glob("$logs/sanitizer.*");
is(scalar @reports, 0, 'no AddressSanitizer/UBSan report')
    or diag(`cat @reports | head -60`);

ok(-s "$ENV{FG_LD_PRELOAD}", 'nginx ran with the ASan runtime preloaded');
like(`ldd $ENV{FG_MODULE}`, qr/libasan/, 'the module under test is instrumented');
like(`ldd $ENV{FG_WORKER}`, qr/libasan/, 'the worker under test is instrumented');

# every nginx the suite started: the stack's own and the Test::Nginx ones
my @errlogs = (glob("$ENV{FG_RUN_DIR}/nginx/logs/*error*.log"),
               glob("$ENV{FG_RUN_DIR}/logs/nginx*.log"),
               glob("$ENV{FG_RUN_DIR}/t/*/logs/error.log"));
ok(@errlogs, 'nginx error logs found');
# ASan aborts (a signal); UBSan with halt_on_error exits with code 1, and
# reports that miss log_path land on stderr, i.e. in these logs
my @died = map { `grep -HE 'exited on signal|exited with code [1-9]|runtime error:|AddressSanitizer' $_` } @errlogs;
is(scalar @died, 0, 'no nginx worker died or reported') or diag(@died);

my @wlogs = glob("$ENV{FG_RUN_DIR}/logs/worker*.log");
my @wbad = map { `grep -HE 'runtime error:|AddressSanitizer' $_` } @wlogs;
is(scalar @wbad, 0, 'no sanitizer report in the worker log') or diag(@wbad);

done_testing();
