package Test::Nginx::Socket::Lite;

# A small runner for nginx test suites written in Test::Nginx's block format,
# built on Test::Base (Debian's libtest-base-perl).  It implements exactly
# the sections Flux-Gate's suites use; see the POD at the end.

use Test::Base -Base;

use Cwd qw(abs_path);
use File::Path qw(make_path remove_tree);
use File::Basename qw(basename);
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);

our @EXPORT = qw(run_tests no_shuffle repeat_each workers server_port
                 servroot nginx_pid http_request error_log_since explain
                 reload_nginx);

my $Nginx    = $ENV{TEST_NGINX_BINARY} || $ENV{FG_NGINX} || '/usr/sbin/nginx';
my $Module   = $ENV{FG_MODULE} || abs_path('build/ngx_fluxgate_module.so');
my $Name     = basename($0, '.t');
my $Servroot = ($ENV{TEST_NGINX_SERVROOT_BASE}
                || ($ENV{FG_RUN_DIR} ? "$ENV{FG_RUN_DIR}/t" : abs_path('t')))
               . "/servroot-$Name";
my $Port;
my $RunningConf = '';
my $Workers;
my @WorkerModes;
# how long a graceful stop (QUIT) may take before the runner kills nginx,
# and how long a block waits for the error_log lines it expects
my $StopTimeout = $ENV{FG_NGINX_STOP_TIMEOUT} || 15;
my $LogTimeout  = $ENV{FG_LOG_TIMEOUT} || 10;
# the levels no block may log unless it says it expects them (an
# error_log or no_error_log pattern of its own that names the level)
my @AlertLevels = qw(alert crit emerg);
# the alert levels the running nginx's last block allowed, and where in
# the error log its checks ended: what nginx logs after that, up to and
# while it stops, is checked when it stops
my %Allowed;
my $CheckedTo = 0;

# Test::More's, which Test::Base does not pass on
sub explain { Test::More::explain(@_) }

sub no_shuffle () { }
sub repeat_each (@) { }

# worker_processes values every block runs under; from the test file or
# TEST_NGINX_WORKERS ("1 2" runs each block twice)
sub workers (@) { @WorkerModes = @_ }

sub server_port () { $Port }
sub servroot () { $Servroot }

sub free_port () {
    my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1',
                                  LocalPort => 0, Proto => 'tcp', ReuseAddr => 1)
        or die "no free port: $!";
    my $p = $s->sockport;
    close $s;
    return $p;
}

sub expand_env ($) {
    my $text = shift;
    return '' unless defined $text;
    $text =~ s/\$(TEST_NGINX_[A-Z0-9_]+)/
        $1 eq 'TEST_NGINX_SERVER_PORT' ? $Port
      : $1 eq 'TEST_NGINX_SERVROOT'    ? $Servroot
      : $1 eq 'TEST_NGINX_WORKERS'     ? $Workers
      : defined $ENV{$1} ? $ENV{$1}
      : die "config uses \$$1 but it is not set in the environment\n"/ge;
    return $text;
}

sub render_conf ($) {
    my $block = shift;
    my $main  = expand_env($block->main_config);
    my $http  = expand_env($block->http_config);
    my $srv   = expand_env($block->config);
    my $user  = $> == 0 ? "user nobody nogroup;" : "";

    return <<"EOF";
load_module $Module;
worker_processes $Workers;
$user
daemon on;
master_process on;
pid $Servroot/logs/nginx.pid;
error_log $Servroot/logs/error.log info;

$main

worker_rlimit_nofile 20000;

events {
    worker_connections 8192;
}

http {
    access_log $Servroot/logs/access.log;
    default_type text/plain;
    client_body_temp_path $Servroot/tmp/body;
    proxy_temp_path $Servroot/tmp/proxy;
    fastcgi_temp_path $Servroot/tmp/fastcgi;
    uwsgi_temp_path $Servroot/tmp/uwsgi;
    scgi_temp_path $Servroot/tmp/scgi;

$http

    server {
        listen 127.0.0.1:$Port;
        server_name localhost;

$srv
    }
}
EOF
}

