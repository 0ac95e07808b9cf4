-- Flux-Gate: Kafka acknowledged the order (or fluxgate-reconcile found it
-- recorded in PostgreSQL): its idempotency key now replays 200 with the
-- same orderId for the rest of its TTL, and it is no longer a pending
-- claim.
--
-- KEYS[1] fg:{p}:idem:<key>   KEYS[2] fg:{p}:pending
-- ARGV    orderId, idempotency ttl (ms), idempotency key
-- Returns 1 when the key is this order's, else 0.
--
-- The contract, read by lua/header.sh into C #defines:
--- keys: idem pending
--- args: order_id ttl key
--- replies: NOT_OURS=0 DONE=1

if redis.call('HGET', KEYS[1], 'o') ~= ARGV[1] then
    return 0
end

redis.call('HSET', KEYS[1], 's', 200, 'r', 'success')
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
redis.call('ZREM', KEYS[2], ARGV[3])

return 1
