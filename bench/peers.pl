# bench/bench.pl, part two: what the peers share.  The OpenResty peer itself
# is bench/peers/openresty/gate.lua, run by bench_soldout (bench/questions.pl)
# on the same script as the module, with and without a lua_shared_dict flag;
# redis-benchmark of the same script is redis_capacity there.
use strict;
use warnings;

our ($ROOT);

# lua/order.lua as Redis gets it: its "-- #include" lines expanded by
# lua/expand.sh, as the module and the worker load it
sub script_text {
    my $text = `sh $ROOT/lua/expand.sh $ROOT/lua/order.lua`;
    die "lua/expand.sh lua/order.lua failed\n" if $? != 0;
    return $text;
}

sub script_sha {
    require Digest::SHA;
    return Digest::SHA::sha1_hex(script_text());
}

1;
