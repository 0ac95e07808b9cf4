# The Debian packages on this machine, as an operator installs them:
# `make deb` builds them (lintian finds no error), dpkg -i installs them,
# the system's nginx loads the packaged module with the packaged example
# site, pointed at this stack's Redis and Kafka, passes `nginx -t` and
# serves an order on a spare port (the machine's own nginx configuration
# and service are left alone), and its waiting room a ticket, signed with
# the key the package made on install and kept on upgrade; the packaged
# worker migrates a fresh database and records that order, and dpkg
# --purge leaves the machine as it found it: files (the key included),
# links, the enable state of units, users.
#
# A package that was already installed before the test (a developer's
# machine) is used as it is when it is this version, and never replaced
# or purged; another version of it skips the test.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Fcntl qw(:flock);
use File::Temp qw(tempdir);
use IO::Socket::INET;
use Digest::MD5;
use Time::HiRes qw(time sleep);
use HTTP::Tiny;
use FluxGate::Test;
use FluxGate::Worker;

skip_all_missing('installs packages: run as root') if $> != 0;

my $root = $ENV{FG_ROOT};
my $t0 = time;
my @pkgs = qw(libnginx-mod-http-fluxgate fluxgate-worker);
my ($mod_pkg, $worker_pkg) = @pkgs;
my $nginx = '/usr/sbin/nginx';

# one package test at a time on this machine, whichever checkout runs it
open my $lock, '>', '/tmp/fluxgate-packages.lock' or die "lock: $!";
flock($lock, LOCK_EX) or die "lock: $!";

sub run {
    my $out = `@_ 2>&1`;
    return ($? >> 8, $out);
}

# --- what is there before ---------------------------------------------------

# the version make deb builds (dpkg-parsechangelog may not be installed yet)
my ($version) = slurp("$root/debian/changelog") =~ /^\S+ \(([^)]+)\)/;
chomp(my $arch = `dpkg --print-architecture`);
my %deb = map { $_ => "$root/build/deb/${_}_${version}_$arch.deb" } @pkgs;

sub pkg_status {
    my ($p) = @_;
    my $s = `dpkg-query -W -f '\${db:Status-Status} \${Version}' $p 2>/dev/null`;
    $s =~ s/\s+$//;
    return $s eq '' ? 'not-installed' : $s;
}

my (@ours, @theirs);
for my $p (@pkgs) {
    my $s = pkg_status($p);
    if ($s =~ /^not-installed/) {
        push @ours, $p;
    } elsif ($s eq "installed $version") {
        push @theirs, $p;
        note("$p $version was installed before this test: used, not purged");
    } else {
        skip_all_missing("$p is \"$s\" on this machine: this test installs $version"
                         . " and would replace it; remove it to run the test");
    }
}

# --- build ----------------------------------------------------------------

my ($rc, $out) = run("make -C $root --no-print-directory deb");
is($rc, 0, 'make deb') or stop($out);
note(sprintf 'make deb (or finding it up to date): %.0f s', time - $t0);

ok(-f $deb{$_}, "build/deb/${_}_${version}_$arch.deb") for @pkgs;

my $lintian = slurp("$root/build/deb/lintian.log");
unlike($lintian, qr/^E: /m, 'lintian: no error') or diag($lintian);

{
    chomp(my $depends = `dpkg-deb -f $deb{$mod_pkg} Depends`);
    my ($abi) = $depends =~ /(nginx-abi-[\w.~+-]+)/;
    ok($abi, "the module depends on the nginx ABI it was built for ($depends)");
    like(`dpkg-query -W -f '\${Provides}' nginx`, qr/\Q$abi\E/,
         'which the installed nginx provides') if $abi;
}

