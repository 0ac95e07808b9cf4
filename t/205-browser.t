# The waiting room in a real browser: a headless Chromium (Debian's
# `chromium`, driven over the DevTools protocol by FluxGate::Browser).
#
# 1. A gate of this test's own (one order a second, a line, no proof of
#    work, no sign-in: the shop page buys as its own demo user): the shop
#    page presses "Buy now" while a crowd is in line, is sent (302) to the
#    waiting room, finds its ticket in the gate's cookie (never in the
#    address), watches its position fall as the gate admits the line ahead
#    in order, is admitted, re-sends the saved order with the ticket and
#    the same key, and lands on the confirmation: exactly one order
#    recorded.  Then one per person, an order whose first try is still in
#    flight (the ticket in the address's fragment), the product selling
#    out while the page waits, a sale paused and closed while it waits
#    (the ticket in an older gate's ?ticket=), a challenge on a page that
#    is not a secure context (no Web Crypto: the page says so), the shop on
#    a sold-out product.
# 2. The stack's own gate, as conf/nginx.conf ships it (the shop_session
#    token, fluxgate_queue_pow 16): a shopper signs in on the demo shop,
#    presses "Buy now" on a busy product, does the proof of work
#    ("Checking your browser..."), gets a place in a paused line, is
#    admitted once the sale resumes and lands on the confirmation, bought
#    as the signed-in user; the ticket appears in no line of the access
#    log.
# 3. A scheduled sale on the stack's gate: the page counts down to the
#    opening, shows the place the opening drew, and the confirmation.
#
# Every wait is on a page state with a deadline.  The screenshots are kept
# in DIR/artifacts/205-browser/ of the test stack (make test FG_KEEP=1
# keeps DIR); docs/waiting-room.png is one of them.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use File::Copy qw(copy);
use File::Path qw(make_path);
use POSIX ();
use Time::HiRes qw(time sleep);
use FluxGate::Test;
use FluxGate::Fleet;
use FluxGate::Shop;
use FluxGate::Browser;

if (my $why = FluxGate::Browser::missing()) {
    skip_all_missing($why);
}

my $art = "$ENV{FG_RUN_DIR}/artifacts/205-browser";
make_path($art);
chmod 0755, "$ENV{FG_RUN_DIR}/artifacts", $art;
note "screenshots in $art";

# the pages of the checkout, copied where nginx's workers (nobody) may read
# them as scripts/stack does, with a products.json naming this test's
# products
make_path("$art/www");
system('cp', '-R', "$ENV{FG_ROOT}/conf/waiting-room", "$ENV{FG_ROOT}/conf/shop",
       "$art/www/") == 0 or die "cp pages";
sub products_json {
    my ($file, @p) = @_;
    open my $fh, '>', "$file.tmp" or die "$file: $!";
    print $fh json_encode({ products => [ map { { productId => $_->[0],
        name => 'Flux-Gate T-shirt', price => 'EUR 25', stock => $_->[1],
        opensAt => $_->[2] } } @p ] });
    close $fh;
    chmod 0644, "$file.tmp";
    rename "$file.tmp", $file or die "$file: $!";
}
sub catalogue {
    products_json("$art/www/shop/products.json", @_);
    system('chmod', '-R', 'a+rX', "$art/www");
}

my $p = uniq('web');
my $gone = uniq('web-gone');
my $held = uniq('web-held');
set_stock($p, 20);
set_stock($gone, 20);
set_stock($held, 20);
catalogue([$p, 20], [$gone, 20], [$held, 20]);

open my $sfh, '>', "$art/queue.secret" or die $!;
print $sfh join('', map { chr(33 + int rand 90) } 1 .. 48), "\n";
close $sfh;

