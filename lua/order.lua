-- Flux-Gate: one order, decided atomically in one round trip.
--
-- KEYS[1] fg:{p}:stock   KEYS[2] fg:{p}:rate   KEYS[3] fg:{p}:buyers
-- KEYS[4] fg:{p}:idem:<key>
-- ARGV    userId, quantity, fingerprint, orderId, idempotency ttl (ms),
--         rate (orders/s, 0 = off), burst, per-user limit (0 = off)
--
-- In this order: idempotency (a known key replays, or is in flight, or
-- was used with another body), rate (GCRA on Redis TIME), per-user limit,
-- stock, then the reservation.  Replies:
--   {1, orderId}                   reserved; the key is pending
--   {2, status, outcome, orderId}  replay of a finished first request
--   {3}                            first request still in flight
--   {4}                            key used with another body
--   {5, retry_after_ms}            over the rate; nothing claimed
--   {6, stock}                     sold out (stored under the key); the
--                                  stock left, less than quantity
--   {7}                            per-user limit reached (stored)

local stock_key, rate_key, buyers_key, idem_key =
    KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local user, qty, fp, order_id = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local ttl, rate, burst, per_user =
    tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])

local idem = redis.call('HMGET', idem_key, 's', 'f', 'r', 'o')
if idem[1] then
    if idem[2] ~= fp then
        return {4}
    end
    if idem[1] == 'pending' then
        return {3}
    end
    return {2, tonumber(idem[1]), idem[3] or '', idem[4] or ''}
end

if rate > 0 then
    -- GCRA: tat is when the bucket is empty again, in microseconds
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
    local interval = 1000000 / rate
    local tat = tonumber(redis.call('GET', rate_key)) or now
    if tat < now then
        tat = now
    end
    local allow_at = tat - burst * interval
    if now < allow_at then
        return {5, math.ceil((allow_at - now) / 1000)}
    end
    tat = tat + interval
    redis.call('SET', rate_key, string.format('%.0f', tat),
               'PX', math.ceil((tat - now) / 1000) + 1000)
end

local function final(status, outcome)
    redis.call('HSET', idem_key, 's', status, 'f', fp, 'r', outcome)
    redis.call('PEXPIRE', idem_key, ttl)
end

if per_user > 0 then
    local bought = tonumber(redis.call('HGET', buyers_key, user)) or 0
    if bought + qty > per_user then
        final(409, 'limit_reached')
        return {7}
    end
end

local stock = tonumber(redis.call('GET', stock_key)) or 0
if stock < qty then
    final(409, 'sold_out')
    return {6, stock}
end

redis.call('DECRBY', stock_key, qty)
redis.call('HINCRBY', buyers_key, user, qty)
redis.call('HSET', idem_key, 's', 'pending', 'f', fp, 'o', order_id)
redis.call('PEXPIRE', idem_key, ttl)

return {1, order_id}
