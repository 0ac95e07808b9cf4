# The demo shop's sign-in service (scripts/signin.py, run by the stack under
# supervisord, proxied by nginx at /signin and /signout) and the gate's
# fluxgate_user_token reading what it signs, as conf/nginx.conf ships them:
# the cookie's attributes, the token's header, claims and signature
# (checked here with the stack's user.secret), names refused, signing out,
# and an order under the cookie bought as the token's sub, a different
# userId refused with 403 before Redis, a token signed with another key
# making nobody the buyer.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Digest::SHA qw(hmac_sha256);
use MIME::Base64 qw(decode_base64 encode_base64);
use FluxGate::Test;
use FluxGate::Shop;

my $url = $ENV{FLUXGATE_URL};
my $direct = $ENV{FLUXGATE_SIGNIN_URL}
    or plan skip_all => 'the stack has no sign-in service (FLUXGATE_SIGNIN_URL)';
my $secret_file = $ENV{FG_USER_SECRET} // "$ENV{FG_RUN_DIR}/user.secret";

sub b64url_decode {
    (my $s = shift) =~ tr{-_}{+/};
    return decode_base64($s . '=' x ((4 - length($s) % 4) % 4));
}
sub b64url { (my $s = encode_base64(shift, '')) =~ tr{+/}{-_}; $s =~ s/=+$//; $s }

sub cookies_of {
    my ($res) = @_;
    my $c = $res->{headers}{'set-cookie'};
    return ref $c ? @$c : defined $c ? ($c) : ();
}

sub signin_as {
    my ($body, %h) = @_;
    my $res = http_post("$url/signin", ref $body ? json_encode($body) : $body, \%h);
    $res->{json} = eval { json_decode($res->{content}) } || {};
    return $res;
}

sub who {
    my ($cookie) = @_;
    require HTTP::Tiny;
    my $res = HTTP::Tiny->new(timeout => 10)->get("$url/signin",
        { headers => { $cookie ? (Cookie => $cookie) : () } });
    return eval { json_decode($res->{content}) } || {};
}

# --- the secret ---------------------------------------------------------------
ok(-s $secret_file, 'the stack made user.secret');
my @st = stat $secret_file;
is(sprintf('%o', $st[2] & 07777), '640', 'mode 0640');
is(scalar getgrgid($st[5]), 'nogroup', 'group nogroup: the service runs as nobody');
open my $sfh, '<', $secret_file or die "$secret_file: $!";
my $secret = do { local $/; <$sfh> };
$secret =~ s/[\r\n]+\z//;
cmp_ok(length $secret, '>=', 32, 'at least 32 bytes, as fluxgate_user_token asks');
my @ps = grep { /signin\.py/ } `ps -eo user=,args=`;
like($ps[0] // '', qr/^nobody\s/, 'the sign-in service runs as nobody');

# --- signing in ---------------------------------------------------------------
my $name = uniq('alice');
my $res = signin_as({ user => $name });
is($res->{status}, 200, 'POST /signin through nginx');
is($res->{json}{status}, 'signed_in', 'signed in');
is($res->{json}{user}, $name, 'by the name given');
my ($cookie) = grep { /^shop_session=/ } cookies_of($res);
ok($cookie, 'a shop_session cookie');
my %attr = map { my ($k, $v) = split /=/, $_, 2; (lc $k => $v // 1) }
           split /;\s*/, ($cookie =~ s/^shop_session=[^;]*;\s*//r);
ok($attr{httponly}, 'HttpOnly: out of the page\'s scripts');
is($attr{samesite}, 'Strict', 'SameSite=Strict: not sent from other sites');
is($attr{path}, '/', 'Path=/: the gate\'s /order and the shop alike');
is($attr{'max-age'}, 28800, 'eight hours, longer than a place in line lives');
ok(!$attr{secure}, 'not Secure over plain http');

my ($token) = $cookie =~ /^shop_session=([^;]+)/;
my ($h, $c, $sig) = split /\./, $token;
is_deeply(json_decode(b64url_decode($h)), { alg => 'HS256', typ => 'JWT' }, 'an HS256 JWT');
my $claims = json_decode(b64url_decode($c));
is($claims->{sub}, $name, 'sub: the user');
is($claims->{exp} - $claims->{iat}, 28800, 'exp eight hours after iat');
cmp_ok(abs($claims->{iat} - time), '<=', 5, 'iat: now');
is($res->{json}{expires}, $claims->{exp}, 'the answer says when it ends');
is($sig, b64url(hmac_sha256("$h.$c", $secret)), 'signed with the stack\'s user.secret');

is(who("shop_session=$token")->{user}, $name, 'GET /signin: who the cookie says');
is(who("a=b; fluxgate_challenge_x=16:abc.def; shop_session=$token; z=1")->{user}, $name,
   'among the shop\'s other cookies');
is(who('')->{status}, 'signed_out', 'no cookie: signed out');
is(who('shop_session=' . "$h.$c." . b64url('x' x 32))->{status}, 'signed_out',
   'a forged signature: signed out');
my $old = b64url(json_encode({ sub => $name, iat => time - 100, exp => time - 10 }));
is(who("shop_session=$h.$old." . b64url(hmac_sha256("$h.$old", $secret)))->{status},
   'signed_out', 'an expired token: signed out');

# behind https (nginx says so in X-Forwarded-Proto) the cookie is Secure
$res = http_post("$direct/signin", json_encode({ user => $name }),
                 { 'X-Forwarded-Proto' => 'https' });
like((grep { /^shop_session=/ } cookies_of($res))[0] // '', qr/;\s*Secure\b/,
     'behind https the cookie is Secure');

# --- refused -------------------------------------------------------------------
for my $bad (['a b', 'a space'], ['', 'empty'], ['u' x 65, '65 characters'],
             ['a{b}', 'braces'], [42, 'a number'], [undef, 'no name']) {
    my $r = signin_as(defined $bad->[0] ? { user => $bad->[0] } : {});
    is($r->{status}, 400, "a name with $bad->[1]: 400");
    is($r->{json}{field}, 'user', '... naming user');
    ok(!grep({ /^shop_session=/ } cookies_of($r)), '... and no cookie');
}
$res = http_post("$url/signin", "user=$name",
                 { 'Content-Type' => 'application/x-www-form-urlencoded' });
is($res->{status}, 415, 'a form post (what another site could send): 415');
ok(!grep({ /^shop_session=/ } cookies_of($res)), '... and no cookie');
$res = signin_as('[1,2]');
is($res->{status}, 400, 'not a JSON object: 400');

# --- signing out ----------------------------------------------------------------
$res = http_post("$url/signout", '{}', { Cookie => "shop_session=$token" });
is($res->{status}, 200, 'POST /signout');
like((grep { /^shop_session=/ } cookies_of($res))[0] // '', qr/^shop_session=;.*Max-Age=0/,
     'clears the cookie');

# --- the gate reads it ------------------------------------------------------------
my $p = uniq('signin');
admin_init($p, 10);
my $key = uniq('k');
$res = http_post("$url/order", json_encode({ productId => $p }),
                 { 'X-Idempotency-Key' => $key, Cookie => "shop_session=$token" });
is($res->{status}, 200, 'an order under the cookie, without userId: accepted');
is(redis('HGET', "fg:{$p}:idem:$key", 'u'), $name, 'bought as the token\'s sub');

my $before = redis_snapshot($p);
$res = http_post("$url/order", json_encode({ productId => $p, userId => uniq('mallory') }),
                 { 'X-Idempotency-Key' => uniq('k'), Cookie => "shop_session=$token" });
is($res->{status}, 403, 'the cookie with another userId: 403');
is(eval { json_decode($res->{content})->{status} }, 'user_mismatch', 'user_mismatch');
is(redis_snapshot($p), $before, 'Redis unchanged');

my $forged = "$h.$c." . b64url(hmac_sha256("$h.$c", 'another secret, 32 bytes or more!!'));
$key = uniq('k');
$res = http_post("$url/order", json_encode({ productId => $p }),
                 { 'X-Idempotency-Key' => $key, Cookie => "shop_session=$forged" });
is($res->{status}, 200, 'a token of another key (not required here): still an order');
is(redis('HGET', "fg:{$p}:idem:$key", 'u'), $key,
   'but nobody verified: the key is the buyer, not the token\'s sub');

done_testing();
