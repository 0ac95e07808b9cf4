package FluxGate::Browser;

# A headless Chromium (Debian's `chromium`) driven over the DevTools
# protocol, for the tests that need a real browser: the waiting room's
# JavaScript, fetch() following a 302, sessionStorage.  A WebSocket client
# in a few lines on Protocol::WebSocket (libprotocol-websocket-perl),
# blocking, one page.
#
#   my $b = FluxGate::Browser->start(dir => $artifacts);   # or skip: why
#   (args => [...]: more chromium switches)
#   $b->go($url);  $b->js('document.title');  $b->wait_js(20, 'expr');
#   $b->screenshot("$artifacts/shop.png");  $b->stop;
#
# Runs as root in CI: --no-sandbox, --headless=new, a profile of its own in
# dir.  The page is laid out as a phone's (412 x 915 CSS pixels).

use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;
use JSON::PP ();
use MIME::Base64 qw(decode_base64);
use POSIX qw(setsid);
use Time::HiRes qw(time sleep);
use File::Path qw(make_path);

my $JSON = JSON::PP->new->utf8->canonical;

sub binary {
    for my $b ($ENV{FG_CHROMIUM} // (), '/usr/bin/chromium') {
        return $b if -x $b;
    }
    return undef;
}

# why a browser test cannot run here, or undef
sub missing {
    return 'chromium is not installed (scripts/setup.sh installs it)'
        unless binary();
    return 'Protocol::WebSocket is missing (libprotocol-websocket-perl)'
        unless eval { require Protocol::WebSocket::Client; 1 };
    return undef;
}

sub start {
    my ($class, %o) = @_;
    my $dir = $o{dir} or die "FluxGate::Browser: dir";
    require Protocol::WebSocket::Client;
    my $profile = "$dir/profile";
    make_path($profile);
    unlink "$profile/DevToolsActivePort";
    my $self = bless { dir => $dir, id => 0, events => [],
                       width => $o{width} // 412, height => $o{height} // 915 },
                     $class;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        # a process group of its own: stop() ends chromium and its helpers
        setsid();
        open STDOUT, '>', "$dir/chromium.log" or die $!;
        open STDERR, '>&', \*STDOUT or die $!;
        exec binary(), '--headless=new', '--no-sandbox', '--disable-gpu',
            '--no-first-run', '--no-default-browser-check',
            '--disable-extensions', '--disable-background-networking',
            '--disable-component-update', '--disable-sync',
            '--disable-dev-shm-usage', '--mute-audio',
            '--password-store=basic', '--use-mock-keychain',
            "--user-data-dir=$profile", '--remote-debugging-port=0',
            '--remote-debugging-address=127.0.0.1',
            "--window-size=$self->{width},$self->{height}",
            @{ $o{args} || [] }, 'about:blank'
            or die "exec chromium: $!";
    }
    $self->{pid} = $pid;
    my $port;
    my $deadline = time + 30;
    while (time < $deadline) {
        if (open my $fh, '<', "$profile/DevToolsActivePort") {
            my $l = <$fh>;
            $port = $1 if defined $l && $l =~ /^(\d+)$/;
            last if $port;
        }
        die "chromium exited: " . _tail("$dir/chromium.log")
            if waitpid($pid, POSIX::WNOHANG()) == $pid;
        sleep 0.1;
    }
    unless ($port) {
        $self->stop;
        die "chromium gave no DevTools port in 30 s: " . _tail("$dir/chromium.log");
    }
    $self->{port} = $port;
    $self->_attach;
    $self->call('Page.enable');
    $self->call('Runtime.enable');
    $self->call('Emulation.setDeviceMetricsOverride', width => $self->{width},
                height => $self->{height}, deviceScaleFactor => 1,
                mobile => JSON::PP::true);
    return $self;
}

