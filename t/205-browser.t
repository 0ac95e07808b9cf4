# The waiting room in a real browser: a headless Chromium (Debian's
# `chromium`, driven over the DevTools protocol by FluxGate::Browser) opens
# the demo shop page while its product is over fluxgate_threshold, presses
# "Buy now", is sent (302) to the waiting room with a real ticket, watches
# its position fall as the gate admits the line ahead of it in order, is
# admitted, re-sends the saved order with the ticket and the same key, and
# lands on the confirmation: exactly one order recorded.  Then the sold-out
# paths: a product that sells out while the page waits, and the shop page
# on a sold-out product.
#
# The screenshots are kept in DIR/artifacts/205-browser/ of the test stack
# (make test FG_KEEP=1 keeps DIR); docs/waiting-room.png is one of them.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use File::Path qw(make_path);
use POSIX ();
use Time::HiRes qw(time sleep);
use FluxGate::Test;
use FluxGate::Fleet;
use FluxGate::Browser;

if (my $why = FluxGate::Browser::missing()) {
    skip_all_missing($why);
}

my $art = "$ENV{FG_RUN_DIR}/artifacts/205-browser";
make_path($art);
chmod 0755, "$ENV{FG_RUN_DIR}/artifacts", $art;
note "screenshots in $art";

# the module of this build speaks the FIFO queue's directives?
my $module = $ENV{FG_MODULE} || "$ENV{FG_ROOT}/build/ngx_fluxgate_module.so";
my $queue = `grep -c fluxgate_queue_status $module 2>/dev/null` > 0;

# the pages of the checkout, copied where nginx's workers (nobody) may read
# them as scripts/stack does, with a products.json naming this test's
# products
make_path("$art/www");
system('cp', '-R', "$ENV{FG_ROOT}/conf/waiting-room", "$ENV{FG_ROOT}/conf/shop",
       "$art/www/") == 0 or die "cp pages";
sub catalogue {
    my @p = @_;
    open my $fh, '>', "$art/www/shop/products.json" or die $!;
    print $fh json_encode({ products => [ map { { productId => $_->[0],
        name => 'Flux-Gate T-shirt', price => 'EUR 25', stock => $_->[1] } } @p ] });
    close $fh;
    system('chmod', '-R', 'a+rX', "$art/www");
}

my $p = uniq('web');
my $gone = uniq('web-gone');
set_stock($p, 20);
set_stock($gone, 20);
catalogue([$p, 20], [$gone, 20]);

open my $sfh, '>', "$art/queue.secret" or die $!;
print $sfh join('', map { chr(33 + int rand 90) } 1 .. 48), "\n";
close $sfh;

# one order per second and per product: a line forms at once; the gate's
# pages are the stack's, with their types (the module's locations aside,
# the shop is plain nginx)
my $g = gate_start(workers => 1,
    extra => "fluxgate_threshold 1; fluxgate_waiting_room /waiting-room/;\n"
           . "fluxgate_idempotency_ttl 120s; fluxgate_per_user_limit 1;\n"
           . ($queue ? "fluxgate_queue_secret $art/queue.secret;\n"
                     . "fluxgate_queue_window 10s;\n"
                     . "fluxgate_queue_ticket_ttl 300s;\n" : ''),
    server => ($queue ? "location = /queue/status { fluxgate_queue_status; }\n" : '')
            . "include /etc/nginx/mime.types;\n"
            . "location /waiting-room/ { alias $art/www/waiting-room/; expires -1; }\n"
            . "location / { root $art/www/shop; expires -1; }\n");
my $url = gate_url($g);

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
                my $st = http_get("$url/queue/status?productId=$product&ticket=$ticket");
                my $s = eval { json_decode($st->{content}) } || {};
                last if $s->{soldOut} || $st->{status} == 400;
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

my $b = FluxGate::Browser->start(dir => $art);
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

# --- the shop page, over the threshold -------------------------------------
$b->go("$url/?productId=$p");
ok($b->wait_js(10, 'document.body.dataset.state === "ready"'), 'the shop page shows the product');
like($b->js('document.getElementById("stock").textContent'), qr/20 in stock/, 'with its stock');
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
my $search = $b->js('location.search');

