#!/usr/bin/env perl
# How long the waiting room's proof of work (conf/waiting-room/pow.js,
# fluxgate_queue_pow) keeps a shopper waiting on a phone-class browser:
#
#   perl bench/pow-phone.pl [--bits 16,18,20] [--runs 15,11,7]
#                           [--throttle 4] [--out FILE]
#
# Debian's headless Chromium (FluxGate::Browser, the DevTools protocol)
# loads pow.js as the waiting room does, from a static server of this
# script's own on 127.0.0.1 (a secure context: Web Crypto is there; no
# stack needed), and solves fresh challenges of a real one's length
# (~150 characters) at each number of bits, printing every run:
#
#   page, Nx    FluxGatePow.search() on the page's own thread with the CPU
#               slowed N times (Emulation.setCPUThrottlingRate): the
#               phone-class figure.  Chromium throttles a page's thread
#               only; a Web Worker cannot be (the DevTools protocol
#               answers "Operation is only supported for pages, not
#               workers"), so the same code runs on the throttled thread.
#   worker, 1x  FluxGatePow.solve(), in its Web Worker as the waiting room
#               runs it, unthrottled: this machine's own speed.
#
# The number of hashes a challenge takes is random (geometric, mean 2^bits,
# median ln 2 * 2^bits), so each line gives the median time over its runs
# and the hashing rate over all of them (hashes / time: steady), and the
# median a run at that rate would take (ln 2 * 2^bits / rate).  Writes
# Markdown to bench/results/<date>-pow-phone.md (or --out).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib";
use File::Path qw(make_path remove_tree);
use Getopt::Long;
use IO::Socket::INET;
use JSON::PP ();
use MIME::Base64 qw(encode_base64);
use POSIX qw(strftime);
use Time::HiRes qw(time);
use FluxGate::Browser;

$| = 1;

my $root = "$FindBin::Bin/..";
my ($bits, $runs, $throttle) = ('16,18,20', '15,11,7', 4);
my $out = "$root/bench/results/" . strftime('%Y-%m-%d', localtime) . '-pow-phone.md';
GetOptions('bits=s' => \$bits, 'runs=s' => \$runs, 'throttle=f' => \$throttle,
           'out=s' => \$out) or die "usage: $0 [--bits 16,18,20] [--runs 15,11,7] [--throttle 4] [--out FILE]\n";
my @bits = split /,/, $bits;
my @runs = split /,/, $runs;
push @runs, $runs[-1] while @runs < @bits;
die "bits are 1 to 32\n" if grep { !/^\d+$/ || $_ < 1 || $_ > 32 } @bits;
if (my $why = FluxGate::Browser::missing()) { die "$why\n" }

my $JSON = JSON::PP->new->canonical;
my $dir = "$root/bench/tmp/pow-phone";
remove_tree($dir);
make_path($dir);

# --- a static server for conf/waiting-room and one page of ours -------------

my $page = <<'EOF';
<!doctype html><meta charset="utf-8"><title>pow bench</title>
<script src="/waiting-room/pow.js"></script>
EOF
my $srv = IO::Socket::INET->new(Listen => 16, LocalAddr => '127.0.0.1',
                                LocalPort => 0, ReuseAddr => 1)
    or die "listen: $!";
