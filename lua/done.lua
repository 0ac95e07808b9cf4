-- Flux-Gate: Kafka acknowledged the order: its idempotency key now
-- replays 200 with the same orderId, for the rest of its TTL.
--
-- KEYS[1] fg:{p}:idem:<key>
-- ARGV    orderId

if redis.call('HGET', KEYS[1], 'o') == ARGV[1] then
    redis.call('HSET', KEYS[1], 's', 200, 'r', 'success')
    return 1
end

return 0