# one order per second and per product: a line forms at once; the gate's
# pages are the stack's, with their types (the module's locations aside,
# the shop is plain nginx).  Chromium opens connections ahead of need; one
# that never sent a request is not idle to nginx, and a worker shutting
# down waits for its client_header_timeout: 5 s, as conf/nginx.conf has
# it, not the default minute
my $g = gate_start(workers => 1,
    extra => "fluxgate_threshold 1; fluxgate_waiting_room /waiting-room/;\n"
           . "client_header_timeout 5s;\n"
           . "fluxgate_idempotency_ttl 120s; fluxgate_per_user_limit 1;\n"
           . "fluxgate_queue_secret $art/queue.secret;\n"
           . "fluxgate_queue_window 10s;\n"
           . "fluxgate_queue_ticket_ttl 300s;\n",
    server => "location = /queue/status { fluxgate_queue_status; }\n"
            . "location = /queue/control { fluxgate_queue_control; }\n"
            . "include /etc/nginx/mime.types;\n"
            . "location /waiting-room/ { alias $art/www/waiting-room/; expires -1; }\n"
            . "location / { root $art/www/shop; expires -1; }\n");
my $url = gate_url($g);

sub control {
    my ($product, $action) = @_;
    my $res = http_post("$url/queue/control",
        json_encode({ productId => $product, action => $action }),
        { 'X-Idempotency-Key' => uniq('ctl') });
    die "control $action: $res->{status} $res->{content}" unless $res->{status} == 200;
}

# $n shoppers ahead of the browser: their orders queue (or pass) now, and
# each queued one waits in a process of its own as the waiting room would:
# polls its status, and sends its order with the ticket once admitted
my @shoppers;
sub crowd {
    my ($product, $n) = @_;
    my @got;
    for my $i (1 .. $n) {
        my $body = json_encode({ productId => $product, userId => uniq('ahead') });
        my $key = uniq('k');
        my $res = http_post("$url/order", $body, { 'X-Idempotency-Key' => $key });
        push @got, $res->{status};
        my $ticket = eval { json_decode($res->{content})->{ticket} };
        next unless $res->{status} == 302 && $ticket;
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            my $end = time + 60;
            while (time < $end) {
                require HTTP::Tiny;
                my $st = HTTP::Tiny->new(timeout => 10)->get(
                    "$url/queue/status?productId=$product",
                    { headers => { 'X-Queue-Ticket' => $ticket } });
                my $s = eval { json_decode($st->{content}) } || {};
                last if $s->{soldOut} || $s->{closed} || $st->{status} == 400;
                if ($s->{admitted}) {
                    http_post("$url/order", $body, { 'X-Idempotency-Key' => $key,
                                                     'X-Queue-Ticket' => $ticket });
                    last;
                }
                sleep 0.3;
            }
            POSIX::_exit(0);
        }
        push @shoppers, $pid;
    }
    return @got;
}
END { kill 'KILL', @shoppers if @shoppers; waitpid($_, 0) for @shoppers }

# shop.test: the private gate under a name that is not localhost, so its
# pages are not a secure context there (a phone on the shop's LAN address)
my $b = FluxGate::Browser->start(dir => $art,
    args => ['--host-resolver-rules=MAP shop.test 127.0.0.1']);
my $t0 = time;

sub page_state {
    my $s = eval { $b->js('JSON.stringify([location.pathname, '
        . 'document.body ? document.body.getAttribute("data-state") : "", '
        . 'document.body ? document.body.getAttribute("data-position") || "" : ""])') };
    return $s ? @{ json_decode($s) } : ('', '', '');
}

# no sideways scrolling on a 412 px phone, nor on a 320 px one
sub fits_phone {
    my $ok = $b->js('document.documentElement.scrollWidth <= window.innerWidth');
    $b->viewport(320, 640);
    $ok &&= $b->js('document.documentElement.scrollWidth <= window.innerWidth');
    $b->viewport(412, 915);
    return $ok;
}

# the positions the page shows until it leaves the waiting room or ends
# in a final state (or $timeout passes); $shot: a screenshot once it fell
sub follow_line {
    my ($timeout, $shot) = @_;
    my @positions;
    my $deadline = time + $timeout;
    while (time < $deadline) {
        my ($path, $st, $pos) = page_state();
        push @positions, $pos if $path eq '/waiting-room/' && $pos ne ''
            && (!@positions || $positions[-1] ne $pos);
        if ($shot && @positions > 1 && $positions[-1] > 0) {
            $b->screenshot($shot);
            undef $shot;
        }
        last if $path eq '/confirmation.html'
            || $st =~ /^(sold_out|limit_reached|expired|error|no_order|closed)$/;
        sleep 0.2;
    }
    return @positions;
}

