# bench/bench.pl, part two: what the peers share.  The OpenResty peer itself
# is bench/peers/openresty/gate.lua, run by bench_soldout (bench/questions.pl)
# on the same script as the module, with and without a lua_shared_dict flag;
# redis-benchmark of the same script is redis_capacity there.
use strict;
use warnings;

our ($ROOT);

sub script_sha {
    my $sha = `sha1sum $ROOT/lua/order.lua`;
    return (split ' ', $sha)[0];
}

1;