# paths the packages or their maintainer scripts touch, with what is at
# each (type, link target, checksum), and the accounts
sub snapshot {
    my %s;
    my @paths = (
        (map { split /\n/, `dpkg-deb --fsys-tarfile $_ | tar -t` } values %deb),
        map { split /\n/, `find $_ 2>/dev/null` }
            qw(/etc/nginx /etc/fluxgate /etc/systemd/system /usr/share/fluxgate
               /var/lib/systemd/deb-systemd-helper-enabled
               /var/lib/systemd/deb-systemd-helper-masked
               /usr/share/nginx/modules-available /usr/lib/nginx/modules)
    );
    for my $path (@paths) {
        $path =~ s{^\./}{/};
        $path =~ s{(?<=.)/$}{};
        $s{$path} = -l $path ? 'link ' . readlink($path)
                  : -d _ ? 'dir'
                  : -f _ ? 'file ' . Digest::MD5->new->addfile(do {
                        open my $fh, '<', $path or die "$path: $!"; $fh })->hexdigest
                  : 'absent';
    }
    $s{"account $_"} = 1 for grep { /fluxgate/ } split /\n/, `getent passwd; getent group`;
    return \%s;
}

my $before = snapshot();
my ($nginx_t_before) = run("$nginx -t -q");

# --- install ----------------------------------------------------------------

# dpkg, waiting while another dpkg or apt holds its lock
sub dpkg {
    my ($r, $o);
    for (1 .. 60) {
        ($r, $o) = run("DEBIAN_FRONTEND=noninteractive dpkg @_");
        last unless $r != 0 && $o =~ /lock/ && $o =~ /another process|locked/;
        sleep 2;
    }
    return ($r, $o);
}

my ($nginx_pid, $worker, $db, $tmp);

# however the test ends: nothing of it keeps running, nothing installed stays
END {
    local $?;       # the test's own exit status stays
    kill 'QUIT', $nginx_pid if $nginx_pid;
    waitpid $nginx_pid, 0 if $nginx_pid;
    stop_private_worker($worker) if $worker;
    psql("drop database if exists $db") if $db;
    dpkg('--purge', @ours) if @ours && grep { pkg_status($_) !~ /^not-installed/ } @ours;
}

if (@ours) {
    ($rc, $out) = dpkg('-i', map { $deb{$_} } @ours);
    is($rc, 0, "dpkg -i @ours") or stop($out);
}
is(pkg_status($_), "installed $version", "$_ $version installed") for @pkgs;