my (@positions, $admitted_at, $last);
SKIP: {
    skip_missing('the module has no FIFO queue (fluxgate_queue_status) in this build', 6)
        unless $queue;
    like($search, qr/[?&]ticket=[^&]+/, 'the waiting room has a ticket in its address');
    ok($b->wait_js(15, 'document.body.dataset.position > 0'), 'the page shows a position');
    ok(fits_phone(), 'the waiting room fits a phone\'s width');
    $b->screenshot("$art/2-waiting-room.png");
    my $shot = 0;
    my $deadline = time + 45;
    while (time < $deadline) {
        my ($path, $st, $pos) = page_state();
        $last = $st;
        push @positions, $pos if $pos ne '' && (!@positions || $positions[-1] ne $pos);
        if (!$shot && @positions > 1 && $positions[-1] > 0) {
            $b->screenshot("$art/3-position-fell.png");
            $shot = 1;
        }
        last if $path eq '/confirmation.html' || $st =~ /^(sold_out|limit_reached|expired|error|no_order)$/;
        sleep 0.2;
    }
    note "positions seen: @positions";
    ok($positions[0] >= 2, "the browser queued behind the crowd (position $positions[0])");
    my @fall = grep { $positions[$_] < $positions[$_ - 1] } 1 .. $#positions;
    ok(@fall && !grep({ $positions[$_] > $positions[$_ - 1] } 1 .. $#positions),
       'its position fell, and never rose') or diag "@positions";
}

# --- admitted: the order goes out with the ticket, once ---------------------
ok($b->wait_js(45, 'location.pathname === "/confirmation.html"', 0.2),
   'admitted, the page lands on the confirmation') or diag "last state: " . join(' ', page_state());
my $id = $b->wait_js(10, 'document.readyState === "complete"'
                     . ' && document.getElementById("order-id").textContent') // '';
like($id, qr/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
     "which shows the order id ($id)");
ok(fits_phone(), 'the confirmation fits a phone\'s width');
$b->screenshot("$art/4-confirmation.png");
my $wait = time - $t0;
note sprintf "shop to confirmation: %.1f s", $wait;
is(redis('HGET', "fg:{$p}:idem:$order->{key}", 'o'), $id,
   'the order under the saved key is the one confirmed');
sub mine { grep { $_->[1] eq $order->{body}{userId} } @{ order_rows($p) } }
# every order produced so far is in PostgreSQL: a second one would be too
ok(drained(), 'the worker drained the topic');
my @mine = mine();
is(scalar @mine, 1, 'the worker recorded one order for the browser\'s user');
is($mine[0][0], $id, 'the confirmed one') if @mine;

# --- the same shopper again: one per person ---------------------------------
ok(wait_no_line($p), 'the threshold\'s second passed: no line');
$b->go("$url/?productId=$p");
$b->wait_js(10, 'document.body.dataset.state === "ready"');
$b->js('document.getElementById("buy").click()');
ok($b->wait_js(10, 'document.body.dataset.state === "limit_reached"'),
   'a second Buy now by the same shopper: the shop page says one per person')
    or diag "state: " . join(' ', page_state());

# --- in the waiting room: one per person, and a first try still in flight -
SKIP: {
    skip_missing('the module has no FIFO queue in this build', 6) unless $queue;
    # the same shopper in line again, admitted, and told the limit
    crowd($p, 3);
    $b->go("$url/?productId=$p");
    $b->wait_js(10, 'document.body.dataset.state === "ready"');
    $b->js('document.getElementById("buy").click()');
    ok($b->wait_js(15, 'location.pathname === "/waiting-room/"'), 'the same shopper in line again');
    ok($b->wait_js(30, 'document.body.dataset.state === "limit_reached"', 0.2),
       'admitted, the waiting room says one per person')
        or diag "state: " . join(' ', page_state());

    # an order whose first try is still being decided when its ticket is
    # admitted (a pending claim under its key): the page says so, asks
    # again with the same key, and shows the first try's order once it is
    # done, never a second one
    my $slow = uniq('web-slow');
    set_stock($slow, 5);
    crowd($slow, 2);
    my ($key, $user) = (uniq('k'), uniq('slow'));
    my $body = { productId => $slow, userId => $user, quantity => 1 };
    my $res = http_post("$url/order", json_encode($body), { 'X-Idempotency-Key' => $key });
    my $ticket = eval { json_decode($res->{content})->{ticket} } // '';
    is($res->{status}, 302, 'an order queued by the shop page');
    my $claim = pending_claim($slow, key => $key, user => $user, age_ms => 0);
    $b->js('sessionStorage.setItem("fluxgate.order", ' . json_encode(json_encode(
        { body => $body, key => $key, back => '/', done => '/confirmation.html' })) . ')');
    $ticket =~ s/([^A-Za-z0-9._~-])/sprintf '%%%02X', ord $1/ge;
    $b->go("$url/waiting-room/?productId=$slow&ticket=$ticket");
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
}

# --- sold out while in line ------------------------------------------------
SKIP: {
    skip_missing('the module has no FIFO queue in this build', 3) unless $queue;
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
}

# --- the shop page on a sold-out product -----------------------------------
set_stock($gone, 0);
ok(wait_no_line($gone), 'the previous order\'s second of the threshold passed: no line');
$b->go("$url/?productId=$gone");
$b->wait_js(10, 'document.body.dataset.state === "ready"');
$b->js('document.getElementById("buy").click()');
ok($b->wait_js(10, 'document.body.dataset.state === "sold_out"'),
   'Buy now on a sold-out product: the shop page says sold out, no waiting room')
    or diag "state: " . join(' ', page_state());
$b->screenshot("$art/6-shop-sold-out.png");

$b->stop;
gate_stop($g);
note sprintf "browser test: %.1f s", time - $t0;
done_testing();
