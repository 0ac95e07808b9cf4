-- Flux-Gate: one order, decided atomically in one round trip.
--
-- KEYS[1] fg:{p}:stock   KEYS[2] fg:{p}:rate   KEYS[3] fg:{p}:buyers
-- KEYS[4] fg:{p}:idem:<key>   KEYS[5] fg:{p}:gen   KEYS[6] fg:{p}:pending
-- KEYS[7] fg:{p}:q:seq   KEYS[8] fg:{p}:q:used:<ticket seq, 0: none>
-- ARGV    userId, quantity, fingerprint, orderId, idempotency ttl (ms),
--         rate (orders/s, 0 = off), burst, per-user limit (0 = off),
--         idempotency key,
--         queue ('1': over the rate books a place in line, else 302 as
--         before), admission window (us), ticket lifetime (us),
--         the ticket sent (its seq, '' = none; admitted from, window end,
--         expiry, interval: us, Redis TIME; checked by nginx's HMAC)
--
-- In this order: idempotency (a known key replays, or is in flight, or
-- was used with another body), the product (never set by /init: nothing
-- is written), stock (sold out: nothing is written, so a flood of fresh
-- keys on a sold-out product costs Redis no memory and a retry after a
-- restock is decided again), rate (GCRA on Redis TIME) or the ticket that
-- stands for it, per-user limit, then the reservation.
--
-- The waiting room is the GCRA itself.  An order over the rate is not
-- refused but booked: it gets the time the GCRA would next let an order
-- through (A), and the GCRA's clock moves one interval on, exactly as if
-- the order had passed.  So tickets are admitted in the order they were
-- issued, one interval apart, never faster than the threshold; a new
-- arrival passes only when every booked time is behind it (nobody
-- overtakes the line by retrying); and a ticket that is not used in
-- [A, A + window] just loses its turn: the line never waits for it.
-- Replies:
--   {1, orderId, generation, generationStock}
--                                  reserved; the key is a pending claim
--   {2, status, outcome, orderId}  replay of a finished first request
--   {3}                            first request still in flight
--   {4}                            key used with another body
--   {5, retry_after_ms}            over the rate; nothing claimed
--   {6, stock}                     sold out; the stock left, less than
--                                  quantity; nothing stored
--   {7}                            per-user limit reached (stored)
--   {8}                            unknown product; nothing stored
--   {9, seq, admit, until, expires, interval, position, wait_ms}
--                                  queued: a ticket booked (or the one
--                                  sent, not admitted yet: nothing written)
--   {10, reason}                   the ticket sent is expired, its window
--                                  passed, or spent by another key;
--                                  nothing written
--   {11, wait_ms}                  the line is longer than a ticket lives;
--                                  nothing written
--   {12}                           this order was released before it ran
--                                  (release.lua's tombstone): nothing
--                                  written
--
-- A pending claim has no TTL and is listed in fg:{p}:pending (score: when
-- it was reserved): done.lua or release.lua end it, and a claim whose
-- Kafka outcome is unknown is settled by fluxgate-reconcile, never left
-- to expire into a second sale.

local stock_key, rate_key, buyers_key, idem_key, gen_key, pending_key =
    KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local user, qty, fp, order_id = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local ttl, rate, burst, per_user =
    tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local key = ARGV[9]
local queue, window, ticket_ttl =
    ARGV[10] == '1', tonumber(ARGV[11]), tonumber(ARGV[12])
local ticket = (ARGV[13] or '') ~= '' and {
    seq = ARGV[13], admit = tonumber(ARGV[14]), till = tonumber(ARGV[15]),
    expires = tonumber(ARGV[16]), interval = tonumber(ARGV[17]) }

local idem = redis.call('HMGET', idem_key, 's', 'f', 'r', 'o')
local tombstone = idem[1] == 'released'
if tombstone then
    if idem[4] == order_id then
        return {12}
    end
    -- another order of this key was released: decide this one anew
    idem = {}
end
if idem[1] then
    if idem[2] ~= fp then
        return {4}
    end
    if idem[1] == 'pending' then
        return {3}
    end
    return {2, tonumber(idem[1]), idem[3] or '', idem[4] or ''}
end

local gen = redis.call('HMGET', gen_key, 'g', 's')
if not gen[1] then
    return {8}
end

local stock = tonumber(redis.call('GET', stock_key)) or 0
if stock < qty then
    return {6, stock}
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local function queued(seq, admit, till, expires, interval)
    -- the booked times ahead of admit are one interval apart
    return {9, seq, admit, till, expires, interval,
            math.ceil((admit - now) / interval), math.ceil((admit - now) / 1000)}
end

if ticket then
    if now >= ticket.expires then
        return {10, 'expired'}
    end
    if now < ticket.admit then
        return queued(tonumber(ticket.seq), ticket.admit, ticket.till,
                      ticket.expires, ticket.interval)
    end
    if now > ticket.till then
        return {10, 'window'}
    end
    local used = redis.call('GET', KEYS[8])
    -- the same key may come back: its first try was released (503)
    if used and used ~= key then
        return {10, 'spent'}
    end

elseif rate > 0 then
    -- GCRA: tat is when the bucket is empty again, in microseconds
    local interval = 1000000 / rate
    local tat = tonumber(redis.call('GET', rate_key)) or now
    if tat < now then
        tat = now
    end
    local allow_at = tat - burst * interval
    if now < allow_at then
        if not queue then
            return {5, math.ceil((allow_at - now) / 1000)}
        end
        local admit = math.ceil(allow_at)
        if admit + window > now + ticket_ttl then
            return {11, math.ceil((admit + window - now - ticket_ttl) / 1000)}
        end
        local seq = redis.call('INCR', KEYS[7])
        tat = tat + interval
        redis.call('SET', rate_key, string.format('%.0f', tat),
                   'PX', math.ceil((tat - now) / 1000) + 1000)
        return queued(seq, admit, admit + window, now + ticket_ttl,
                      math.max(1, math.floor(interval)))
    end
    tat = tat + interval
    redis.call('SET', rate_key, string.format('%.0f', tat),
               'PX', math.ceil((tat - now) / 1000) + 1000)
end

if per_user > 0 then
    local bought = tonumber(redis.call('HGET', buyers_key, user)) or 0
    if bought + qty > per_user then
        if tombstone then
            redis.call('DEL', idem_key)
        end
        redis.call('HSET', idem_key, 's', 409, 'f', fp, 'r', 'limit_reached')
        redis.call('PEXPIRE', idem_key, ttl)
        return {7}
    end
end

local at = math.floor(now / 1000)

if tombstone then
    redis.call('DEL', idem_key)
end
redis.call('DECRBY', stock_key, qty)
redis.call('HINCRBY', buyers_key, user, qty)
redis.call('HSET', idem_key, 's', 'pending', 'f', fp, 'o', order_id,
           'g', gen[1], 'u', user, 'q', qty, 't', at)
redis.call('ZADD', pending_key, at, key)

if ticket then
    -- spent; after its window the ticket is refused anyway
    redis.call('SET', KEYS[8], key,
               'PX', math.ceil((ticket.till - now) / 1000) + 1000)
end

return {1, order_id, tonumber(gen[1]), tonumber(gen[2])}
