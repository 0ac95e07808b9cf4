-- Flux-Gate: Kafka acknowledged the order (or fluxgate-reconcile found it
-- recorded in PostgreSQL): its idempotency key now replays the answer
-- given (200 success; 409 rejected for an order PostgreSQL recorded as
-- rejected) with the same orderId for the rest of its TTL, and it is no
-- longer a pending claim.
--
-- KEYS[1] fg:{p}:idem:<key>   KEYS[2] fg:{p}:pending
-- ARGV    orderId, idempotency ttl (ms), idempotency key, the status and
--         outcome to replay
-- Returns 1 when the key is this order's, else 0.
--
-- The contract, read by lua/header.sh into C #defines:
--- keys: idem pending
--- args: order_id ttl key status outcome
--- replies: NOT_OURS=0 DONE=1

if redis.call('HGET', KEYS[1], 'o') ~= ARGV[1] then
    return 0
end

redis.call('HSET', KEYS[1], 's', tonumber(ARGV[4]), 'r', ARGV[5])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
redis.call('ZREM', KEYS[2], ARGV[3])

return 1