sub confirmed_id {
    ok($b->wait_js(60, 'location.pathname === "/confirmation.html"', 0.2),
       'admitted, the page lands on the confirmation')
        or diag "last state: " . join(' ', page_state());
    return $b->wait_js(10, 'document.readyState === "complete"'
                       . ' && document.getElementById("order-id").textContent') // '';
}

my $uuid7 = qr/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

# === 1. the line of a gate of this test's own ==============================

# --- the shop page, over the threshold -------------------------------------
$b->go("$url/?productId=$p");
ok($b->wait_js(10, 'document.body.dataset.state === "ready"'), 'the shop page shows the product');
like($b->js('document.getElementById("stock").textContent'), qr/20 in stock/, 'with its stock');
is($b->js('document.body.dataset.session'), 'none',
   'where the shop has no /signin, the page buys as its own demo user');
ok(fits_phone(), 'the shop page fits a phone\'s width');
$b->screenshot("$art/1-shop.png");

# a dozen in line at one a second: the page's polls (Retry-After at most 5 s)
# see its place before it is admitted
my @ahead = crowd($p, 13);
note "the crowd ahead: @ahead";
ok(scalar(grep { $_ == 302 } @ahead) >= 12,
   'the shoppers ahead are queued (302)') or diag "@ahead";

$b->js('document.getElementById("buy").click()');
ok($b->wait_js(15, 'location.pathname === "/waiting-room/"'),
   'pressing Buy now lands in the waiting room');
