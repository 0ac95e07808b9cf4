# fluxgate-reconcile --repair settles the pending claims whose Kafka
# outcome nginx never learnt, as the v2 contract says: a claim older than
# the claim deadline, once the worker's group has committed the topic past
# a snapshot taken after that deadline, is done (recorded in PostgreSQL:
# its key replays 200) or released (stock back only within its
# generation, the buyer's count back, and the waiting-room turn its order
# spent).  Younger claims, and every claim while the worker lags, are left
# alone.
#
# The claims are made in Redis exactly as lua/order.lua leaves them
# (pending_claim); "recorded" means a real order message consumed by the
# stack's worker.  The stack's own settler is stopped meanwhile, so what
# happens here is this command's doing.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use FluxGate::Test;
use FluxGate::Worker;

like(svc('stop', 'settler'), qr/stopped|not running/, 'the stack\'s settler is stopped for this file');
END { svc('start', 'worker'); svc('start', 'settler') }

sub buyer { my $n = redis('HGET', "fg:{$_[0]}:buyers", $_[1]); $n eq '' ? 0 : $n }

my $worker_mark = log_mark();

# (a) recorded in PostgreSQL -> done; the key replays 200
{
    my $p = uniq('p681a');
    my $g = set_stock($p, 10);
    my $c = pending_claim($p, user => 'ua', quantity => 2, age_ms => 60_000);
    produce_claim($p, $c, 10);
    ok(wait_until(30, sub { claim_recorded($c) }), '(a) the worker recorded the claim\'s order');

    my ($rc, $out, $err) = run_reconcile('--repair', '-p', $p);
    is($rc, 0, '(a) exit 0: books balanced after settling');
    like($err, qr/settled claim \Q$c->{key}\E of \Q$p\E \(order $c->{orderId}, user ua, 2 units, generation $g, reserved \d+ s ago\): recorded in PostgreSQL, the key replays 200/,
         '(a) the log says it was settled as recorded');
    is(claim_state($p, $c), '200', '(a) the key is done and no longer listed as pending');
    my $ttl = redis('PTTL', "fg:{$p}:idem:$c->{key}");
    ok($ttl > 0 && $ttl <= 60_000, "(a) with the idempotency TTL (60000 ms default; $ttl left)");
    is(redis('GET', "fg:{$p}:stock"), 8, '(a) the stock stays taken');
    is(buyer($p, 'ua'), 2, '(a) and so does the buyer\'s count');
    like($out, qr/^\Q$p\E\s+$g\s+10\s+8\s+0\s+0\s+0\s+2\s+\+0\s+balanced\s+1\s+0\s*$/m,
         '(a) the table: 10 set = 8 in Redis + 2 recorded, 1 settled done');

    my $res = http_post("$ENV{FLUXGATE_URL}/order",
        json_encode({ productId => $p, userId => 'ua', quantity => 2 }),
        { 'X-Idempotency-Key' => $c->{key} });
    is($res->{status}, 200, '(a) a retry with the key gets 200');
    is(eval { json_decode($res->{content})->{orderId} } // '', $c->{orderId},
       '(a) with the claim\'s orderId');
    is(psql("select count(*) from orders where product_id = '$p'"), 1,
       '(a) and no second order');
}

