# fluxgate_user_token: the buyer's HS256 JWT, checked in nginx before any
# Redis call (DESIGN.md v3, "The buyer"; issue 19).  Where it is required,
# every bad token is 401 unauthenticated (missing, malformed, badly signed,
# expired, not yet valid, alg none or another alg) and a body userId other
# than the token's sub is 403 user_mismatch, each with Redis unchanged and
# no order.lua call; a valid token's sub is the buyer, one place whatever
# key; without `required` a bad token means no verified user; `off` turns
# it off; and nginx -t refuses what cannot work.  Tokens are made here
# with Digest::SHA's HMAC-SHA256, as docs/api.md's Python does.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket::Lite;
use FluxGate::Test;
use FluxGate::Queue;
use Time::HiRes qw(time sleep);


our $HTTP = <<'EOF';
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
    fluxgate_kafka_topic $TEST_NGINX_TOPIC;
    fluxgate_kafka_option linger.ms 1;
    fluxgate_queue_secret $TEST_NGINX_QUEUE_SECRET;
    fluxgate_threshold 1;

    server {
        listen 127.0.0.1:$TEST_NGINX_ADMIN_PORT;
        location = /queue/control { fluxgate_queue_control; }
    }
EOF

our $CONFIG = <<'EOF';
    fluxgate_user_token $cookie_shop_session secret=$TEST_NGINX_USER_SECRET required;

    location = /order {
        fluxgate_order;
    }
    location = /bearer {
        fluxgate_user_token $http_authorization secret=$TEST_NGINX_USER_SECRET required;
        fluxgate_order;
    }
    location = /optional {
        fluxgate_user_token $cookie_shop_session secret=$TEST_NGINX_USER_SECRET;
        fluxgate_order;
    }
    location = /off {
        fluxgate_user_token off;
        fluxgate_order;
    }
    location = /limited {
        fluxgate_per_user_limit 1;
        fluxgate_order;
    }
    location = /t {
        return 200 "ok\n";
    }
EOF

queue_setup('t203', user => 1);
our $USER_SECRET = secret_of($ENV{TEST_NGINX_USER_SECRET});

sub port { server_port() }
sub admin { $ENV{TEST_NGINX_ADMIN_PORT} }