sub nginx_pid () {
    open my $fh, '<', "$Servroot/logs/nginx.pid" or return undef;
    my $pid = <$fh>;
    chomp $pid if defined $pid;
    return $pid && kill(0, $pid) ? $pid : undef;
}

# A graceful stop (QUIT).  An nginx still there after $StopTimeout s (a
# worker that hangs on exit: a leaked timer, a connection never closed) is
# a failure, said as such, and killed with SIGKILL, master and workers;
# what it logged since the last block's checks is checked for alerts.
sub stop_nginx () {
    my $pid = nginx_pid() or return 1;
    my @workers = grep { /\d/ } split /\s+/, `pgrep -P $pid 2>/dev/null`;
    kill 'QUIT', $pid;
    my $deadline = time + $StopTimeout;
    while (grep({ kill 0, $_ } $pid, @workers) && time < $deadline) {
        sleep 0.05;
    }
    my @left = grep { kill 0, $_ } $pid, @workers;
    my $ok = !@left;
    if (@left) {
        my $ps = `ps -o pid,stat,wchan:20,cmd -p @{[join ',', @left]} 2>&1`;
        kill 'KILL', @left;
        Test::More::fail("nginx did not stop within $StopTimeout s of QUIT:"
                         . " killed with SIGKILL (pids @left)");
        Test::More::diag($ps);
    }
    $RunningConf = '';
    $ok &= check_alerts("nginx stopped", error_log_since($CheckedTo),
                        \%Allowed) if -e "$Servroot/logs/error.log";
    $CheckedTo = error_log_size();
    %Allowed = ();
    return $ok;
}

sub write_conf ($) {
    my $conf = shift;
    make_path("$Servroot/conf", "$Servroot/logs", "$Servroot/tmp");
    chmod 0777, "$Servroot/tmp";
    open my $fh, '>', "$Servroot/conf/nginx.conf" or die $!;
    print $fh $conf;
    close $fh;
}

sub run_nginx (@) {
    my @args = @_;
    # a module built with AddressSanitizer needs its runtime loaded first
    my $pre = $ENV{FG_LD_PRELOAD} ? "LD_PRELOAD=$ENV{FG_LD_PRELOAD} " : '';
    my $out = `$pre$Nginx -p $Servroot/ -c $Servroot/conf/nginx.conf @args 2>&1`;
    return ($? >> 8, $out);
}

sub start_nginx ($) {
    my $conf = shift;
    return 1 if $conf eq $RunningConf && nginx_pid();
    stop_nginx();
    write_conf($conf);
    my ($rc, $out) = run_nginx();
    if ($rc != 0) {
        diag("nginx failed to start: $out");
        return 0;
    }
    my $deadline = time + 10;
    until (port_open($Port)) {
        if (time > $deadline) { diag("nginx did not listen on $Port"); return 0 }
        sleep 0.02;
    }
    $RunningConf = $conf;
    return 1;
}

# `nginx -s reload` of the running configuration; returns when every worker
# of the old generation is gone and as many new ones serve
sub reload_nginx () {
    my $master = nginx_pid() or return 0;
    my %old = map { $_ => 1 } grep { /\d/ } split /\s+/, `pgrep -P $master`;
    my ($rc, $out) = run_nginx('-s', 'reload');
    if ($rc != 0) { diag("nginx -s reload failed: $out"); return 0 }
    my $deadline = time + 15;
    while (time < $deadline) {
        my @now = grep { /\d/ } split /\s+/, `pgrep -P $master`;
        my @new = grep { !$old{$_} } @now;
        return 1 if @new >= $Workers && @new == @now;
        sleep 0.05;
    }
    diag("nginx -s reload: old workers still there");
    return 0;
}

