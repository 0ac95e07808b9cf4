-- Flux-Gate: give back exactly what order.lua reserved for an order that
-- Kafka did not take, or whose client was told it failed.
--
-- KEYS[1] fg:{p}:stock   KEYS[2] fg:{p}:buyers   KEYS[3] fg:{p}:idem:<key>
-- ARGV    userId, quantity, orderId
--
-- Only while the key is still this order's pending claim: then order.lua
-- took exactly this, and nothing else gave it back yet.  So the script is
-- also right when it is unknown whether order.lua ran at all (a connection
-- lost with it in flight), and when it runs twice.  Returns 1 if it gave
-- something back.

local stock_key, buyers_key, idem_key = KEYS[1], KEYS[2], KEYS[3]
local user, qty, order_id = ARGV[1], tonumber(ARGV[2]), ARGV[3]

local idem = redis.call('HMGET', idem_key, 's', 'o')
if idem[1] ~= 'pending' or idem[2] ~= order_id then
    return 0
end

redis.call('INCRBY', stock_key, qty)

if redis.call('HINCRBY', buyers_key, user, -qty) <= 0 then
    redis.call('HDEL', buyers_key, user)
end

redis.call('DEL', idem_key)

return 1