sub _tail {
    my ($f) = @_;
    open my $fh, '<', $f or return '';
    my @l = <$fh>;
    return join '', @l[($#l > 20 ? $#l - 20 : 0) .. $#l];
}

# the first page target's WebSocket
sub _attach {
    my ($self) = @_;
    require HTTP::Tiny;
    my $list;
    for (1 .. 50) {
        my $res = HTTP::Tiny->new(timeout => 5)
            ->get("http://127.0.0.1:$self->{port}/json/list");
        $list = eval { $JSON->decode($res->{content}) } if $res->{success};
        last if $list && grep { $_->{type} eq 'page' } @$list;
        sleep 0.1;
    }
    my ($page) = grep { $_->{type} eq 'page' } @{ $list || [] }
        or die "chromium has no page target";
    my ($path) = $page->{webSocketDebuggerUrl} =~ m{^ws://[^/]+(/.*)$}
        or die "no WebSocket URL: $page->{webSocketDebuggerUrl}";
    my $sock = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$self->{port}",
                                     Timeout => 5)
        or die "connect to DevTools: $!";
    $sock->autoflush(1);
    my $ws = Protocol::WebSocket::Client->new(
        url => "ws://127.0.0.1:$self->{port}$path", max_payload_size => 0);
    my $open = 0;
    $ws->on(write => sub { my (undef, $buf) = @_; print {$sock} $buf });
    $ws->on(connect => sub { $open = 1 });
    $ws->on(read => sub { my (undef, $buf) = @_; push @{ $self->{inbox} }, $buf });
    $ws->on(error => sub { die "DevTools WebSocket: $_[1]\n" });
    @$self{qw(sock ws inbox)} = ($sock, $ws, []);
    $ws->connect;
    $self->_pump(10) until $open;
}

# reads what the socket has (waiting up to $timeout s) into the inbox
sub _pump {
    my ($self, $timeout) = @_;
    my $sel = IO::Select->new($self->{sock});
    return 0 unless $sel->can_read($timeout);
    my $n = sysread($self->{sock}, my $buf, 1 << 20);
    die "DevTools connection closed\n" unless $n;
    $self->{ws}->read($buf);
    return 1;
}

# call('Page.navigate', url => ...) -> the result; dies on a protocol error
sub call {
    my ($self, $method, %params) = @_;
    my $id = ++$self->{id};
    $self->{ws}->write($JSON->encode({ id => $id, method => $method,
                                       params => \%params }));
    my $deadline = time + ($self->{timeout} // 30);
    while (1) {
        while (defined(my $m = shift @{ $self->{inbox} })) {
            my $msg = eval { $JSON->decode($m) } or next;
            if (defined $msg->{id} && $msg->{id} == $id) {
                die "$method: $msg->{error}{message}\n" if $msg->{error};
                return $msg->{result};
            }
            push @{ $self->{events} }, $msg if $msg->{method};
            splice @{ $self->{events} }, 0, -200 if @{ $self->{events} } > 400;
        }
        die "$method: no answer in time\n" if time > $deadline;
        $self->_pump(1);
    }
}

# js('expr') -> the value (promises awaited); dies on an exception
sub js {
    my ($self, $expr) = @_;
    my $r = $self->call('Runtime.evaluate', expression => $expr,
                        returnByValue => JSON::PP::true,
                        awaitPromise => JSON::PP::true);
    die "js: $expr: " . ($r->{exceptionDetails}{exception}{description}
                         // $r->{exceptionDetails}{text}) . "\n"
        if $r->{exceptionDetails};
    return $r->{result}{value};
}

# wait_js($timeout, 'expr') -> the first true value of expr, or undef;
# a page that is navigating away throws: that is "not yet"
sub wait_js {
    my ($self, $timeout, $expr, $every) = @_;
    my $deadline = time + $timeout;
    while (time < $deadline) {
        my $v = eval { $self->js($expr) };
        return $v if $v;
        sleep($every // 0.1);
    }
    return undef;
}

sub go {
    my ($self, $url) = @_;
    $self->call('Page.navigate', url => $url);
    $self->wait_js(20, 'document.readyState === "complete" && location.href')
        or die "$url did not load in 20 s\n";
}

# viewport($width, $height): lay the page out for another screen
sub viewport {
    my ($self, $w, $h) = @_;
    $self->call('Emulation.setDeviceMetricsOverride', width => $w,
                height => $h, deviceScaleFactor => 1, mobile => JSON::PP::true);
}

sub screenshot {
    my ($self, $file) = @_;
    my $r = $self->call('Page.captureScreenshot', format => 'png');
    open my $fh, '>:raw', $file or die "$file: $!";
    print $fh decode_base64($r->{data});
    close $fh;
    return $file;
}

sub stop {
    my ($self) = @_;
    my $pid = delete $self->{pid} or return;
    eval { local $self->{timeout} = 5; $self->call('Browser.close') };
    close $self->{sock} if $self->{sock};
    my $deadline = time + 10;
    while (time < $deadline) {
        last if waitpid($pid, POSIX::WNOHANG()) == $pid;
        sleep 0.1;
    }
    # chromium's helpers are in its process group
    kill 'KILL', -$pid;
    waitpid($pid, 0);
    # the profile was this run's alone; the screenshots and the log stay
    File::Path::remove_tree("$self->{dir}/profile");
}

sub DESTROY { $_[0]->stop }

1;
