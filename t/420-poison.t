# Poison messages: whatever cannot be an order or a stock_set goes to
# dead_letters with its position, exact bytes and the reason, its offset is
# committed like any other, and the valid messages around it (before and
# after it in the same partition) are recorded as usual.  A message of a
# gate older than v2 (no generation) is one of them: the worker cannot tell
# which stock it belongs to.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use FluxGate::Test;
use FluxGate::Worker;

my $p = uniq('p420');
my $mark = log_mark();

my (undef, $good) = order_msg(productId => $p, userId => 'before', generationStock => 100);
my (undef, $after) = order_msg(productId => $p, userId => 'after', generationStock => 100);
my $v1 = qr/^no generation: produced by a gate older than v2$/;
my %bad = (
    'not JSON'        => [ 'hello, world', qr/^not JSON: / ],
    'truncated'       => [ substr($good, 0, 40), qr/^not JSON: / ],
    'JSON, no object' => [ '[1,2,3]', qr/^not a JSON object$/ ],
    'no type'         => [ qq{{"productId":"$p"}}, qr/^missing field "type"$/ ],
    'unknown type'    => [ qq{{"type":"refund","productId":"$p"}}, qr/^unknown type "refund"$/ ],
    'quantity string' => [ (order_msg(productId => $p, quantity => '1'))[1],
                           qr/^field "quantity" is not an integer$/ ],
    'quantity zero'   => [ (order_msg(productId => $p, quantity => 0))[1],
                           qr/^field "quantity" is 0, outside 1\.\./ ],
    'orderId number'  => [ (order_msg(productId => $p, orderId => 42))[1],
                           qr/^field "orderId" is not a string$/ ],
    'orderId no UUID' => [ (order_msg(productId => $p, orderId => 'not-a-uuid'))[1],
                           qr/^field "orderId" is not a UUID$/ ],
    'missing userId'  => [ do { my ($m) = order_msg(productId => $p); delete $m->{userId};
                                json_encode($m) }, qr/^missing field "userId"$/ ],
    'bad productId'   => [ (order_msg(productId => "$p/../x"))[1],
                           qr/^field "productId" has a character outside/ ],
    'negative stock'  => [ qq{{"type":"stock_set","productId":"$p","stock":-5,"at":1}},
                           qr/^field "stock" is -5, outside 0\.\./ ],
    'duplicate key'   => [ qq{{"type":"stock_set","productId":"$p","stock":5,"stock":6,"at":1}},
                           qr/^not JSON: duplicate object key/ ],
    'v1 order'        => [ (order_msg(productId => $p, generation => undef,
                                      generationStock => undef))[1], $v1 ],
    'v1 stock_set'    => [ qq{{"type":"stock_set","productId":"$p","stock":100,"at":1}}, $v1 ],
    'generation 0'    => [ (order_msg(productId => $p, generation => 0))[1],
                           qr/^field "generation" is 0, outside 1\.\./ ],
    'generation text' => [ stock_msg($p, 100, '2'),
                           qr/^field "generation" is not an integer$/ ],
    'no generationStock' => [ (order_msg(productId => $p, generationStock => undef))[1],
                              qr/^missing field "generationStock"$/ ],
    'generationStock below quantity' =>
                         [ (order_msg(productId => $p, quantity => 3, generationStock => 2))[1],
                           qr/^field "generationStock" is 2, less than quantity 3$/ ],
);
like($bad{'v1 order'}[0], qr/^(?!.*generation).*"type":"order"/, 'the v1 order has no generation field');

produce([$p, stock_msg($p, 100)], [$p, $good],
        map({ [$p, $bad{$_}[0]] } sort keys %bad), [$p, $after]);

# 1 MB of JSON-looking bytes, past what any order can be
my $huge = '{"type":"order","pad":"' . ('x' x (1_000_000 - 25)) . '"}';
{
    my $file = "$ENV{FG_RUN_DIR}/t420-huge.$$";
    open my $fh, '>', $file or die $!;
    print $fh $huge;
    close $fh;
    my $out = `kcat -P -b $ENV{KAFKA_BOOTSTRAP} -t @{[topic()]} -k $p -X message.max.bytes=1040000 -X acks=all $file 2>&1`;
    is($?, 0, 'a 1 MB message produced') or diag($out);
    unlink $file;
    my (undef, $last) = order_msg(productId => $p, userId => 'after-huge',
                                  generationStock => 100);
    produce([$p, $last]);
}

