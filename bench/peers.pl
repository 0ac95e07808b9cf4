# bench/bench.pl, part two: the figures that are not Flux-Gate's own.
#   bench_redis  redis-benchmark of lua/order.lua (EVALSHA) on the sold-out
#                path, one command at a time and pipelined 16 deep
#   bench_peer   the OpenResty-style gate of bench/peers/openresty on the
#                sold-out path
use strict;
use warnings;

our ($DIR, $ROOT, %fig, $SECONDS, $CONNS);

sub script_sha {
    my $sha = `sha1sum $ROOT/lua/order.lua`;
    return (split ' ', $sha)[0];
}

sub bench_redis {
    my $sha = script_sha();
    my $loaded = redis('SCRIPT', 'LOAD', scalar `cat $ROOT/lua/order.lua`);
    die "SCRIPT LOAD: $loaded\n" unless $loaded eq $sha;
    my $p = uniq('rb');
    redis('SET', "fg:{$p}:stock", 0);
    my $n = $SECONDS * 20000;
    for my $pipe (1, 16) {
        # a fresh idempotency key per call: the sold-out path as the gate
        # runs it, not a replay
        my $out = `redis-benchmark -h 127.0.0.1 -p $ENV{REDIS_PORT} -n $n -c 50 -P $pipe -r 1000000000 -q EVALSHA $sha 4 'fg:{$p}:stock' 'fg:{$p}:rate' 'fg:{$p}:buyers' 'fg:{$p}:idem:__rand_int__' u1 1 u1:1 00000000-0000-7000-8000-000000000000 60000 0 0 0 2>&1`;
        my ($rps) = $out =~ /([\d.]+) requests per second/;
        $fig{ $pipe == 1 ? 'redis' : 'redis_pipelined' } = $rps;
        push @main::rows, [ 'redis', "EVALSHA order.lua, pipeline $pipe",
                            sprintf('%.0f', $rps // 0), '-', '-', '-',
                            'redis-benchmark, 50 clients' ];
        main::say("redis EVALSHA pipeline $pipe: " . ($rps // 'n/a') . "/s");
    }
}

sub bench_peer {
    my $sha = script_sha();
    my $port = main::nginx_start('peer', 1,
        "load_module /usr/lib/nginx/modules/ndk_http_module.so;\n"
        . "load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;",
        qq(    lua_package_path "/usr/share/lua/5.1/?.lua;;";
    init_by_lua_block {
        local f = assert(io.open("$ROOT/lua/order.lua"))
        GATE_SCRIPT = f:read("*a")
        f:close()
    }),
        qq(        location = /order {
            client_max_body_size 4k;
            client_body_buffer_size 4k;
            set \$fg_redis_port $ENV{REDIS_PORT};
            set \$fg_script_sha $sha;
            set \$fg_rate 0;
            set \$fg_burst 0;
            content_by_lua_file $ROOT/bench/peers/openresty/gate.lua;
        }));
    my $p = uniq('peer');
    redis('SET', "fg:{$p}:stock", 0);
    my $r = main::run_load(port => $port, product => $p);
    die "peer answered otherwise than 409: $r->{raw}"
        unless ($r->{status}{409}{count} // 0) > 0.99 * $r->{responses};
    $fig{peer} = main::row('openresty', 'sold-out path (409)', $r, 409);
    main::nginx_stop('peer');
}

1;