sub port_open ($) {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => shift,
                                  Proto => 'tcp', Timeout => 1);
    return $s ? 1 : 0;
}

sub error_log_size () { -s "$Servroot/logs/error.log" || 0 }

# the sanitizer reports of the stack's run directory (make test: ASan and
# UBSan write every report there), with their sizes
sub sanitizer_reports () {
    return {} unless $ENV{FG_RUN_DIR};
    return { map { $_ => -s $_ } glob("$ENV{FG_RUN_DIR}/logs/sanitizer.*") };
}

sub error_log_since ($) {
    my $from = shift;
    open my $fh, '<', "$Servroot/logs/error.log" or return '';
    seek $fh, $from, 0;
    local $/;
    my $text = <$fh>;
    return defined $text ? $text : '';
}

# --- HTTP ------------------------------------------------------------------

sub build_request ($$) {
    my ($req, $headers) = @_;
    my ($line, $body) = split /\n/, $req, 2;
    $body = '' unless defined $body;
    my ($method, $uri, $proto) = split ' ', $line;
    $proto ||= 'HTTP/1.1';
    my $raw = "$method $uri $proto\r\nHost: localhost\r\nConnection: close\r\n";
    my $has_len = 0;
    for my $h (split /\n/, $headers || '') {
        next unless $h =~ /\S/;
        $has_len = 1 if $h =~ /^(content-length|transfer-encoding)\s*:/i;
        $raw .= "$h\r\n";
    }
    $raw .= "Content-Length: " . length($body) . "\r\n"
        if !$has_len && ($body ne '' || $method =~ /^(POST|PUT|PATCH)$/);
    return "$raw\r\n$body";
}

# Sends raw bytes, returns {status, headers => {lc name => value}, body, raw}.
sub http_request ($;$) {
    my ($raw, $timeout) = @_;
    $timeout ||= 10;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $Port,
                                  Proto => 'tcp', Timeout => $timeout)
        or return { status => 0, error => "connect: $!", headers => {}, body => '' };
    my @parts = ref $raw eq 'ARRAY' ? @$raw : ($raw);
    for my $i (0 .. $#parts) {
        print $s $parts[$i];
        sleep 0.2 if $i < $#parts;    # a slow client: body in pieces
    }
    my $resp = '';
    my $deadline = time + $timeout;
    $s->blocking(0);
    while (time < $deadline) {
        my $n = sysread($s, my $buf, 65536);
        if (defined $n && $n == 0) { last }
        if (defined $n) { $resp .= $buf; next }
        sleep 0.005;
    }
    close $s;
    return parse_response($resp);
}

sub parse_response ($) {
    my $resp = shift;
    my ($head, $body) = split /\r\n\r\n/, $resp, 2;
    $body = '' unless defined $body;
    my @lines = split /\r\n/, $head || '';
    my $status_line = shift @lines || '';
    my ($status) = $status_line =~ m{^HTTP/\S+\s+(\d+)};
    my %h;
    for (@lines) {
        my ($k, $v) = /^([^:]+):\s*(.*)$/ or next;
        $h{lc $k} = exists $h{lc $k} ? "$h{lc $k}, $v" : $v;
    }
    if (($h{'transfer-encoding'} || '') =~ /chunked/i) {
        my $decoded = '';
        while ($body =~ s/^([0-9a-fA-F]+)\r\n//) {
            my $len = hex $1;
            last if $len == 0;
            $decoded .= substr($body, 0, $len, '');
            $body =~ s/^\r\n//;
        }
        $body = $decoded;
    }
    return { status => $status || 0, headers => \%h, body => $body,
             raw => $resp };
}

# --- the block runner -------------------------------------------------------

sub as_list ($) {
    my $v = shift;
    return ref $v eq 'ARRAY' ? @$v : ($v);
}

sub nth ($$) {
    my ($v, $i) = @_;
    return ref $v eq 'ARRAY' ? $v->[$i] : $v;
}

