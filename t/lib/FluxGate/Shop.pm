package FluxGate::Shop;

# What the tests of the shop's side share, against the stack's own gate
# (conf/nginx.conf as shipped: fluxgate_user_token on the shop_session
# cookie, fluxgate_queue_pow): signing in through the demo sign-in
# service, the proof of work a challenge asks for (done here as the
# waiting room's page does it), and the admin listener's levers (/init
# with opensAt, /queue/control, /queue/stats).

use strict;
use warnings;
use Exporter 'import';
use Digest::SHA qw(sha256);
use Time::HiRes qw(time);
use FluxGate::Test;

our @EXPORT = qw(pow_solve pow_bits sign_in admin_init queue_control
                 queue_stats shop_order);

# the number of leading zero bits of a digest
sub pow_bits {
    my ($md) = @_;
    my $bits = 0;
    for my $byte (unpack 'C*', $md) {
        if ($byte == 0) { $bits += 8; next }
        while (!($byte & 0x80)) { $bits++; $byte <<= 1 }
        last;
    }
    return $bits;
}

# pow_solve($challenge, $bits) -> n: SHA-256("<challenge>.<n>") has $bits
# leading zero bits (what the page's pow.js finds; 2^bits tries on average)
sub pow_solve {
    my ($c, $bits) = @_;
    my $full = int($bits / 8);
    my $zero = "\0" x $full;
    for (my $n = 0; ; $n++) {
        my $md = sha256("$c.$n");
        next if substr($md, 0, $full) ne $zero;
        return $n if pow_bits($md) >= $bits;
    }
}

# sign_in($user) -> the shop_session token the stack's sign-in service
# set (dies when it set none), and the response
sub sign_in {
    my ($user) = @_;
    my $res = http_post("$ENV{FLUXGATE_URL}/signin", json_encode({ user => $user }));
    my ($cookie) = grep { /^shop_session=/ }
        ref $res->{headers}{'set-cookie'} ? @{ $res->{headers}{'set-cookie'} }
                                          : ($res->{headers}{'set-cookie'} // ());
    my ($token) = ($cookie // '') =~ /^shop_session=([^;]+)/;
    die "sign_in($user): $res->{status} $res->{content}\n" unless $token;
    return wantarray ? ($token, $res) : $token;
}

sub _admin_post {
    my ($path, $body, $key) = @_;
    my $res = http_post("$ENV{FLUXGATE_ADMIN_URL}$path", json_encode($body),
                        { 'X-Idempotency-Key' => $key // uniq('admin') });
    $res->{json} = eval { json_decode($res->{content}) } || {};
    return $res;
}

# admin_init($product, $quantity, opensAt => unix s) -> response (json in
# {json}): POST /init on the stack's admin listener
sub admin_init {
    my ($p, $n, %o) = @_;
    my %body = (productId => $p, quantity => $n);
    $body{opensAt} = $o{opensAt} if defined $o{opensAt};
    my $res = _admin_post('/init', \%body, $o{key});
    die "admin_init($p): $res->{status} $res->{content}\n" unless $res->{status} == 200;
    return $res;
}

# queue_control($product, 'pause' | 'resume' | 'close' | 'rate', rate => N)
# -> the answer's JSON (dies unless 200)
sub queue_control {
    my ($p, $action, %o) = @_;
    my %body = (productId => $p, action => $action);
    $body{rate} = $o{rate} if defined $o{rate};
    my $res = _admin_post('/queue/control', \%body, $o{key});
    die "queue_control($p, $action): $res->{status} $res->{content}\n"
        unless $res->{status} == 200;
    return $res->{json};
}

# queue_stats($product) -> GET /queue/stats's JSON
sub queue_stats {
    my ($p) = @_;
    my $res = http_get("$ENV{FLUXGATE_ADMIN_URL}/queue/stats?productId=$p");
    die "queue_stats($p): $res->{status} $res->{content}\n" unless $res->{status} == 200;
    return json_decode($res->{content});
}

# shop_order($product, user => u, key => k, token => jwt, ticket => t,
#            solve => 1) -> {status, json, headers, solved}: POST /order
# on the stack's gate; with solve (the default) a challenge is worked out
# and the same order sent again with X-Queue-Proof, as the waiting room does
sub shop_order {
    my ($p, %o) = @_;
    my $key = $o{key} // uniq('k');
    my %body = (productId => $p);
    $body{userId} = $o{user} if defined $o{user};
    my %h = ('X-Idempotency-Key' => $key);
    $h{'X-Queue-Ticket'} = $o{ticket} if defined $o{ticket};
    $h{Cookie} = "shop_session=$o{token}" if defined $o{token};
    my $solved = 0;
    while (1) {
        my $res = http_post("$ENV{FLUXGATE_URL}/order", json_encode(\%body), \%h);
        $res->{json} = eval { json_decode($res->{content}) } || {};
        $res->{key} = $key;
        $res->{solved} = $solved;
        my $j = $res->{json};
        return $res unless $res->{status} == 302 && ($j->{status} // '') eq 'challenge'
                           && ($o{solve} // 1) && $solved < 3;
        $h{'X-Queue-Proof'} = "$j->{challenge}." . pow_solve($j->{challenge}, $j->{bits});
        $solved++;
    }
}

1;