# a token of $sub, signed with the shop's secret, good for ten minutes;
# claims and options change it
sub token {
    my ($sub, %o) = @_;
    my $now = int time;
    my %claims = (sub => $sub, iat => $now, exp => $now + 600, %{ $o{claims} || {} });
    delete @claims{ grep { !defined $claims{$_} } keys %claims };
    return jwt($o{secret} // $main::USER_SECRET, \%claims, %{ $o{jwt} || {} });
}

# a product whose line is paused, with two places already in it
sub product {
    my $p = paused_product(admin());
    for my $u (qw(ahead-1 ahead-2)) {
        my $res = order(port(), $p, user => undef, token => token($u));
        die "no place: $res->{status} $res->{content}\n" unless $res->{status} == 302;
    }
    return $p;
}

plan 'no_plan';
run_tests();

__DATA__

=== TEST 1: nginx -t: no secret=
--- http_config eval: $::HTTP
--- config
    location = /order {
        fluxgate_user_token $cookie_shop_session required;
        fluxgate_order;
    }
--- must_die
--- error_log
"fluxgate_user_token" needs secret=<file> (the HS256 key)



=== TEST 2: nginx -t: a secret file shorter than 32 bytes
--- http_config eval: $::HTTP
--- config eval
"    location = /order {\n"
. "        fluxgate_user_token \$cookie_shop_session secret=" . FluxGate::Test::queue_secret('short') . ";\n"
. "        fluxgate_order;\n    }\n"
--- must_die
--- error_log eval
qr/"fluxgate_user_token": the secret file ".*short" holds 31 bytes, at least 32 are needed/



=== TEST 3: nginx -t: a secret file that is not there
--- http_config eval: $::HTTP
--- config
    location = /order {
        fluxgate_user_token $cookie_shop_session secret=/nonexistent/shop-session.key;
        fluxgate_order;
    }
--- must_die
--- error_log
"fluxgate_user_token": cannot read the secret file "/nonexistent/shop-session.key"



=== TEST 4: nginx -t: the token comes from a variable
--- http_config eval: $::HTTP
--- config
    location = /order {
        fluxgate_user_token shop_session secret=$TEST_NGINX_USER_SECRET;
        fluxgate_order;
    }
--- must_die
--- error_log
"fluxgate_user_token" reads the token from a variable, not "shop_session"



=== TEST 5: required: every bad token is 401, a userId not the token's is 403, Redis unchanged, order.lua never run
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- check
my $p = main::product();
my $now = int time;
my %bad = (
    'missing'              => undef,
    'empty'                => '',
    'not a JWT'            => 'not-a-token',
    'two parts'            => 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0',
    'damaged base64url'    => main::token('alice') =~ s/\.([^.]+)\./.\$$1./r,
    'signed with another key' => main::token('alice', secret => 'another key of at least 32 bytes.....'),
    'signature cut short'  => main::token('alice') =~ s/.{4}$//r,
    'claims changed after signing' => do {
        my ($h, undef, $s) = split /\./, main::token('alice');
        "$h." . b64url(json_encode({ sub => 'mallory', exp => $now + 600 })) . ".$s" },
    'expired'              => main::token('alice', claims => { exp => $now - 120 }),
    'not yet valid (nbf)'  => main::token('alice', claims => { nbf => $now + 120 }),
    'issued in the future' => main::token('alice', claims => { iat => $now + 120 }),
    'no exp'               => main::token('alice', claims => { exp => undef }),
    'alg none'             => main::token('alice', jwt => { header => { alg => 'none', typ => 'JWT' },
                                                             signature => '' }),
    'alg HS512'            => main::token('alice', jwt => { header => { alg => 'HS512', typ => 'JWT' } }),
    'sub not an id'        => main::token('a b'),
);
my $before = redis_snapshot($p);
my ($lines) = redis_monitor(sub {
    for my $case (sort keys %bad) {
        my $res = order(main::port(), $p, user => 'alice', token => $bad{$case});
        is($res->{status}, 401, "$main::name - $case: 401") or diag($res->{content});
        is($res->{json}{status}, 'unauthenticated', "$main::name - $case: unauthenticated");
        is($res->{headers}{'www-authenticate'}, 'Bearer', "$main::name - $case: WWW-Authenticate: Bearer");
        is(redis_snapshot($p), $before, "$main::name - $case: Redis unchanged");
    }
    my $res = order(main::port(), $p, user => 'mallory', token => main::token('alice'));
    is($res->{status}, 403, "$main::name - a userId not the token's sub: 403");
    is($res->{json}{status}, 'user_mismatch', "$main::name - user_mismatch");
    is(redis_snapshot($p), $before, "$main::name - user_mismatch: Redis unchanged");
});
is(scalar(order_calls($lines, $p)), 0, "$main::name - order.lua never ran for them");
is(scalar(product_writes($lines, $p)), 0, "$main::name - nothing wrote to the product")
    or diag(join "\n", product_writes($lines, $p));
my ($seen, $res) = redis_monitor(sub {
    order(main::port(), $p, user => 'alice', auth => 'Bearer ' . main::token('alice'), path => '/bearer',
          token => main::token('mallory')) });
is(scalar(order_calls($seen, $p)), 1, "$main::name - (the same watch sees order.lua run for a good token)");
is($res->{status}, 302, "$main::name - alice's token in Authorization where it is read: a place");
is(ticket_decode($res->{json}{ticket} // '')->{buyer}, 'alice', "$main::name - hers, the cookie ignored there");



=== TEST 6: a valid token's sub is the buyer: one place whatever key, userId optional, Bearer or not
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- check
my $p = main::product();
my $first = order(main::port(), $p, user => undef, token => main::token('alice'));
is($first->{status}, 302, "$main::name - a place") or diag($first->{content});
my $t = $first->{json}{ticket};
is(ticket_decode($t)->{buyer}, 'alice', "$main::name - the ticket's buyer is the token's sub");
is($first->{json}{position}, 3, "$main::name - third");
my @again = (
    ['another key, no userId', user => undef, token => main::token('alice')],
    ['userId the same as sub', user => 'alice', token => main::token('alice')],
    ['a token made later', user => undef, token => main::token('alice', claims => { iat => int(time) + 5 })],
    ['expired within the leeway', user => undef, token => main::token('alice', claims => { exp => int(time) - 10 })],
    ['Authorization: Bearer', user => undef, auth => 'Bearer ' . main::token('alice'), path => '/bearer'],
    ['Authorization without Bearer', user => undef, auth => main::token('alice'), path => '/bearer'],
);
for my $a (@again) {
    my ($what, %o) = @$a;
    my $res = order(main::port(), $p, %o);
    is("$res->{status} " . ($res->{json}{ticket} // '-') . " " . ($res->{json}{position} // '-'),
       "302 $t 3", "$main::name - $what: the same ticket and place");
}
my $res = order(main::port(), $p, user => 'alice-2', token => main::token('alice'));
is($res->{status}, 403, "$main::name - another userId under alice's token: 403");
$res = order(main::port(), $p, user => 'alice', token => main::token('bob'));
is($res->{status}, 403, "$main::name - alice's userId under bob's token: 403");
is(places_of($p), 3, "$main::name - three places in all");



=== TEST 7: not required: a bad token is no verified user, the body's userId (else the key) is the buyer
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- check
my $p = main::product();
my $buyer = sub { my $r = shift; $r->{status} == 302 ? ticket_decode($r->{json}{ticket})->{buyer} : "$r->{status} $r->{content}" };
my $now = int time;
is($buyer->(order(main::port(), $p, user => 'carol', path => '/optional')), 'carol',
   "$main::name - no token: userId");
is($buyer->(order(main::port(), $p, user => 'dan', token => main::token('mallory', claims => { exp => $now - 120 }),
                  path => '/optional')), 'dan', "$main::name - an expired token: userId");
is($buyer->(order(main::port(), $p, user => 'erin', token => main::token('mallory', secret => 'x' x 40),
                  path => '/optional')), 'erin', "$main::name - a badly signed token: userId");
is($buyer->(order(main::port(), $p, user => undef, key => 'anon-key-203', path => '/optional')), 'anon-key-203',
   "$main::name - no token, no userId: the key");
is($buyer->(order(main::port(), $p, user => undef, token => main::token('frank'), path => '/optional')), 'frank',
   "$main::name - a valid token: its sub");
my $res = order(main::port(), $p, user => 'gina', token => main::token('frank'), path => '/optional');
is($res->{status}, 403, "$main::name - a valid token and another userId: 403 there too");



=== TEST 8: off: no token is read, the body names the user
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- check
my $p = main::product();
my $res = order(main::port(), $p, user => 'hank', token => main::token('mallory'), path => '/off');
is($res->{status}, 302, "$main::name - a place") or diag($res->{content});
is(ticket_decode($res->{json}{ticket})->{buyer}, 'hank', "$main::name - the body's userId is the buyer, the cookie ignored");
$res = order(main::port(), $p, user => 'ivy', token => 'garbage', path => '/off');
is($res->{status}, 302, "$main::name - a garbage cookie is not looked at");
$res = order(main::port(), $p, user => undef, token => main::token('ivy'), path => '/off');
is($res->{status}, 400, "$main::name - without a token to read, userId is required");
is($res->{json}{field}, 'userId', "$main::name - names userId");



=== TEST 9: the verified user is the one fluxgate_per_user_limit counts
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /t
--- error_code: 200
--- check
my $p = uniq('p');
set_stock($p, 10);
is(control(main::admin(), $p, 'rate', rate => 1000)->{status}, 200, "$main::name - a line that admits at once");
my $res = order(main::port(), $p, user => undef, token => main::token('jack'), path => '/limited');
is($res->{status}, 200, "$main::name - jack buys one") or diag($res->{content});
is(redis('HGET', "fg:{$p}:buyers", 'jack'), 1, "$main::name - counted for jack");
$res = order(main::port(), $p, user => undef, token => main::token('jack'), path => '/limited');
is($res->{status}, 409, "$main::name - a second order under his token: 409");
is($res->{json}{status}, 'limit_reached', "$main::name - limit_reached");
