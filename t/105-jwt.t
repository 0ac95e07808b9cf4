# The buyer's JWT check (ngx_fluxgate_module/ngx_fluxgate_jwt.c) on its
# own, before the directive that uses it: tokens made with Python's hmac
# (valid, expired inside and outside the leeway, nbf and iat ahead, alg
# none and HS512, bad signatures, bad sub, bad base64url, not JSON,
# duplicate keys, too long) and what each is refused for.  The C test
# (ngx_fluxgate_module/test_jwt.c, built by `make test`) prints TAP; this
# runs it, in the sanitized build with LeakSanitizer on, so that a path
# that leaks fails here (the suite's nginx runs turn leak checks off).
use strict;
use warnings;
use Cwd qw(abs_path);
use File::Basename qw(dirname);

my $root = $ENV{FG_ROOT} // abs_path(dirname(__FILE__) . '/..');
my $dir = $ENV{FG_MODULE} ? dirname($ENV{FG_MODULE}) : "$root/build";
my $bin = "$dir/module-tests/test_jwt";

unless (-x $bin) {
    print "1..1\nnot ok 1 - $bin is built (make module-tests)\n";
    exit 1;
}

if ($ENV{FG_SANITIZE}) {
    $ENV{ASAN_OPTIONS} = 'detect_leaks=1:abort_on_error=1';
    $ENV{UBSAN_OPTIONS} = 'print_stacktrace=1:halt_on_error=1';
}

exec $bin or die "exec $bin: $!";