ok(wait_until(30, sub { orders_of($p) == 3 }),
   'the valid orders before and after the poison are recorded')
    or diag(log_since($mark));
is(product_stock($p), 97, 'and took their stock');

my %reason_of;
for my $row (psql(qq{select convert_from(payload, 'UTF8') || chr(1) || reason
                     from dead_letters where key = convert_to('$p', 'UTF8')
                     and length(payload) < 100000})) {
    my ($payload, $reason) = split /\x01/, $row, 2;
    $reason_of{$payload} = $reason;
}
for my $what (sort keys %bad) {
    my ($bytes, $why) = @{ $bad{$what} };
    like($reason_of{$bytes} // 'no dead letter', $why, "$what: dead letter with the reason");
}

my $huge_row = psql(qq{select length(payload), md5(payload), reason from dead_letters
                       where key = convert_to('$p', 'UTF8') and length(payload) >= 100000});
my ($len, $md5, $reason) = split /\|/, $huge_row;
is($len, length($huge), '1 MB message: all its bytes kept');
is($md5, do { require Digest::MD5; Digest::MD5::md5_hex($huge) }, 'exactly');
like($reason // '', qr/^message too large: 1000000 bytes, limit 65536$/, 'with the reason');

# positions: every dead letter is where Kafka says it is
{
    my @rows = psql(qq{select "partition" || chr(1) || "offset" || chr(1) || convert_from(payload, 'UTF8')
                       from dead_letters where key = convert_to('$p', 'UTF8')
                       and length(payload) < 100000});
    my $right = grep {
        my ($part, $off, $bytes) = split /\x01/, $_, 3;
        my $m = message_at(topic(), $part, $off);
        $m->[0] eq $p && $m->[1] eq $bytes
    } @rows;
    is($right, scalar(keys %bad), 'dead letters carry their partition and offset');
    is(psql("select count(distinct topic) || '|' || min(topic) from dead_letters where key = convert_to('$p', 'UTF8')"),
       '1|' . topic(), 'and topic');
}

my $log = log_since($mark);
my $lines = () = $log =~ /warning: dead letter \S+ \d+:\d+ \(\d+ bytes\): /g;
is($lines, scalar(keys %bad) + 1, 'one log line per dead letter');
like($log, qr/dead_letter=\d+/, 'batch lines count dead letters');

# a message that passes the parser but that PostgreSQL refuses (here a
# trigger stands in for a constraint the parser does not know): the batch
# is redone one message at a time, the refused one becomes a dead letter,
# its neighbours are recorded
{
    my $q = uniq('p420db');
    my $fn = 't420_refuse_' . $$;
    psql(qq{create function $fn() returns trigger language plpgsql as \$\$
            begin
                if new.user_id = 'refuse-me' then
                    raise exception 'test trigger refuses %', new.id using errcode = '22023';
                end if;
                return new;
            end \$\$;
            create trigger $fn before insert on orders for each row execute function $fn();});
    my $mark = log_mark();
    my (undef, $o1) = order_msg(productId => $q, userId => 'first', generationStock => 10);
    my ($bad, $o2) = order_msg(productId => $q, userId => 'refuse-me', generationStock => 10);
    my (undef, $o3) = order_msg(productId => $q, userId => 'third', generationStock => 10);
    produce([$q, stock_msg($q, 10)], [$q, $o1], [$q, $o2], [$q, $o3]);
    ok(wait_until(30, sub { orders_of($q) == 2 }), 'the neighbours of a refused message are recorded');
    psql("drop trigger $fn on orders; drop function $fn()");
    like(psql(qq{select reason from dead_letters where key = convert_to('$q', 'UTF8')}),
         qr/^refused by PostgreSQL: test trigger refuses $bad->{orderId}/,
         'the refused one is a dead letter with PostgreSQL\'s reason');
    is(product_stock($q), 8, 'the refused order took no stock');
    is(generation_row($q, 1), '10|2|t', 'its generation sold the two others');
    like(log_since($mark), qr/PostgreSQL refused the batch of \d+ messages .*one by one/,
         'the log says the batch was split to find it');
}

done_testing();