sub check_response ($$$$) {
    my ($block, $name, $i, $res) = @_;

    if (defined(my $code = nth($block->error_code, $i))) {
        is($res->{status}, $code, "$name - status code ok")
            or diag("response: $res->{raw}");
    }
    if (defined(my $body = nth($block->response_body, $i))) {
        is($res->{body}, $body, "$name - response_body ok");
    }
    if (defined(my $like = nth($block->response_body_like, $i))) {
        my $re = ref $like eq 'Regexp' ? $like : qr/$like/s;
        like($res->{body}, $re, "$name - response_body_like ok");
    }
    if (defined(my $unlike = nth($block->response_body_unlike, $i))) {
        my $re = ref $unlike eq 'Regexp' ? $unlike : qr/$unlike/s;
        unlike($res->{body}, $re, "$name - response_body_unlike ok");
    }
    if (defined(my $hdrs = nth($block->response_headers, $i))) {
        for my $line (split /\n/, $hdrs) {
            next unless $line =~ /\S/;
            if ($line =~ /^!\s*(\S+)/) {
                ok(!exists $res->{headers}{lc $1}, "$name - header $1 absent");
                next;
            }
            my ($k, $v) = $line =~ /^([^:]+):\s*(.*)$/;
            is($res->{headers}{lc $k}, $v, "$name - header $k ok");
        }
    }
    if (defined(my $hdrs = nth($block->response_headers_like, $i))) {
        for my $line (split /\n/, $hdrs) {
            next unless $line =~ /\S/;
            my ($k, $v) = $line =~ /^([^:]+):\s*(.*)$/;
            like($res->{headers}{lc $k} // '', qr/$v/,
                 "$name - header $k like ok");
        }
    }
}

# the block's patterns of one section (error_log, no_error_log): strings
# (one per line) and regexes
sub patterns ($$) {
    my ($block, $section) = @_;
    return map { ref $_ ? ($_) : grep { /\S/ } split /\n/ }
           grep { defined && length } map { as_list($_) } $block->$section;
}

sub log_has ($$) {
    my ($log, $p) = @_;
    return ref $p eq 'Regexp' ? $log =~ $p : index($log, $p) >= 0;
}