# (b) never produced -> released: stock back in its generation
{
    my $p = uniq('p681b');
    set_stock($p, 10);
    redis('HSET', "fg:{$p}:buyers", 'ub', 1);       # an earlier purchase
    my $c = pending_claim($p, user => 'ub', quantity => 3, age_ms => 60_000);
    my $c2 = pending_claim($p, user => 'ub2', quantity => 1, age_ms => 45_000);
    is(redis('GET', "fg:{$p}:stock"), 6, '(b) two claims hold 4 of 10');

    my ($rc, $out, $err) = run_reconcile('--repair', '-p', $p);
    is($rc, 0, '(b) exit 0');
    like($err, qr/settled claim \Q$c->{key}\E of \Q$p\E .*: not in PostgreSQL, released: units back/,
         '(b) the log says released, units back');
    is(claim_state($p, $c), 'gone', '(b) the claim is gone: a retry of the key is a new order');
    is(claim_state($p, $c2), 'gone', '(b) so is the other one');
    is(redis('GET', "fg:{$p}:stock"), 10, '(b) stock back to 10');
    is(buyer($p, 'ub'), 1, '(b) the buyer\'s count loses the claim\'s 3, keeps the earlier 1');
    is(redis('HEXISTS', "fg:{$p}:buyers", 'ub2'), 0, '(b) a count that reaches 0 is removed');
    is(claim_recorded($c), 0, '(b) nothing was recorded');
    like($out, qr/^\Q$p\E\s+\d+\s+10\s+10\s+0\s+0\s+0\s+0\s+\+0\s+balanced\s+0\s+2\s*$/m,
         '(b) the table: balanced, 2 released');

    # a retry of the released key, as the client whose order got no
    # answer would send it: decided afresh, a new order, recorded once
    my $res = http_post("$ENV{FLUXGATE_URL}/order",
        json_encode({ productId => $p, userId => 'ub', quantity => 3 }),
        { 'X-Idempotency-Key' => $c->{key} });
    my $b = eval { json_decode($res->{content}) } || {};
    is($res->{status}, 200, '(b) a retry of the released key: 200') or diag($res->{content});
    is($b->{status}, 'success', '(b) decided, not replayed');
    ok(!$res->{headers}{'idempotent-replayed'}, '(b) no Idempotent-Replayed header');
    isnt($b->{orderId} // '', $c->{orderId}, '(b) a new orderId, not the released claim\'s');
    is(redis('GET', "fg:{$p}:stock"), 7, '(b) its 3 units taken once');
    is(buyer($p, 'ub'), 4, '(b) the buyer\'s count: the earlier 1 and these 3');
    ok(drained(), '(b) the worker drained the topic');
    is(join(' ', psql("select id from orders where product_id = '$p'")), $b->{orderId} // '-',
       '(b) PostgreSQL has the new order, once, and nothing of the released claim');
}

# (c) a claim of an older generation -> released, the new generation's
# stock untouched
{
    my $p = uniq('p681c');
    my $g1 = set_stock($p, 10);
    my $c = pending_claim($p, user => 'uc', quantity => 4, age_ms => 60_000);
    my $g2 = set_stock($p, 5);
    is($g2, $g1 + 1, '(c) a restock started generation ' . ($g1 + 1));

    my ($rc, $out, $err) = run_reconcile('--repair', '-p', $p);
    is($rc, 0, '(c) exit 0');
    like($err, qr/settled claim \Q$c->{key}\E of \Q$p\E .*generation $g1, .*released: its generation is over/,
         '(c) the log says its generation is over');
    is(claim_state($p, $c), 'gone', '(c) the claim is released');
    is(redis('GET', "fg:{$p}:stock"), 5, '(c) generation 2 keeps its 5: the 4 units are not added to it');
    is(buyer($p, 'uc'), 0, '(c) the buyer\'s count is given back');
    like($out, qr/^\Q$p\E\s+$g2\s+5\s+5\s+0\s+0\s+0\s+0\s+\+0\s+balanced/m,
         '(c) generation 2 balances');
}

# (d) a claim younger than the deadline is left alone
{
    my $p = uniq('p681d');
    set_stock($p, 10);
    my $c = pending_claim($p, user => 'ud', quantity => 1, age_ms => 5_000);

    my ($rc, $out, $err) = run_reconcile('--repair', '-p', $p);
    is($rc, 0, '(d) exit 0: the pending unit is accounted for');
    is(claim_state($p, $c), 'pending:listed', '(d) a 5 s old claim stays pending (deadline 30 s)');
    is(redis('GET', "fg:{$p}:stock"), 9, '(d) its unit stays reserved');
    like($out, qr/^\Q$p\E\s+\d+\s+10\s+9\s+1\s+1\s+0\s+0\s+\+0\s+balanced/m,
         '(d) the table: 1 pending claim of 1 unit, none overdue, balanced');
    unlike($err, qr/settled claim/, '(d) nothing settled');

    ($rc, $out, $err) = run_reconcile('--repair', '--claim-deadline', 2000, '-p', $p);
    is(claim_state($p, $c), 'gone', '(d) with --claim-deadline 2000 the same claim is overdue and released');
    is(redis('GET', "fg:{$p}:stock"), 10, '(d) and its unit is back');
}

# reading the group's committed offsets did not join the group: a member
# joining would have made the worker's partitions move (logged)
unlike(log_since($worker_mark), qr/Kafka: (revoked|lost|assigned)/,
       'four reconcile runs: the worker\'s partitions never moved');

# (e) the worker stopped: nothing is settled, not even what looks absent
# from PostgreSQL; once it is back, both claims are settled
{
    my $p = uniq('p681e');
    set_stock($p, 10);
    like(svc('stop', 'worker'), qr/stopped/, '(e) worker stopped');
    my $sent = pending_claim($p, user => 'ue', quantity => 1, age_ms => 60_000);
    my $lost = pending_claim($p, user => 'ue2', quantity => 2, age_ms => 60_000);
    produce_claim($p, $sent, 10);

    my $t0 = time;
    my ($rc, $out, $err) = run_reconcile('--repair', '--settle-wait', 3000, '-p', $p);
    is($rc, 0, '(e) exit 0: the pending units account for the difference');
    like($err, qr/not settling 2 overdue claims: group fluxgate-inventory has not committed topic \S+ up to the snapshot taken after their deadline within 3000 ms \(\S+\[\d+\] committed up to \d+ of \d+\): fluxgate-worker is stopped or lagging.*nothing settled/,
         '(e) the log says why nothing was settled');
    ok(time - $t0 < 20, '(e) and it waited about --settle-wait, not forever');
    is(claim_state($p, $sent), 'pending:listed', '(e) the produced claim is still pending');
    is(claim_state($p, $lost), 'pending:listed',
       '(e) the claim PostgreSQL does not have is NOT released while the worker lags');
    is(redis('GET', "fg:{$p}:stock"), 7, '(e) stock untouched');

    like(svc('start', 'worker'), qr/started/, '(e) worker started again');
    ($rc, $out, $err) = run_reconcile('--repair', '-p', $p);
    is($rc, 0, '(e) exit 0 once the worker caught up');
    is(claim_state($p, $sent), '200', '(e) the produced claim is done');
    is(claim_state($p, $lost), 'gone', '(e) the other one released');
    is(redis('GET', "fg:{$p}:stock"), 9, '(e) stock 10 - 1 recorded');
    like($out, qr/^\Q$p\E\s+\d+\s+10\s+9\s+0\s+0\s+0\s+1\s+\+0\s+balanced\s+1\s+1\s*$/m,
         '(e) balanced: 1 done, 1 released');
}

# (f) a claim whose order spent a waiting-room turn (lua/order.lua keeps
# the turn and the line's epoch in the idem hash) -> released with its
# turn: the ticket may order again; another order's turn stays spent
{
    my $p = uniq('p681f');
    set_stock($p, 10);
    my $c = pending_claim($p, user => 'uf', quantity => 1, age_ms => 60_000);
    my $spent = "fg:{$p}:q:7:spent";
    redis('HSET', "fg:{$p}:idem:$c->{key}", 'k', 42, 'e', 7);
    redis('SETBIT', $spent, 42, 1);
    redis('SETBIT', $spent, 43, 1);

    my ($rc, $out, $err) = run_reconcile('--repair', '-p', $p);
    is($rc, 0, '(f) exit 0');
    like($err, qr/settled claim \Q$c->{key}\E of \Q$p\E .*: not in PostgreSQL, released: units back/,
         '(f) the log says released, units back');
    is(claim_state($p, $c), 'gone', '(f) the claim is released');
    is(redis('GET', "fg:{$p}:stock"), 10, '(f) stock back to 10');
    is(redis('GETBIT', $spent, 42), 0, '(f) the turn its order spent is usable again');
    is(redis('GETBIT', $spent, 43), 1, '(f) another order\'s turn stays spent');
}

# (g) a claim whose order the worker recorded as `rejected` (its generation
# could not cover it: Redis lost acknowledged writes).  The shop sold
# nothing for it, so its key must not replay a success; the units Redis
# still counts as sold are drift, said so.
{
    my $p = uniq('p681g');
    my $g = set_stock($p, 10);
    my $c1 = pending_claim($p, user => 'ug1', quantity => 1, age_ms => 60_000);
    my $c2 = pending_claim($p, user => 'ug2', quantity => 1, age_ms => 60_000);
    # the generation holds 1 as PostgreSQL learns it: the second is rejected
    produce_claim($p, $c1, 1);
    produce_claim($p, $c2, 1);
    ok(drained(), '(g) the worker drained the topic');
    is(psql("select status from orders where id = '$c2->{orderId}'"), 'rejected',
       '(g) the second claim\'s order is recorded rejected');

    my ($rc, $out, $err) = run_reconcile('--repair', '-p', $p);
    is($rc, 1, '(g) exit 1: drift');
    like($err, qr/drift \+1 with nothing in flight/, '(g) the unit Redis counts and the shop never sold is drift');
    isnt(claim_state($p, $c2), 'pending:listed', '(g) the claim is settled, no longer pending');
    is(claim_state($p, $c1), '200', '(g) the accepted one is done');
    my $res = http_post("$ENV{FLUXGATE_URL}/order",
        json_encode({ productId => $p, userId => 'ug2', quantity => 1 }),
        { 'X-Idempotency-Key' => $c2->{key} });
    my $b = eval { json_decode($res->{content}) } || {};
    is($res->{status}, 409, '(g) a retry of the rejected order\'s key: 409, not 200')
        or diag($res->{content});
    is($b->{outcome}, 'rejected', '(g) its outcome: rejected');
    is($b->{orderId}, $c2->{orderId}, '(g) with the order the shop rejected');
    like($err, qr/settled claim \Q$c2->{key}\E .*recorded in PostgreSQL as rejected/,
         '(g) the log says recorded as rejected');
}

done_testing();
