-- Flux-Gate: give back exactly what order.lua reserved for an order that
-- Kafka did not take, or whose client was told it failed.
--
-- KEYS[1] fg:{p}:stock   KEYS[2] fg:{p}:buyers   KEYS[3] fg:{p}:idem:<key>
-- KEYS[4] fg:{p}:gen     KEYS[5] fg:{p}:pending
-- [KEYS[6] fg:{p}:q: (the gate's: the turn the order spent is given back)]
-- ARGV    orderId, idempotency key[, idempotency ttl (ms): the gate's]
--
-- Only while the key is still this order's pending claim: then order.lua
-- took exactly what the claim records, and nothing else gave it back yet.
-- So the script is also right when it is unknown whether order.lua ran
-- at all (a connection lost with it in flight), and when it runs twice.
-- The units go back to the stock only within the generation they were
-- reserved in: a /init since then set the stock anew, and giving them to
-- the new generation would sell them twice.  The buyer's count goes back
-- in any case.  Returns 1 (stock given back), 2 (released, its generation
-- is over), 0 (not this order's pending claim: nothing done).
--
-- The gate also releases when it does not know whether order.lua ran (its
-- connection was replaced with the script in flight).  If the key holds
-- nothing yet, that order.lua may still be on its way, in a frozen
-- server's socket: the key gets a tombstone naming the order (with the
-- gate's ttl), and order.lua, finding it, reserves nothing.  Another order
-- of the same key (a retry) is decided as if the tombstone were not there.
--
-- The contract, read by lua/header.sh into C #defines:
--- keys: stock buyers idem gen pending prefix
--- args: order_id key ttl
--- replies: NONE=0 GIVEN=1 OVER=2

local stock_key, buyers_key, idem_key, gen_key, pending_key =
    KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local order_id, key, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])

local c = redis.call('HMGET', idem_key, 's', 'o', 'g', 'u', 'q', 'k', 'e')
if c[1] ~= 'pending' or c[2] ~= order_id then
    if not c[1] and ttl then
        redis.call('HSET', idem_key, 's', 'released', 'o', order_id)
        redis.call('PEXPIRE', idem_key, ttl)
    end
    return 0
end

local qty = tonumber(c[5])
local given = 2

if c[3] == redis.call('HGET', gen_key, 'g') then
    redis.call('INCRBY', stock_key, qty)
    given = 1
end

if redis.call('HINCRBY', buyers_key, c[4], -qty) <= 0 then
    redis.call('HDEL', buyers_key, c[4])
end

-- a turn of the waiting room: usable again, by its own ticket (the order
-- got 503, it never happened)
if c[6] and KEYS[6] then
    redis.call('SETBIT', KEYS[6] .. c[7] .. ':spent', c[6], 0)
end

redis.call('DEL', idem_key)
redis.call('ZREM', pending_key, key)

return given