my $order = json_decode($b->js('sessionStorage.getItem("fluxgate.order")') // 'null');
ok($order && $order->{key} && $order->{body}{productId} eq $p,
   'with the order and its key saved in sessionStorage');
ok($b->wait_js(15, 'document.body.dataset.position > 0'), 'the page shows a position');
my $ticket = $b->js("sessionStorage.getItem('fluxgate.ticket.$p')") // '';
like($ticket, qr/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/,
     'its ticket, from the gate\'s cookie, kept in sessionStorage');
unlike($b->js('location.href'), qr/ticket/, 'and in no address');
unlike($b->js('document.cookie'), qr/fluxgate_ticket_/,
       'the cookie that brought it is gone');
ok(fits_phone(), 'the waiting room fits a phone\'s width');
$b->screenshot("$art/2-waiting-room.png");

my @positions = follow_line(60, "$art/3-position-fell.png");
note "positions seen: @positions";
ok(@positions && $positions[0] >= 2, "the browser queued behind the crowd (position "
   . ($positions[0] // 'none') . ")");
my @fall = grep { $positions[$_] < $positions[$_ - 1] } 1 .. $#positions;
ok(@fall && !grep({ $positions[$_] > $positions[$_ - 1] } 1 .. $#positions),
   'its position fell, and never rose') or diag "@positions";

# --- admitted: the order goes out with the ticket, once ---------------------
my $id = confirmed_id();
like($id, $uuid7, "which shows the order id ($id)");
ok(fits_phone(), 'the confirmation fits a phone\'s width');
$b->screenshot("$art/4-confirmation.png");
note sprintf "shop to confirmation: %.1f s", time - $t0;
is(redis('HGET', "fg:{$p}:idem:$order->{key}", 'o'), $id,
   'the order under the saved key is the one confirmed');
is(redis('HGET', "fg:{$p}:buyers", $order->{body}{userId}), 1,
   'Redis reserved one unit for the browser\'s user, no more');
sub mine { grep { $_->[1] eq $order->{body}{userId} } @{ order_rows($p) } }
ok(wait_until(60, sub { mine() }), 'the worker recorded its order');
# every order produced so far is in PostgreSQL: a second one would be too
ok(drained(), 'the worker drained the topic');
my @mine = mine();
is(scalar @mine, 1, 'the worker recorded one order for the browser\'s user');
is($mine[0][0], $id, 'the confirmed one') if @mine;

# --- the same shopper again: one per person ---------------------------------
# straight through or through the line, whichever the rate says now: the
# shop page or the waiting room says one per person
$b->go("$url/?productId=$p");
$b->wait_js(10, 'document.body.dataset.state === "ready"');
$b->js('document.getElementById("buy").click()');
ok($b->wait_js(40, 'document.body.dataset.state === "limit_reached"', 0.2),
   'a second Buy now by the same shopper: one per person')
    or diag "state: " . join(' ', page_state());

# --- an order whose first try is still in flight ----------------------------
# a pending claim under its key when its ticket is admitted: the page says
# so, asks again with the same key, and shows the first try's order once
# it is done, never a second one.  The ticket comes in the address's
# fragment (a navigation: a link, a form), as the gate's Location has it
my $slow = uniq('web-slow');
set_stock($slow, 5);
crowd($slow, 2);
my ($key, $user) = (uniq('k'), uniq('slow'));
my $body = { productId => $slow, userId => $user, quantity => 1 };
my $res = http_post("$url/order", json_encode($body), { 'X-Idempotency-Key' => $key });
my $slow_ticket = eval { json_decode($res->{content})->{ticket} } // '';
is($res->{status}, 302, 'an order queued by the shop page');
like($res->{headers}{location} // '', qr{/waiting-room/\?productId=\Q$slow\E#ticket=\Q$slow_ticket\E$},
     'the gate\'s Location carries the ticket in the fragment');
my $claim = pending_claim($slow, key => $key, user => $user, age_ms => 0);
$b->js('sessionStorage.setItem("fluxgate.order", ' . json_encode(json_encode(
    { body => $body, key => $key, back => '/', done => '/confirmation.html' })) . ')');
$b->go("$url/waiting-room/?productId=$slow#ticket=$slow_ticket");
ok($b->wait_js(10, 'location.hash === "" && document.body.dataset.state !== "loading"'),
   'the page takes the ticket out of the address');
ok($b->wait_js(30, 'document.body.dataset.state === "in_progress"', 0.2),
   'admitted while its first try is in flight: "being processed"')
    or diag "state: " . join(' ', page_state());
$b->screenshot("$art/7-in-progress.png");
redis('HSET', "fg:{$slow}:idem:$key", 's', '200', 'r', 'success');
redis('ZREM', "fg:{$slow}:pending", $key);
ok($b->wait_js(15, 'location.pathname === "/confirmation.html"'
               . ' && document.getElementById("order-id").textContent', 0.2),
   'the first try done, the page lands on the confirmation');
is($b->js('document.getElementById("order-id").textContent'), $claim->{orderId},
   'of the first try\'s order');

# --- sold out while in line ------------------------------------------------
$b->go("$url/?productId=$gone");
$b->wait_js(10, 'document.body.dataset.state === "ready"');
crowd($gone, 6);
$b->js('document.getElementById("buy").click()');
ok($b->wait_js(15, 'location.pathname === "/waiting-room/" && document.body.dataset.position > 0'),
   'a second order waits in line');
set_stock($gone, 0);
ok($b->wait_js(20, 'document.body.dataset.state === "sold_out"', 0.2),
   'the product sells out: the waiting room says so at its next poll')
    or diag "state: " . join(' ', page_state());
like($b->js('document.getElementById("status").textContent'), qr/sold out/i,
     'in words');
$b->screenshot("$art/5-sold-out-in-line.png");

# --- paused, then closed, while in line --------------------------------------
# the ticket in an older gate's address (?ticket=): taken, and removed
crowd($held, 8);
my $hkey = uniq('k');
my $hbody = { productId => $held, userId => uniq('held'), quantity => 1 };
$res = http_post("$url/order", json_encode($hbody), { 'X-Idempotency-Key' => $hkey });
my $hticket = eval { json_decode($res->{content})->{ticket} } // '';
is($res->{status}, 302, 'a place in a line of eight');
$b->go("$url/");
$b->js('sessionStorage.setItem("fluxgate.order", ' . json_encode(json_encode(
    { body => $hbody, key => $hkey, back => '/', done => '/confirmation.html' })) . ')');
(my $hq = $hticket) =~ s/([^A-Za-z0-9._~-])/sprintf '%%%02X', ord $1/ge;
control($held, 'pause');
$b->go("$url/waiting-room/?productId=$held&ticket=$hq");
ok($b->wait_js(20, 'document.body.dataset.state === "paused" && document.body.dataset.position > 0', 0.2),
   'the sale paused: the page says so, and keeps the place')
    or diag "state: " . join(' ', page_state());
unlike($b->js('location.href'), qr/ticket=/, 'the ticket is out of the address');
like($b->js('document.getElementById("status").textContent'), qr/paused/i, 'in words');
$b->screenshot("$art/8-paused.png");
control($held, 'close');
ok($b->wait_js(20, 'document.body.dataset.state === "closed"', 0.2),
   'the sale closed: the page says so at its next poll')
    or diag "state: " . join(' ', page_state());
like($b->js('document.getElementById("status").textContent'), qr/closed/i, 'in words');

# --- no Web Crypto: a page that is not a secure context --------------------
# plain http at a name other than localhost: crypto.subtle is missing, so
# the proof of work cannot be done, and the page says so
my $insecure = "http://shop.test:$g->{port}";
$b->go("$insecure/");
is($b->js('window.isSecureContext'), JSON::PP::false(), 'http://shop.test is not a secure context');
$b->js('sessionStorage.setItem("fluxgate.order", ' . json_encode(json_encode(
    { body => { productId => $p, userId => uniq('lan') }, key => uniq('k'),
      back => '/', done => '/confirmation.html' })) . ')');
$b->go("$insecure/waiting-room/?productId=$p#challenge=abc.def&bits=8");
ok($b->wait_js(10, 'document.body.dataset.state === "insecure"', 0.2),
   'a challenge there: the page says it cannot check the browser')
    or diag "state: " . join(' ', page_state());
like($b->js('document.getElementById("status").textContent'), qr/https/,
     'and how to do it: over https');
$b->screenshot("$art/14-insecure.png");

# --- the shop page on a sold-out product -----------------------------------
set_stock($gone, 0);
$b->go("$url/?productId=$gone");
$b->wait_js(10, 'document.body.dataset.state === "ready"');
$b->js('document.getElementById("buy").click()');
ok($b->wait_js(10, 'document.body.dataset.state === "sold_out"'),
   'Buy now on a sold-out product: the shop page says sold out, no waiting room')
    or diag "state: " . join(' ', page_state());
$b->screenshot("$art/6-shop-sold-out.png");
gate_stop($g);

# === 2. the stack's gate as shipped: signed in, a challenge, a place =======

my $shop = $ENV{FLUXGATE_URL};
my $www = "$ENV{FG_RUN_DIR}/www/shop/products.json";
copy($www, "$art/products.json.stack") or die "$www: $!";
END { rename "$art/products.json.stack", $www if $art && -f "$art/products.json.stack" }

my $signed = uniq('signed');
my $sale = uniq('sale');
my $opens;          # set below: $sale's opening

# a line on the stack's gate: at one admission a second (the product's own
# rate), orders pass until the saved-up turns are gone (the burst) and the
# gate challenges; at once paused, so nobody is admitted while the
# browser joins, and eight shoppers take places ahead of it.  Should the
# head have passed the line before the pause came (a stalled machine),
# resume and make the line again.
admin_init($signed, 5000);
queue_control($signed, 'rate', rate => 1);
my ($passed, @ahead2) = (0);
my $deadline = time + 120;
while (time < $deadline) {
    my $r;
    do {
        $r = shop_order($signed, user => uniq('early'), solve => 0);
        $passed++ if $r->{status} == 200;
    } while ($r->{status} == 200 && time < $deadline);
    is($r->{json}{status}, 'challenge', 'the stack\'s gate challenges once the line is busy')
        or last;
    queue_control($signed, 'pause');
    @ahead2 = map { shop_order($signed, user => uniq('ahead')) } 1 .. 8;
    last if ($ahead2[0]{json}{position} // 0) >= 1;
    queue_control($signed, 'resume');
}
note "$passed orders passed before the line formed";
is(scalar(grep { $_->{status} == 302 && $_->{json}{status} eq 'queued' && $_->{solved} } @ahead2), 8,
   'eight shoppers ahead did the work and are in line');

products_json($www, [$signed, 5000]);

$b->go("$shop/?productId=$signed");
ok($b->wait_js(10, 'document.body.dataset.state === "ready"'
               . ' && document.body.dataset.session === "signed_out"'),
   'the demo shop asks to sign in') or diag "state: " . join(' ', page_state());
is($b->js('document.getElementById("buy").disabled'), JSON::PP::true(),
   'Buy now waits for it');
my $name = uniq('shopper');
$b->js('document.getElementById("user").value = ' . json_encode($name)
       . '; document.getElementById("signin-button").click()');
ok($b->wait_js(10, 'document.body.dataset.session === "signed_in"'), 'signed in');
like($b->js('document.getElementById("who").textContent'), qr/\Q$name\E/, 'by name');
unlike($b->js('document.cookie'), qr/shop_session/,
       'the session cookie is out of the page\'s reach (HttpOnly)');
$b->screenshot("$art/9-signed-in.png");

$b->js('document.getElementById("buy").click()');
ok($b->wait_js(15, 'location.pathname === "/waiting-room/"'),
   'Buy now on the busy product: the waiting room');
my $order2 = json_decode($b->js('sessionStorage.getItem("fluxgate.order")') // 'null') || {};
ok($b->wait_js(90, 'document.body.dataset.state === "paused"'
               . ' && document.body.dataset.position > 0', 0.2),
   'after the proof of work, a place in the paused line')
    or diag "state: " . join(' ', page_state());
my $trace = json_decode($b->js('JSON.stringify(window.fluxgateWaitingRoom)'));
ok(grep({ $_ eq 'challenge' } @{ $trace->{states} }),
   'the page went through "Checking your browser"') or diag "@{ $trace->{states} }";
is($trace->{proofs}[0]{bits}, 16, 'and solved a 16-bit challenge');
note sprintf "proof of work: %d hashes in %d ms (%s)",
    @{ $trace->{proofs}[0] || {} }{qw(tried ms where)};
my $pos = $b->js('document.body.dataset.position');
cmp_ok($pos, '>=', 9, "behind the eight ahead (position $pos)");
my $ticket2 = $b->js("sessionStorage.getItem('fluxgate.ticket.$signed')") // '';
like($ticket2, qr/\./, 'its ticket kept in sessionStorage');
is(ticket_buyer($ticket2), $name, 'a ticket of the signed-in user');
$b->screenshot("$art/10-paused-line.png");

queue_control($signed, 'resume');
my @positions2 = follow_line(90, "$art/11-line-moves.png");
note "positions seen: @positions2";
my $id2 = confirmed_id();
like($id2, $uuid7, "the sale resumed: admitted, the order placed ($id2)");
like($b->js('document.getElementById("what").textContent'), qr/\Q$name\E/,
     'for the signed-in shopper');
is(redis('HGET', "fg:{$signed}:idem:$order2->{key}", 'o'), $id2,
   'the order under the saved key is the one confirmed');
is(redis('HGET', "fg:{$signed}:idem:$order2->{key}", 'u'), $name,
   'bought as the signed-in user');

# nginx's access log (buffered: flushed within a second) has the order's
# line: then every line of this sale is there
my $log = "$ENV{FG_RUN_DIR}/logs/nginx-access.log";
sub slurp { open my $fh, '<', $_[0] or return ''; local $/; <$fh> }
ok(wait_until(20, sub { index(slurp($log), $id2) >= 0 }),
   'the access log has the order\'s line');
my @lines = grep { /\Q$signed\E/ || /\Q$id2\E/ } split /\n/, slurp($log);
cmp_ok(scalar(@lines), '>', 2, scalar(@lines) . ' lines of this sale in the access log');
is(scalar(grep { index($_, $ticket2) >= 0 } split /\n/, slurp($log)), 0,
   'the ticket is in no line of the access log');
is(scalar(grep { /ticket=/ } @lines), 0, 'no line of the sale has "ticket="');
is(scalar(grep { /challenge=/ } @lines), 0, 'nor "challenge="');

# === 3. a scheduled sale ====================================================

# announced 40 s ahead: enough for the page to do its proof of work and
# join the pre-queue on a slow machine; three others join it too.  Paused
# from before the opening, so that nobody is admitted until the page has
# shown the place the opening drew for it (a place drawn first would be
# admitted within a second of the opening, before any poll could show it)
$opens = int(time) + 40;
admin_init($sale, 50, opensAt => $opens);
queue_control($sale, 'rate', rate => 1);
my @pre = map { shop_order($sale, user => uniq('early')) } 1 .. 3;
is(scalar(grep { $_->{status} == 302 && $_->{json}{status} eq 'prequeue' } @pre), 3,
   'three shoppers in the pre-queue') or diag explain [ map { $_->{content} } @pre ];
queue_control($sale, 'pause');
products_json($www, [$sale, 50, $opens]);

$b->go("$shop/?productId=$sale");
ok($b->wait_js(10, 'document.body.dataset.state === "ready"'
               . ' && document.body.dataset.session === "signed_in"'),
   'the shop, still signed in');
like($b->js('document.getElementById("opens").textContent'), qr/opens in \d+:\d\d/,
     'says when the sale opens');
is($b->js('document.getElementById("buy").textContent'), 'Join the line',
   'and offers to join the line');
$b->js('document.getElementById("buy").click()');
ok($b->wait_js(60, 'document.body.dataset.state === "prequeue"', 0.2),
   'the waiting room: a place in the pre-queue')
    or diag "state: " . join(' ', page_state());
my $left = $b->js('Number(document.body.dataset.opensIn)');
like($b->js('document.getElementById("countdown").textContent'),
     qr/^The sale opens in \d+:\d\d$/, 'a countdown to the opening');
cmp_ok($left, '>', 0, "$left s to go");
cmp_ok(abs($left - ($opens - time)), '<=', 3, 'the gate\'s own figure');
ok($b->wait_js(5, "Number(document.body.dataset.opensIn) < $left", 0.2),
   'ticking') if $left > 1;
$b->screenshot("$art/12-countdown.png");
my $order3 = json_decode($b->js('sessionStorage.getItem("fluxgate.order")') // 'null') || {};

ok($b->wait_js($opens - time + 30, 'document.body.dataset.position > 0', 0.2),
   'the sale open: the page shows the place the opening drew')
    or diag "state: " . join(' ', page_state());
my $drawn = $b->js('document.body.dataset.position');
cmp_ok($drawn, '>=', 1, "place $drawn");
cmp_ok($drawn, '<=', 4, 'among the four who came before the opening');
is($b->js('document.getElementById("position").textContent'), $drawn,
   'shown as "Your place"');
$b->screenshot("$art/13-drawn-place.png");
queue_control($sale, 'resume');
my $id3 = confirmed_id();
like($id3, $uuid7, "then the confirmation ($id3)");
is(redis('HGET', "fg:{$sale}:idem:$order3->{key}", 'o'), $id3,
   'of the order under the saved key');

$b->stop;
note sprintf "browser test: %.1f s", time - $t0;
done_testing();

# the buyer a ticket was signed for (its payload: product|buyer|...)
sub ticket_buyer {
    my ($t) = @_;
    my ($payload) = split /\./, $t // '';
    $payload =~ tr{-_}{+/};
    $payload .= '=' x ((4 - length($payload) % 4) % 4);
    require MIME::Base64;
    return (split /\|/, MIME::Base64::decode_base64($payload))[1];
}
