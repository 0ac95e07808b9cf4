# A checkout in a private directory (mode 0700, as /root is), tried as a
# new user would: nginx's workers run as nobody and cannot read anything
# in it, so the stack serves its pages from its run directory (scripts/stack
# copies them to DIR/www) and refuses, saying why, a run directory that
# nobody and postgres cannot reach.  Runs the stack's own nginx.conf,
# rendered by `stack check` from the private clone, in an nginx of its own
# on the stack's Redis and Kafka, and gets the waiting room and the shop.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use File::Path qw(make_path remove_tree);
use IO::Socket::INET;
use FluxGate::Test;

skip_all_missing('needs root (runuser, nginx dropping to nobody)') if $> != 0;

my $base = "$ENV{FG_RUN_DIR}/private-$$";
my $home = "$base/home";             # the private directory, as /root
my $clone = "$home/flux-gate";
make_path($clone);
chmod 0700, $home or die "chmod $home: $!";
# the working tree as it is (a commit-only clone would miss what is being
# tested); the build stays where make test made it (FG_MODULE in %ENV)
system('cp', '-R', "$ENV{FG_ROOT}/conf", "$ENV{FG_ROOT}/scripts", "$clone/") == 0
    or die "copy failed";

ok(system('runuser', '-u', 'nobody', '--', 'test', '-r',
          "$clone/conf/waiting-room/index.html") != 0,
   'nobody cannot read the waiting room in the private clone (what nginx met)');

# stack: run scripts/stack of the clone -> (exit status, output)
sub stack {
    my ($cmd, $dir, %env) = @_;
    local @ENV{keys %env} = values %env;
    my $out = `bash $clone/scripts/stack $cmd $dir 2>&1`;
    return ($? >> 8, $out);
}

# a run directory inside the private checkout: refused before anything
my ($rc, $out) = stack('up', "$clone/.run");
isnt($rc, 0, 'stack up refuses a run directory inside the private clone');
like($out, qr/cannot be reached by user nobody.*private.*0700/s, 'and says why');
ok(!-e "$clone/.run/stack.env", 'having started nothing');

# a run directory outside it: the pages are copied there
my $run = "$base/run";
my ($http, $admin) = free_ports(2);
my ($kafka) = $ENV{KAFKA_BOOTSTRAP} =~ /:(\d+)$/;
($rc, $out) = stack('check', $run, FG_FREE_PORTS => 0, FG_HTTP_PORT => $http,
                    FG_ADMIN_PORT => $admin, FG_REDIS_PORT => $ENV{REDIS_PORT},
                    FG_KAFKA_PORT => $kafka);
is($rc, 0, 'stack check from the private clone') or diag $out;
ok(-r "$run/www/waiting-room/index.html" && -r "$run/www/shop/index.html",
   'the pages are in the run directory');

my $pre = $ENV{FG_LD_PRELOAD} ? "LD_PRELOAD=$ENV{FG_LD_PRELOAD} " : '';
$out = `$pre$ENV{FG_NGINX} -p $run/nginx -c $run/nginx/nginx.conf 2>&1`;
is($?, 0, 'nginx starts on the rendered nginx.conf') or diag $out;
my $master = wait_until(10, sub { my $p = `cat $run/nginx/nginx.pid 2>/dev/null`;
                                  chomp $p; $p });
my @workers;
wait_until(10, sub { @workers = nginx_workers($master); @workers });
my @users = map { my $u = `ps -o user= -p $_`; chomp $u; $u } @workers;
is("@users", join(' ', ('nobody') x @workers), 'its workers run as nobody');

my $url = "http://127.0.0.1:$http";
for my $page ('/waiting-room/', '/waiting-room/waiting-room.js',
              '/waiting-room/order.js', '/waiting-room/waiting-room.css',
              '/', '/shop.js', '/confirmation.html', '/products.json') {
    my $res = http_get("$url$page");
    is($res->{status}, 200, "GET $page: 200");
}
like(http_get("$url/waiting-room/")->{content}, qr/You are in the queue/,
     'the waiting room is the page');
like(http_get("$url/")->{content}, qr/Buy now/, 'and / the demo shop');
my $products = eval { json_decode(http_get("$url/products.json")->{content}) };
ok($products && $products->{products}[0]{productId}, 'products.json is JSON with a product');
is(http_get("http://127.0.0.1:$admin/health")->{status}, 200,
   'the gate of the clone reaches Redis and Kafka');

kill 'QUIT', $master;
ok(wait_until(30, sub { !grep { kill 0, $_ } $master, @workers }), 'nginx stopped');
kill 'KILL', grep { kill 0, $_ } $master, @workers;
remove_tree($base);

done_testing();