# the error log since $from once every line the block expects is there,
# or once $LogTimeout s (--- log_timeout) passed: nginx logs what it does
# when it does it, after the answer, and a slow machine only makes that
# later.  A block with no line to expect is read at once (or after its
# --- wait, for the few blocks that have nothing to wait on).
sub wait_log ($$) {
    my ($block, $from) = @_;
    my @want = patterns($block, 'error_log');
    sleep $block->wait if !@want && defined $block->wait;
    my $deadline = time + ($block->log_timeout // $LogTimeout);
    my $log = error_log_since($from);
    while (grep({ !log_has($log, $_) } @want) && time < $deadline) {
        sleep 0.05;
        $log = error_log_since($from);
    }
    return $log;
}

# the alert levels a block expects (or rules out itself): its own
# error_log and no_error_log patterns that name them
sub allowed_levels ($) {
    my $block = shift;
    my %allowed;
    for my $p (patterns($block, 'error_log'), patterns($block, 'no_error_log')) {
        my $text = ref $p ? "$p" : $p;
        $allowed{$_} = 1 for grep { $text =~ /\b\Q$_\E\b/ } @AlertLevels;
    }
    return \%allowed;
}

# no [alert], [crit] or [emerg] in the log (but the levels allowed), and
# no new sanitizer report
sub check_alerts ($$$;$) {
    my ($name, $log, $allowed, $reports) = @_;
    my @levels = grep { !$allowed->{$_} } @AlertLevels;
    my $ok = 1;
    if (@levels) {
        my $re = join '|', @levels;
        my @lines = $log =~ /^(.*\[(?:$re)\].*)$/mg;
        $ok &= Test::More::ok(!@lines, "$name - no [" . join('], [', @levels)
                              . "] in the error log")
            or Test::More::diag(join "\n", @lines[0 .. ($#lines < 9 ? $#lines : 9)]);
    }
    if ($reports) {
        my $now = sanitizer_reports();
        my @new = grep { !defined $reports->{$_} || $now->{$_} != $reports->{$_} }
                  sort keys %$now;
        $ok &= Test::More::ok(!@new && $log !~ /AddressSanitizer|runtime error:/,
                              "$name - no sanitizer report")
            or Test::More::diag(join '', map { local (@ARGV, $/) = $_; <> // '' } @new);
    }
    return $ok;
}

sub check_log ($$$) {
    my ($block, $name, $log) = @_;
    for my $pat (grep { defined && length } map { as_list($_) }
                 $block->error_log) {
        for my $p (ref $pat ? ($pat) : grep { /\S/ } split /\n/, $pat) {
            if (ref $p eq 'Regexp') {
                like($log, $p, "$name - error_log matches $p");
            } else {
                ok(index($log, $p) >= 0, "$name - error_log has \"$p\"")
                    or diag("log was:\n$log");
            }
        }
    }
    for my $pat (grep { defined && length } map { as_list($_) }
                 $block->no_error_log) {
        for my $p (ref $pat ? ($pat) : grep { /\S/ } split /\n/, $pat) {
            if (ref $p eq 'Regexp') {
                unlike($log, $p, "$name - no_error_log $p");
            } else {
                ok(index($log, $p) < 0, "$name - no_error_log \"$p\"")
                    or diag("log has it:\n$log");
            }
        }
    }
}

sub run_block ($) {
    my $block = shift;
    my $name  = $block->name;
    $name .= " (workers=$Workers)" if @WorkerModes > 1;

    local $main::block = $block;
    if (defined(my $init = $block->init)) {
        # in the test file's package, where its own imports live
        eval "package main;\n#line 1 \"--- init\"\n$init";
        die "$name: --- init failed: $@" if $@;
    }

    my $conf = render_conf($block);

    if (defined $block->must_die) {
        stop_nginx();
        write_conf($conf);
        my ($rc, $out) = run_nginx('-t');
        isnt($rc, 0, "$name - nginx -t fails");
        check_log($block, $name, $out);
        return;
    }

    # marked before nginx starts (once the previous one is gone): what a
    # block expects may be logged while it starts (a connection made at
    # once), before its port is open
    stop_nginx() unless $conf eq $RunningConf && nginx_pid();
    my $log_from = error_log_size();
    my $reports = sanitizer_reports();
    ok(start_nginx($conf), "$name - nginx started") or return;
    %Allowed = %{ allowed_levels($block) };
    my @responses;
    my @reqs = defined $block->raw_request ? as_list($block->raw_request)
             : as_list($block->request);
    for my $i (0 .. $#reqs) {
        my $raw = defined $block->raw_request ? $reqs[$i]
                : build_request(expand_env($reqs[$i]),
                                expand_env(nth($block->more_headers, $i)));
        my $res = http_request($raw, $block->timeout);
        push @responses, $res;
        check_response($block, @reqs > 1 ? "$name #" . ($i + 1) : $name,
                       $i, $res);
    }

    check_log($block, $name, wait_log($block, $log_from));

    if (defined(my $check = $block->check)) {
        local $main::responses = \@responses;
        local $main::name = $name;
        eval "package main;\n#line 1 \"--- check\"\n$check";
        fail("$name - --- check died: $@") if $@;
    }

    # whatever the block did, its requests and its --- check
    check_alerts($name, error_log_since($log_from), \%Allowed, $reports);
    $CheckedTo = error_log_size();
}

sub run_tests () {
    my @modes = @WorkerModes ? @WorkerModes
              : split ' ', ($ENV{TEST_NGINX_WORKERS} || '1');
    @WorkerModes = @modes;
    # not a port the file already took for a listener of its own
    # (TEST_NGINX_ADMIN_PORT...): a closed socket's port can come again
    my %taken = map { $ENV{$_} => 1 } grep { /^TEST_NGINX_\w*PORT$/ } keys %ENV;
    do { $Port = free_port() } while $taken{$Port};
    remove_tree($Servroot);
    make_path($Servroot);
    chmod 0755, $Servroot;
    for my $w (@modes) {
        $Workers = $w;
        $RunningConf = '';
        for my $block (blocks()) {
            next if $block->skip;
            run_block($block);
        }
    }
    stop_nginx();
}

END {
    stop_nginx() if defined $Port;
}

1;

__END__

=head1 NAME

Test::Nginx::Socket::Lite - Test::Nginx block format, the sections we use

=head1 SYNOPSIS

    use lib 't/lib';
    use Test::Nginx::Socket::Lite;
    plan 'no_plan';
    run_tests();

    __DATA__

    === TEST 1: an order is accepted
    --- http_config
        fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    --- config
        location = /order { fluxgate_order; }
    --- request
    POST /order
    {"productId":"p1","userId":"u1"}
    --- more_headers
    Content-Type: application/json
    X-Idempotency-Key: k1
    --- error_code: 200
    --- response_body_like: "status":"success"

=head1 DESCRIPTION

Each file's blocks run against one nginx started with C<load_module> of the
built module (C<FG_MODULE>), listening on a free port, in
C<servroot-NAME> under the stack's run directory.  nginx is restarted
only when a block's rendered configuration differs from the running one.

Sections, as in Test::Nginx: C<main_config>, C<http_config>, C<config>
(inside C<server {}>), C<request> (C<METHOD URI> then the body; an array with
C<eval> sends several requests in turn), C<raw_request> (bytes as they are;
an array of strings is sent in pieces 0.2 s apart), C<more_headers>,
C<error_code>, C<response_body>, C<response_body_like>,
C<response_body_unlike>, C<response_headers> (C<Name: value>, or C<!Name>
for absent), C<response_headers_like>, C<error_log>, C<no_error_log>,
C<must_die> (C<nginx -t> must fail; C<error_log> is matched against its
output), C<timeout>, C<wait>, C<skip>.

The error log is read from where it stood before the block's nginx
started.  The lines of C<error_log> are waited for, up to C<log_timeout>
seconds (default 10, or C<FG_LOG_TIMEOUT>), never slept for: nginx logs
what it does after the answer, and a slow machine only logs it later.
C<no_error_log> is checked on the same text, so a block that expects a line
has its absences anchored on that event; C<wait> (a sleep) is only for a
block with nothing to expect.

Every block, whatever it checks, fails on an C<[alert]>, C<[crit]> or
C<[emerg]> line in its error log (its requests, its C<check>, and what
nginx logs when it stops after the block) and on a new sanitizer report in
C<$FG_RUN_DIR/logs/sanitizer.*>, unless one of the block's own
C<error_log> or C<no_error_log> patterns names that level (as
lua-nginx-module's default C<no_error_log [error]>).  An nginx that does not
stop within C<FG_NGINX_STOP_TIMEOUT> seconds (default 15) of QUIT is a
failure, said as such, and killed with SIGKILL.

Two sections of our own, both Perl, compiled in package C<main> (the test
file's imports, e.g. FluxGate::Test, are at hand): C<init> runs before the
block's requests; C<check> runs after them with C<$main::responses> (the
parsed responses: C<status>, C<headers>, C<body>) and C<$main::block>.

C<$TEST_NGINX_*> in configs and requests is replaced from the environment;
C<$TEST_NGINX_SERVER_PORT>, C<$TEST_NGINX_SERVROOT> and
C<$TEST_NGINX_WORKERS> are the runner's own.  C<TEST_NGINX_WORKERS="1 2">
(what C<make test> sets) runs every block under C<worker_processes 1> and
again under C<worker_processes 2>; C<workers(1)> in a file pins it.

=cut