# the snapshot sees what an install changes (else its "as found" proves nothing)
if (@ours == @pkgs) {
    my $during = snapshot();
    my %changed = map { $_ => 1 } grep { ($before->{$_} // '') ne ($during->{$_} // '') }
                                  keys %$during;
    my @seen = grep { $changed{$_} } '/usr/bin/fluxgate-worker', '/etc/fluxgate/worker.conf',
        '/etc/nginx/modules-enabled/50-mod-http-fluxgate.conf',
        '/var/lib/systemd/deb-systemd-helper-enabled/fluxgate-worker.service.dsh-also',
        '/etc/nginx/fluxgate-queue.secret';
    is(scalar @seen, 5, 'the snapshot sees the installed files, the enabled module, '
                      . 'the unit\'s state and the waiting room\'s key')
        or diag(join "\n", sort keys %changed);
}

# --- the module package -------------------------------------------------

my $enabled = '/etc/nginx/modules-enabled/50-mod-http-fluxgate.conf';
ok(-f '/usr/lib/nginx/modules/ngx_fluxgate_module.so', 'the module in nginx\'s module directory');
is(slurp('/usr/share/nginx/modules-available/mod-http-fluxgate.conf'),
   "load_module modules/ngx_fluxgate_module.so;\n", 'mod-http-fluxgate.conf loads it');
if (grep { $_ eq $mod_pkg } @ours) {
    is(readlink($enabled), '/usr/share/nginx/modules-available/mod-http-fluxgate.conf',
       'enabled on install, the Debian way (modules-enabled/50-...)');
}
ok(-f '/etc/nginx/sites-available/fluxgate', 'the example site in sites-available');
ok(!-e '/etc/nginx/sites-enabled/fluxgate', 'and not enabled');
ok(-f '/usr/share/fluxgate/waiting-room/index.html', 'the waiting room page');

# the waiting room's key: made by postinst, read by nginx's master as root,
# by the group of nginx's workers at most; the site names it
my $secret = '/etc/nginx/fluxgate-queue.secret';
{
    my @st = stat $secret;
    ok(@st, "$secret, the waiting room's key, made on install") or diag("stat: $!");
    is(sprintf('%04o', ($st[2] // 0) & 07777), '0640', 'mode 0640');
    is(scalar getpwuid($st[4] // -1), 'root', 'owned by root');
    is(scalar getgrgid($st[5] // -1), 'www-data', 'group www-data (nginx\'s workers)');
    (my $key = slurp($secret)) =~ s/[\r\n]+$//;
    cmp_ok(length $key, '>=', 32, 'at least the 32 bytes fluxgate_queue_secret asks for');
    like(slurp('/etc/nginx/sites-available/fluxgate'),
         qr{^fluxgate_queue_secret \Q$secret\E;$}m, 'and the example site uses it');
}
if (grep { $_ eq $mod_pkg } @ours) {
    my $before = slurp($secret);
    ($rc, $out) = dpkg('-i', $deb{$mod_pkg});
    is($rc, 0, "$mod_pkg installed again, as an upgrade is") or diag($out);
    is(slurp($secret), $before, 'the key is kept: tickets handed out before stay valid');
    is(sprintf('%04o', (stat $secret)[2] & 07777), '0640', 'with its mode');
}
if ($nginx_t_before == 0) {
    is((run("$nginx -t -q"))[0], 0,
       'the machine\'s own nginx configuration still passes nginx -t with the module enabled');
}

# --- the worker package -------------------------------------------------

is(`/usr/bin/fluxgate-worker --version`, "fluxgate-worker $version\n",
   '/usr/bin/fluxgate-worker, of the package\'s version');
is(`/usr/bin/fluxgate-reconcile --version`, "fluxgate-reconcile $version\n",
   '/usr/bin/fluxgate-reconcile, of the package\'s version');
ok(-f '/usr/share/man/man1/fluxgate-reconcile.1.gz', 'and its man page');
{
    my @sql = map { s{.*/}{}r } glob("$root/sql/*.sql");
    is_deeply([map { s{.*/}{}r } glob('/usr/share/fluxgate/sql/*.sql')], \@sql,
              'the migrations in /usr/share/fluxgate/sql');
    is(slurp('/etc/fluxgate/worker.conf'), slurp("$root/conf/worker.conf"),
       '/etc/fluxgate/worker.conf is conf/worker.conf');
    ok(-f '/etc/default/fluxgate-worker', '/etc/default/fluxgate-worker');
    ok(-f '/usr/share/doc/fluxgate-worker/examples/supervisor-worker.conf',
       'the supervisord example');
}
{
    my $unit = slurp('/lib/systemd/system/fluxgate-worker.service');
    for my $line ('EnvironmentFile=-/etc/default/fluxgate-worker',
                  'ExecStart=/usr/bin/fluxgate-worker --config /etc/fluxgate/worker.conf',
                  'Restart=on-failure', 'DynamicUser=yes', 'ProtectSystem=strict',
                  'NoNewPrivileges=yes') {
        like($unit, qr/^\Q$line\E$/m, "the unit: $line");
    }
    my ($vrc, $vout) = run('systemd-analyze verify /lib/systemd/system/fluxgate-worker.service');
    is($vrc, 0, 'systemd-analyze verify accepts it') or diag($vout);
    ok(!-e '/etc/systemd/system/multi-user.target.wants/fluxgate-worker.service',
       'and it is not enabled by the package') if grep { $_ eq $worker_pkg } @ours;
}
{
    # the settler beside the worker: fluxgate-reconcile --repair --watch 5
    my $unit = slurp('/lib/systemd/system/fluxgate-settler.service');
    for my $line ('EnvironmentFile=/etc/fluxgate/worker.conf',
                  'EnvironmentFile=-/etc/default/fluxgate-settler',
                  'ExecStart=/usr/bin/fluxgate-reconcile --repair --watch 5 '
                  . '-X client.id=fluxgate-settler',
                  'Restart=on-failure', 'DynamicUser=yes', 'ProtectSystem=strict',
                  'NoNewPrivileges=yes') {
        like($unit, qr/^\Q$line\E$/m, "the settler's unit: $line");
    }
    like(slurp('/etc/default/fluxgate-settler'), qr/^FLUXGATE_REDIS=\S+$/m,
         '/etc/default/fluxgate-settler names the gates\' Redis');
    my ($vrc, $vout) = run('systemd-analyze verify /lib/systemd/system/fluxgate-settler.service');
    is($vrc, 0, 'systemd-analyze verify accepts it') or diag($vout);
    ok(!-e '/etc/systemd/system/multi-user.target.wants/fluxgate-settler.service',
       'and it is not enabled by the package') if grep { $_ eq $worker_pkg } @ours;
    like(slurp('/usr/share/doc/fluxgate-worker/examples/supervisor-worker.conf'),
         qr/^\[program:fluxgate-settler\]$/m, 'the supervisord example runs it too');
}
{
    my $man = `MANWIDTH=200 man -l /usr/share/man/man1/fluxgate-worker.1.gz 2>/dev/null`;
    my $help = `/usr/bin/fluxgate-worker --help`;
    my @flags = $help =~ /(--[a-z][a-z-]+)/g;
    is_deeply([grep { index($man, $_) < 0 } @flags], [],
              'the man page has every flag of --help');
}

# --- the system's nginx with the packaged module and site -----------------

$tmp = tempdir('/tmp/fluxgate-t800.XXXXXX', CLEANUP => 1);
chmod 0755, $tmp;
mkdir "$tmp/body";
chown scalar(getpwnam('nobody')), -1, "$tmp/body";

my ($shop, $admin) = free_ports(2);
my $topic = uniq('t800');
kafka_create_topic($topic, 1);

# the example site, moved onto this stack and spare ports: each line the
# test changes must be there, as the package ships it
my $site = slurp('/etc/nginx/sites-available/fluxgate');
for my $s (['fluxgate_redis 127.0.0.1:6379;', "fluxgate_redis 127.0.0.1:$ENV{REDIS_PORT};"],
           ['fluxgate_kafka_brokers 127.0.0.1:9092;', "fluxgate_kafka_brokers $ENV{KAFKA_BOOTSTRAP};"],
           ['fluxgate_kafka_topic orders;', "fluxgate_kafka_topic $topic;"],
           ['listen 8080;', "listen 127.0.0.1:$shop;"],
           # one order a second: the second of two in a row queues
           ['fluxgate_threshold 1000 burst=200;', 'fluxgate_threshold 1;'],
           ['listen 127.0.0.1:8081;', "listen 127.0.0.1:$admin;"]) {
    my ($from, $to) = @$s;
    ok($site =~ s/\Q$from\E/$to/, "the example site has \"$from\"");
}
$site =~ s{/var/log/nginx/}{$tmp/}g;
write_file("$tmp/fluxgate-site.conf", $site);

my $load = -e $enabled ? $enabled : '/usr/share/nginx/modules-available/mod-http-fluxgate.conf';
write_file("$tmp/nginx.conf", <<"EOF");
include $load;
worker_processes 1;
pid $tmp/nginx.pid;
error_log $tmp/error.log info;
events { worker_connections 256; }
http {
    include /etc/nginx/mime.types;
    access_log $tmp/access.log;
    client_body_temp_path $tmp/body;
    proxy_temp_path $tmp/body;
    fastcgi_temp_path $tmp/body;
    uwsgi_temp_path $tmp/body;
    scgi_temp_path $tmp/body;
    include $tmp/fluxgate-site.conf;
}
EOF

($rc, $out) = run("$nginx -t -c $tmp/nginx.conf");
is($rc, 0, 'nginx -t: the packaged module and example site, on this stack\'s Redis and Kafka')
    or diag($out);

{
    # the image's nginx.conf, with compose's host names made this stack's
    my $conf = slurp("$root/docker/nginx.conf");
    $conf =~ s/redis:6379/127.0.0.1:$ENV{REDIS_PORT}/ or fail('docker/nginx.conf: redis:6379');
    $conf =~ s/kafka:9092/$ENV{KAFKA_BOOTSTRAP}/ or fail('docker/nginx.conf: kafka:9092');
    $conf =~ s{/tmp/nginx-}{$tmp/docker-}g;
    write_file("$tmp/docker-nginx.conf", $conf);
    ($rc, $out) = run("$nginx -t -c $tmp/docker-nginx.conf");
    is($rc, 0, 'nginx -t: the image\'s nginx.conf with the packaged module') or diag($out);
}

$nginx_pid = fork // die "fork: $!";
if ($nginx_pid == 0) {
    open STDERR, '>>', "$tmp/error.log";
    exec $nginx, '-c', "$tmp/nginx.conf", '-g', 'daemon off;' or die "exec: $!";
}
ok(wait_until(20, sub { (run("$root/docker/healthcheck 127.0.0.1:$admin"))[0] == 0 }),
   'the image\'s healthcheck passes on the admin listener')
    or diag(slurp("$tmp/error.log"));
isnt((run("$root/docker/healthcheck 127.0.0.1:$shop"))[0], 0,
     'and fails on the shop\'s port, which has no /health');

my $p = uniq('p800');
my $res = http_post("http://127.0.0.1:$shop/init", json_encode({ productId => $p, quantity => 3 }));
is($res->{status}, 404, 'the shop\'s port does not serve /init');
$res = http_post("http://127.0.0.1:$admin/init", json_encode({ productId => $p, quantity => 3 }),
                 { 'X-Idempotency-Key' => uniq('k800') });
is($res->{status}, 200, 'POST /init on the admin listener') or diag($res->{content});
$res = http_post("http://127.0.0.1:$shop/order",
                 json_encode({ productId => $p, userId => 'u-800', quantity => 1 }),
                 { 'X-Idempotency-Key' => uniq('k800') });
is($res->{status}, 200, 'POST /order through the packaged module: 200') or diag($res->{content});
my $order = eval { json_decode($res->{content}) } || {};
like($order->{orderId} // '', qr/^[0-9a-f-]{36}$/, 'with an orderId');
like(HTTP::Tiny->new->get("http://127.0.0.1:$shop/waiting-room/")->{content}, qr/<html/i,
     'the packaged waiting room is served');

# over the threshold: a place in line, with a ticket the site's
# /queue/status knows
{
    my $q = uniq('q800');
    $res = http_post("http://127.0.0.1:$admin/init", json_encode({ productId => $q, quantity => 50 }),
                     { 'X-Idempotency-Key' => uniq('k800') });
    is($res->{status}, 200, "$q on sale") or diag($res->{content});
    my ($queued, $last, $n) = (undef, undef, 0);
    wait_until(30, sub {
        $last = queue_order($shop, $q, uniq('k800q'));
        $n++;
        $queued = $last if $last->{status} == 302;
        $queued;
    });
    ok($queued, "an order over the threshold is sent to the waiting room (order $n)")
        or diag("last answer: $last->{status} $last->{content}");
    $queued ||= { content => '{}', headers => {} };
    my $body = eval { json_decode($queued->{content}) } || {};
    is($body->{status}, 'queued', 'with a place in line') or diag($queued->{content});
    like($queued->{headers}{location} // '', qr{/waiting-room/\?productId=\Q$q\E#ticket=[^&#]+$},
         'and a ticket in Location');
    my ($st, $pos) = queue_status($shop, $q, $body->{ticket} // 'none');
    is($st, 200, 'GET /queue/status with that ticket: 200');
    ok(defined $pos->{position} && defined $pos->{admitted},
       'its place in line: the waiting room works with the packaged key')
        or diag(explain($pos));
}

# --- the packaged worker ------------------------------------------------

$db = 'fg_t800_' . $$;
psql("create database $db");
($rc, $out) = run("cd $tmp && /usr/bin/fluxgate-worker --migrate --pg '" . stack_pg($db) . "'");
my $nsql = () = glob("$root/sql/*.sql");
is($rc, 0, 'fluxgate-worker --migrate on a fresh database, from a directory without sql/')
    or diag($out);
like($out, qr/\b$nsql applied now/, "it applies the $nsql packaged migrations");
($rc, $out) = run("/usr/bin/fluxgate-worker --config /etc/fluxgate/worker.conf --migrate --pg '"
                  . stack_pg($db) . "'");
is($rc, 0, 'again with the packaged /etc/fluxgate/worker.conf: nothing to do') or diag($out);

my $group = uniq('g800');
{
    local $ENV{FG_WORKER} = '/usr/bin/fluxgate-worker';
    $worker = start_private_worker(topic => $topic, group => $group,
                                   args => ['--config', '/etc/fluxgate/worker.conf',
                                            '--pg', stack_pg($db)]);
}
{
    local $ENV{PGDATABASE} = $db;
    ok(wait_until(30, sub { psql("select status from orders where id = '$order->{orderId}'")
                            eq 'accepted' }),
       'the packaged worker records the order in PostgreSQL')
        or diag(slurp($worker->{log}));
}

# one round of the packaged settler as its unit runs it: the environment
# of worker.conf and /etc/default/fluxgate-settler (systemd's
# EnvironmentFile= reads NAME=VALUE lines), the addresses made this
# stack's, the unit's flags without --watch; the worker above commits past
# its markers, and the product's books balance
{
    my %env;
    for my $file ('/etc/fluxgate/worker.conf', '/etc/default/fluxgate-settler') {
        $env{$1} = $2 for slurp($file) =~ /^([A-Z_][A-Z0-9_]*)=(.*)$/mg;
    }
    ok($env{FLUXGATE_REDIS}, 'the settler\'s environment names Redis');
    %env = (%env, FLUXGATE_REDIS => "127.0.0.1:$ENV{REDIS_PORT}",
            FLUXGATE_BROKERS => $ENV{KAFKA_BOOTSTRAP}, FLUXGATE_TOPIC => $topic,
            FLUXGATE_GROUP => $group, FLUXGATE_PG => stack_pg($db));
    my $envs = join ' ', map { "$_='$env{$_}'" } sort keys %env;
    ($rc, $out) = run("env -i PATH=/usr/bin:/bin $envs /usr/bin/fluxgate-reconcile --repair "
                      . "-X client.id=fluxgate-settler --product $p");
    is($rc, 0, 'the packaged settler, one round: exit 0') or diag($out);
    like($out, qr/^\Q$p\E\s+1\s+3\s+2\s+0\s+0\s+0\s+1\s+\+0\s+balanced\b/m,
         "and $p balances: set 3, stock 2, 1 recorded") or diag($out);
    unlike($out, qr/CONFWARN/, 'with no librdkafka warning about the worker\'s options')
        or diag($out);
}
is(stop_private_worker($worker), 0, 'and stops with exit 0 on SIGTERM');
undef $worker;

kill 'QUIT', $nginx_pid;
waitpid $nginx_pid, 0;
undef $nginx_pid;
psql("drop database $db");
undef $db;

# --- purge ------------------------------------------------------------------

if (@ours) {
    ($rc, $out) = dpkg('--purge', @ours);
    is($rc, 0, "dpkg --purge @ours") or diag($out);
    is(pkg_status($_), 'not-installed', "$_ is gone") for @ours;
    my $after = snapshot();
    my @changed = grep { ($before->{$_} // 'absent') ne ($after->{$_} // 'absent') }
                  sort keys %{{ %$before, %$after }};
    is_deeply(\@changed, [], 'the machine is as the test found it: files, links, '
              . 'unit state, accounts')
        or diag(join "\n", map { "$_: " . ($before->{$_} // 'absent') . ' -> '
                                 . ($after->{$_} // 'absent') } @changed);
    @ours = ();
}
if (@theirs) {
    is(pkg_status($_), "installed $version", "$_, installed before, still installed")
        for @theirs;
}

note(sprintf 'packages test: %.0f s', time - $t0);
done_testing();

# the rest cannot run: say why and end (END still cleans up)
sub stop {
    diag(@_);
    done_testing();
    exit 1;
}

sub write_file {
    my ($file, $text) = @_;
    open my $fh, '>', $file or die "$file: $!";
    print $fh $text;
    close $fh;
}