my $port = $srv->sockport;
my $server = fork // die "fork: $!";
if ($server == 0) {
    while (my $c = $srv->accept) {
        my $req = '';
        while (my $l = <$c>) { $req .= $l; last if $l =~ /^\r?\n$/ }
        my ($path) = $req =~ m{^GET (/[^ ?]*)};
        my ($code, $type, $body) = (404, 'text/plain', "not found\n");
        if (($path // '') eq '/bench.html') {
            ($code, $type, $body) = (200, 'text/html', $page);
        } elsif (($path // '') =~ m{^/waiting-room/([a-z-]+\.js)$}
                 && open my $fh, '<', "$root/conf/waiting-room/$1") {
            local $/;
            ($code, $type, $body) = (200, 'text/javascript', <$fh>);
        }
        print $c "HTTP/1.1 $code X\r\nContent-Type: $type\r\n"
            . "Content-Length: " . length($body) . "\r\nConnection: close\r\n"
            . "Cache-Control: no-store\r\n\r\n$body";
        close $c;
    }
    exit 0;
}
close $srv;
END { local $?; if ($server) { kill 'TERM', $server; waitpid $server, 0 } }

# --- the runs ------------------------------------------------------------------

sub b64url { (my $s = encode_base64(shift, '')) =~ tr{+/}{-_}; $s =~ s/=+$//; $s }

# a challenge as the gate makes one: base64url(product|buyer|expires|nonce)
# "." base64url(HMAC-SHA256): the random bytes stand in for both
sub challenge {
    my $payload = join '', map { chr int rand 256 } 1 .. 80;
    my $mac = join '', map { chr int rand 256 } 1 .. 32;
    return b64url($payload) . '.' . b64url($mac);
}

my $load0 = (split ' ', `cat /proc/loadavg`)[0];
my $br = FluxGate::Browser->start(dir => $dir);
$br->{timeout} = 600;      # a 20-bit run on a throttled thread is long
$br->go("http://127.0.0.1:$port/bench.html");
die "pow.js did not load\n" unless $br->js('typeof FluxGatePow === "object"');
die "no Web Crypto on the bench page\n" unless $br->js('!!(crypto && crypto.subtle)');
my $lanes = $br->js('FluxGatePow.LANES');
my $version = `chromium --version 2>/dev/null` =~ s/\s+$//r;

my (@lines, %sum);
for my $i (0 .. $#bits) {
    my ($k, $n) = ($bits[$i], $runs[$i]);
    for my $mode ("page, ${throttle}x", 'worker, 1x') {
        my $rate = $mode =~ /^page/ ? $throttle : 1;
        $br->call('Emulation.setCPUThrottlingRate', rate => $rate + 0);
        my $fn = $mode =~ /^page/ ? 'search' : 'solve';
        for my $run (1 .. $n) {
            my $c = challenge();
            my $r = $JSON->decode($br->js("FluxGatePow.$fn('$c', $k)"
                . '.then(function (r) { return JSON.stringify(r) })'));
            my $line = sprintf "%2d bits  %-10s run %2d/%d: %8d hashes %8d ms  %6.1f kH/s",
                $k, $mode, $run, $n, $r->{tried}, $r->{ms},
                $r->{ms} ? $r->{tried} / $r->{ms} : 0;
            print "$line\n";
            push @lines, $line;
            push @{ $sum{$k}{$mode}{ms} }, $r->{ms};
            $sum{$k}{$mode}{tried} += $r->{tried};
            $sum{$k}{$mode}{total} += $r->{ms};
        }
    }
}
$br->call('Emulation.setCPUThrottlingRate', rate => 1);
$br->stop;
my $load1 = (split ' ', `cat /proc/loadavg`)[0];

sub median {
    my @s = sort { $a <=> $b } @_;
    return @s % 2 ? $s[$#s / 2] : ($s[@s / 2 - 1] + $s[@s / 2]) / 2;
}

my @table = ('| bits | where | runs | median | hashes/s | median at that rate |',
             '|---:|---|---:|---:|---:|---:|');
for my $k (@bits) {
    for my $mode ("page, ${throttle}x", 'worker, 1x') {
        my $s = $sum{$k}{$mode};
        my $hps = $s->{tried} / ($s->{total} / 1000);
        push @table, sprintf '| %d | %s | %d | %.1f s | %.0f k | %.1f s |', $k, $mode,
            scalar @{ $s->{ms} }, median(@{ $s->{ms} }) / 1000, $hps / 1000,
            log(2) * 2**$k / $hps;
    }
}
print join("\n", '', @table), "\n";

my $cpu = (`grep -m1 'model name' /proc/cpuinfo` =~ /:\s*(.*)/)[0] // 'unknown';
my $cores = `nproc` =~ s/\s+$//r;
my $date = strftime('%Y-%m-%d', localtime);
open my $fh, '>', $out or die "$out: $!";
print $fh <<"EOF";
# The waiting room's proof of work on a phone-class browser ($date)

`perl bench/pow-phone.pl --bits $bits --runs $runs --throttle $throttle`:
conf/waiting-room/pow.js ($lanes Web Crypto digests in flight) in
$version, headless, laid out as a phone (412 x 915), on $cpu
($cores cores, shared; load average $load0 at the start, $load1 at the end).

- **page, ${throttle}x**: the solver on the page's own thread with
  `Emulation.setCPUThrottlingRate` $throttle: the phone-class figure.
  Chromium throttles a page's thread only; a Web Worker cannot be
  throttled (DevTools answers "Operation is only supported for pages, not
  workers"), so the waiting room's worker code runs on the throttled thread
  here.  Web Crypto's hashing itself is done off the
  JavaScript thread, on a thread of the browser's own that the throttling
  does not slow: on a real phone every thread is slower.
- **worker, 1x**: the solver in its Web Worker, as the waiting room runs
  it, unthrottled: this machine's own speed.

A challenge takes a random number of hashes (geometric, mean 2^bits,
median ln 2 x 2^bits = 45,426 at 16 bits): "median" is over the runs below,
"hashes/s" over all of them, and the last column the median a run would
take at that rate (steadier than a median of a few runs).

@{[ join "\n", @table ]}

Every run:

```
@{[ join "\n", @lines ]}
```
EOF
close $fh;
print "\nwritten: $out\n";
