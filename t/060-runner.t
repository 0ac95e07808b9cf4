# The suite's own checks can fail.  Small test files, written here and run
# as the suite runs them, do what a broken module or a broken machine would
# do, and each must FAIL, saying why:
#   - an nginx that hangs on stop (a worker that never exits): the block
#     runner and gate_stop kill it with SIGKILL, say so, and fail;
#   - an [alert] in the error log of a block that did not expect one;
#   - an error_log line a block expects and nginx never writes: a failure
#     after the block's deadline, not a pass and not a hang;
#   - a dependency missing under FG_REQUIRE_ALL=1 (make test): a failure,
#     where FG_REQUIRE_ALL=0 lets the file skip.
# And the same files without the fault pass, so what fails is the fault.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use File::Path qw(make_path);
use Time::HiRes qw(time);
use FluxGate::Test;

my $dir = "$ENV{FG_RUN_DIR}/t060-$$";
make_path($dir);
chmod 0755, $dir;

# run($name, $code, %env) -> (exit status, output): a test file of that
# code, run as prove runs one (perl -It/lib), with the suite's environment
sub run {
    my ($name, $code, %env) = @_;
    my $file = "$dir/$name.t";
    open my $fh, '>', $file or die "$file: $!";
    print $fh "use strict;\nuse warnings;\nuse lib 't/lib';\n$code";
    close $fh;
    # their nginx runs in $dir: the workers they kill on purpose are not
    # the suite's (t/990 reads every error log under FG_RUN_DIR/t)
    local $ENV{TEST_NGINX_SERVROOT_BASE} = $dir;
    local @ENV{keys %env} = values %env;
    my $t0 = time;
    my $out = `$^X -It/lib $file 2>&1`;
    return ($? >> 8, $out, time - $t0);
}

my $blocks = <<'EOF';
use Test::Nginx::Socket::Lite;
use FluxGate::Test;
workers(1);
plan 'no_plan';
run_tests();

__DATA__

=== TEST 1: a block
--- config
    location = /t { return 200 "ok\n"; }
--- request
GET /t
--- error_code: 200
--- check
%s
EOF

# 1. an nginx whose worker never exits (stopped: it cannot take QUIT)
{
    my $hang = 'kill "STOP", FluxGate::Test::nginx_workers(nginx_pid());';
    my ($rc, $out, $took) = run('hang', sprintf($blocks, $hang),
                                FG_NGINX_STOP_TIMEOUT => 3);
    isnt($rc, 0, 'an nginx that hangs on stop fails the file');
    like($out, qr/not ok \d+ - nginx did not stop within 3 s of QUIT: killed with SIGKILL/,
         '... saying it was killed with SIGKILL') or diag($out);
    cmp_ok($took, '<', 60, sprintf('... after its stop timeout, not forever (%.0f s)', $took));
    ($rc, $out) = run('no-hang', sprintf($blocks, '1;'));
    is($rc, 0, 'the same file without the hang passes') or diag($out);
}

# 2. gate_stop: the same for a gate of FluxGate::Fleet
{
    my ($rc, $out) = run('gate-hang', <<'EOF', FG_NGINX_STOP_TIMEOUT => 3);
use Test::More;
use FluxGate::Test;
use FluxGate::Fleet;
my $g = gate_start(workers => 1);
kill 'STOP', gate_workers($g);
gate_stop($g);
done_testing();
EOF
    isnt($rc, 0, 'a gate that hangs on stop fails the file');
    like($out, qr/not ok \d+ - gate on port \d+ did not stop within 3 s of QUIT: killed with SIGKILL/,
         '... saying it was killed with SIGKILL') or diag($out);
}

# 3. an [alert] nobody expected: a worker killed, which its master logs
{
    my $kill = 'my ($w) = FluxGate::Test::nginx_workers(nginx_pid()); kill "KILL", $w;'
             . ' wait_until(10, sub { Test::Nginx::Socket::Lite::error_log_since(0)'
             . ' =~ /exited on signal 9/ });';
    my ($rc, $out) = run('alert', sprintf($blocks, $kill));
    isnt($rc, 0, 'an [alert] in a block fails it');
    like($out, qr/not ok \d+ - TEST 1: a block - no \[alert\], \[crit\], \[emerg\] in the error log/,
         '... by the default check') or diag($out);
    like($out, qr/\[alert\].*exited on signal 9/, '... showing the line');
    # a block that names [alert] among its own patterns takes it upon itself
    (my $own = sprintf($blocks, $kill)) =~ s/--- check/--- no_error_log\n[alert] nothing like this\n--- check/;
    ($rc, $out) = run('alert-own', $own);
    is($rc, 0, 'a block whose own patterns name [alert] is not checked for it by default')
        or diag($out);
}

# 4. an expected line that never comes: a failure, after the deadline
{
    (my $code = sprintf($blocks, '1;'))
        =~ s/--- check/--- log_timeout: 2\n--- error_log\nno module ever logs this line\n--- check/;
    my ($rc, $out, $took) = run('never', $code);
    isnt($rc, 0, 'an expected error_log line that never comes fails the block');
    like($out, qr/not ok \d+ - TEST 1: a block - error_log has "no module ever logs this line"/,
         '... naming it') or diag($out);
    cmp_ok($took, '>=', 2, sprintf('... once its deadline passed (%.1f s)', $took));
}

# 5. a missing dependency: a failure under make test, a skip otherwise
{
    my $code = "use Test::More;\nuse FluxGate::Test;\n"
             . "skip_all_missing('no such thing on this machine');\n";
    my ($rc, $out) = run('missing', $code, FG_REQUIRE_ALL => 1);
    isnt($rc, 0, 'a missing dependency under FG_REQUIRE_ALL=1 fails');
    like($out, qr/not ok 1 - cannot run: no such thing on this machine/, '... saying what is missing')
        or diag($out);
    ($rc, $out) = run('missing', $code, FG_REQUIRE_ALL => 0);
    is($rc, 0, 'and with FG_REQUIRE_ALL=0 skips') or diag($out);
    like($out, qr/^1\.\.0 # SKIP no such thing on this machine/m, '... saying why');
}

done_testing();
