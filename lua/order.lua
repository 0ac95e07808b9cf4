-- Flux-Gate: one order, decided atomically in one round trip.
--
-- KEYS[1] fg:{p}:stock   KEYS[2] fg:{p}:q (the line)   KEYS[3] fg:{p}:buyers
-- KEYS[4] fg:{p}:idem:<key>   KEYS[5] fg:{p}:gen   KEYS[6] fg:{p}:pending
-- KEYS[7] fg:{p}:q: (the prefix of the line's keys of each epoch: buyers'
--         places, clients' counts, spent turns, booking times)
-- ARGV    userId, quantity, fingerprint, orderId, idempotency ttl (ms),
--         rate (orders/s, 0 = off), burst, per-user limit (0 = off),
--         idempotency key, queue ('1': over the rate books a place in
--         line, else 302 as before), admission window (us), ticket
--         lifetime (us), buyer, client key ('' = no cap), places per
--         client (0 = off), proof ('0' none needed, '1' needed and
--         missing, '2' a valid one), a seed (hex) should this call open
--         the sale, the ticket sent (epoch, kind, seq, expiry in s; ''
--         = none; checked by nginx's HMAC)
--
-- In this order: idempotency (a known key replays, or is in flight, or
-- was used with another body), the product (never set by /init: nothing
-- is written), a closed line, stock (sold out: nothing is written, so a
-- flood of fresh keys on a sold-out product costs Redis no memory and a
-- retry after a restock is decided again), the line (the ticket's turn,
-- the buyer's own place, or the rate), per-user limit, the reservation.
--
-- The line.  Every admission is a turn: turns are numbered in the order
-- they were handed out (n so far), and the head H counts the turns
-- admitted by now: it grows at the product's rate, from h at time t, up
-- to n + burst + 1 (one free turn and the burst saved up, as a GCRA's),
-- and stands still
-- while paused or closed.  A turn k is admitted once k < floor(H), and is
-- usable until W more turns were admitted (W: the admission window at the
-- rate).  An arrival passes at once when a turn is free (H >= n + 1: the
-- line is empty), taking it; otherwise, over the rate, it gets a place:
-- the next turn, a ticket naming it, and 302.  So the line is FIFO at the
-- rate, a retry never overtakes it, and an unused turn is a no-show.
-- Before the sale opens (fg:{p}:q o, set by /init opensAt) arrivals get a
-- place in the pre-queue (seq k in arrival order); the first script run
-- at or after the opening freezes their number P, stores a seed, and
-- from then on place k's turn is shuffle(seed, k, P), a keyed permutation
-- (include/fluxgate_shuffle.h is the same in C): nothing per buyer is
-- rewritten, and arriving early gains nothing.  Later arrivals queue
-- behind, FIFO (turn = seq >= P).
--
-- One place per buyer: a buyer holding a live place (not expired, not
-- spent, its window not passed) is answered from it, whatever key or body
-- they send: 302 with the same ticket, or, once admitted, the order goes
-- on.  A turn is spent by the first order it admits, whatever the answer
-- (release.lua gives it back with the reservation after a 503).
--
-- Replies:
--   {1, orderId, generation, generationStock}
--                                  reserved; the key is a pending claim
--   {2, status, outcome, orderId}  replay of a finished first request
--   {3}                            first request still in flight
--   {4}                            key used with another body
--   {5, retry_after_ms}            over the rate (queue off); nothing
--                                  claimed
--   {6, stock}                     sold out; the stock left, less than
--                                  quantity; nothing stored
--   {7}                            per-user limit reached (stored)
--   {8}                            unknown product; nothing stored
--   {9, epoch, kind, seq, expires_s, position, wait_ms, opens_at_s}
--                                  a place: booked now or held already
--                                  (kind 'q': in line, position >= 1;
--                                  'p': the pre-queue, position -1)
--   {10, reason}                   the ticket sent is expired, its window
--                                  passed, or spent; nothing written
--   {11, wait_ms}                  the line is longer than a ticket lives;
--                                  nothing written
--   {12}                           this order was released before it ran
--                                  (release.lua's tombstone): nothing
--                                  written
--   {13}                           a place is due but no proof of work
--                                  came with the request: nothing written
--   {14}                           the client holds its share of places:
--                                  nothing written
--   {15}                           the sale is closed: nothing written
--
-- A pending claim has no TTL and is listed in fg:{p}:pending (score: when
-- it was reserved): done.lua or release.lua end it, and a claim whose
-- Kafka outcome is unknown is settled by fluxgate-reconcile, never left
-- to expire into a second sale.
--
-- The contract, read by lua/header.sh into C #defines:
--- keys: stock line buyers idem gen pending prefix
--- args: user quantity fingerprint order_id ttl rate burst per_user key
--- args: queue window ticket_ttl buyer client per_client proof seed
--- args: ticket_epoch ticket_kind ticket_seq ticket_expires
--- replies: RESERVED=1 REPLAY=2 IN_PROGRESS=3 MISMATCH=4 REDIRECT=5
--- replies: SOLD_OUT=6 LIMIT_REACHED=7 UNKNOWN=8 QUEUED=9 BAD_TICKET=10
--- replies: QUEUE_FULL=11 CANCELED=12 CHALLENGE=13 CLIENT_FULL=14 CLOSED=15

-- #include line.lua
-- #include shuffle.lua

local stock_key, line_key, buyers_key, idem_key, gen_key, pending_key =
    KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local user, qty, fp, order_id = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local ttl, rate, burst, per_user =
    tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local key = ARGV[9]
local queue, window, ticket_ttl =
    ARGV[10] == '1', tonumber(ARGV[11]), tonumber(ARGV[12])
local buyer, client, per_client, proof =
    ARGV[13], ARGV[14], tonumber(ARGV[15]), ARGV[16]
local seed = ARGV[17]
local ticket = (ARGV[18] or '') ~= '' and {
    e = tonumber(ARGV[18]), kind = ARGV[19], seq = tonumber(ARGV[20]),
    expires = tonumber(ARGV[21]) }

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

local line = line_load(line_key)

if line.st == 'closed' then
    return {15}
end

local stock = tonumber(redis.call('GET', stock_key)) or 0
if stock < qty then
    return {6, stock}
end

local now, now_s = line_clock()

rate = line_rate(line, rate)
line_open(line, line_key, now, seed)

local scheduled = line_scheduled(line)
local dirty = {}          -- line fields to write back

local function head()
    return line_head(line, now, rate, burst)
end

local H = head()
local admitted = math.floor(H)

local W = line_window(window, rate)

local prefix = KEYS[7] .. line.e
local spent_key = prefix .. ':spent'
local ttl_s = math.floor(ticket_ttl / 1000000)
local bucket = math.floor(now_s / ttl_s)

local function turn_of(kind, seq)
    if kind == 'p' then
        return shuffle(line.s, seq, line.P)
    end
    return seq
end

-- the place of a buyer, or nil: {kind, seq, expires}
local function place_of(b)
    local v
    if line.o then
        v = redis.call('HGET', prefix .. ':pb', b)
        if v then
            local seq, exp = string.match(v, '^(%d+):(%d+)$')
            return {kind = 'p', seq = tonumber(seq), expires = tonumber(exp)}
        end
    end
    for back = 0, 1 do
        v = redis.call('HGET', prefix .. ':b:' .. (bucket - back), b)
        if v then
            local seq, at = string.match(v, '^(%d+):(%d+)$')
            seq, at = tonumber(seq), tonumber(at)
            local start = (bucket - back) * ttl_s
            -- "seq:second in the bucket it was booked"; a value written
            -- before that form holds the expiry itself (at >= start)
            local expires = at < start and start + at + ttl_s or at
            return {kind = 'q', seq = seq, expires = expires}
        end
    end
    return nil
end

-- 302 with a place: where it stands
local function answer(kind, seq, expires)
    local opens = line.o and math.floor(line.o / 1000000) or 0
    if kind == 'p' and scheduled then
        return {9, line.e, 'p', seq, expires, -1,
                math.ceil((line.o - now) / 1000), opens}
    end
    local turn = turn_of(kind, seq)
    local wait = 0
    if line.st == 'paused' or rate == 0 then
        wait = -1
    else
        wait = math.ceil((turn + 1 - H) / rate * 1000)
    end
    return {9, line.e, kind, seq, expires, math.max(1, turn - admitted + 1),
            wait, opens}
end

-- is a place (the ticket's or the buyer's own) usable now?  nil: yes;
-- else its reason ('expired', 'window', 'spent') or the 302 to answer
local function check(kind, seq, expires)
    if now_s >= expires then
        return 'expired'
    end
    if kind == 'p' and scheduled then
        return answer(kind, seq, expires)
    end
    local turn = turn_of(kind, seq)
    if turn >= admitted then
        return answer(kind, seq, expires)
    end
    -- the window counts the turns handed out and admitted since: H runs
    -- ahead of the turns handed out when the line is empty (a free turn
    -- for the next arrival), and those are nobody's (queue_head.lua's
    -- no-show count reads it so too)
    if math.min(admitted, line.n) - turn > W then
        return 'window'
    end
    if redis.call('GETBIT', spent_key, turn) == 1 then
        return 'spent'
    end
    return nil
end

local spend       -- the turn this order spends
local placed      -- ... and it was a place in line (a ticket's)

local function write_line()
    local args = {}
    for f, v in pairs(dirty) do
        args[#args + 1] = f
        args[#args + 1] = type(v) == 'number' and line_num(v) or v
    end
    if #args > 0 then
        redis.call('HSET', line_key, unpack(args))
    end
end

-- a new turn at the end of the line: H stays where it is (rebased), the
-- count of turns grows
local function take_turn()
    local turn = line.n
    line.h, line.t, line.n = H, now, line.n + 1
    dirty.h, dirty.t, dirty.n = H, now, line.n
    return turn
end

-- the per-client cap: places booked in this and the last ticket lifetime
local function client_full()
    if per_client == 0 or client == '' then
        return false
    end
    local held = 0
    for back = 0, 1 do
        held = held + (tonumber(redis.call('HGET', prefix .. ':c:'
                                           .. (bucket - back), client)) or 0)
    end
    return held >= per_client
end

local function book(kind, seq, expires)
    if kind == 'p' then
        redis.call('HSET', prefix .. ':pb', buyer, seq .. ':' .. expires)
        redis.call('PEXPIREAT', prefix .. ':pb',
                   math.floor(line.o / 1000) + math.floor(ticket_ttl / 1000))
    else
        -- the place's second in its bucket, not its expiry: "1000000:3599"
        -- is 12 bytes, which Redis keeps in a 16-byte allocation (a
        -- million waiting buyers cost 16 MB less)
        local b = prefix .. ':b:' .. bucket
        redis.call('HSET', b, buyer, seq .. ':' .. (expires - ttl_s
                                                   - bucket * ttl_s))
        redis.call('EXPIREAT', b, (bucket + 2) * ttl_s)
    end
    if per_client > 0 and client ~= '' then
        local c = prefix .. ':c:' .. bucket
        redis.call('HINCRBY', c, client, 1)
        redis.call('EXPIREAT', c, (bucket + 2) * ttl_s)
    end
    -- a booking time now and then: the oldest wait, for the statistics
    if now - line.mt >= 1000000 then
        redis.call('ZADD', prefix .. ':marks', seq,
                   string.format('%d:%d', seq, now))
        redis.call('PEXPIRE', prefix .. ':marks', 2 * ticket_ttl / 1000)
        dirty.mt = now
    end
end

if ticket then
    if ticket.e ~= line.e then
        return {10, 'expired'}
    end
    local why = check(ticket.kind, ticket.seq, ticket.expires)
    if type(why) == 'table' then
        return why
    end
    if why then
        return {10, why}
    end
    spend = turn_of(ticket.kind, ticket.seq)
    placed = true

else
    local place = queue and place_of(buyer)
    local why = place and check(place.kind, place.seq, place.expires)

    if type(why) == 'table' then
        -- not admitted yet: the same place again
        write_line()
        return why
    end

    if place and not why then
        spend = turn_of(place.kind, place.seq)
        placed = true

    elseif scheduled then
        if not queue then
            return {5, math.ceil((line.o - now) / 1000)}
        end
        if client_full() then
            return {14}
        end
        if proof == '1' then
            return {13}
        end
        local k = line.n
        line.n = line.n + 1
        dirty.n = line.n
        local expires = math.floor(line.o / 1000000) + ttl_s
        book('p', k, expires)
        write_line()
        return answer('p', k, expires)

    elseif line.st ~= 'paused' and rate == 0 then
        -- no rate (fluxgate_threshold off): no line to take a turn in

    elseif line.st ~= 'paused' and H >= line.n + 1 then
        -- a free turn: taken at once
        spend = take_turn()

    else
        local wait = rate > 0 and (line.n + 1 - H) / rate * 1000000 or 0
        if not queue then
            return {5, math.ceil(wait / 1000)}
        end
        if client_full() then
            return {14}
        end
        if proof == '1' then
            return {13}
        end
        if line.st ~= 'paused' and wait + window > ticket_ttl then
            return {11, math.ceil((wait + window - ticket_ttl) / 1000)}
        end
        local k = take_turn()
        local expires = now_s + ttl_s
        book('q', k, expires)
        write_line()
        return answer('q', k, expires)
    end
end

-- admitted: the turn is spent, whatever this order's answer
if spend then
    redis.call('SETBIT', spent_key, spend, 1)
    redis.call('PEXPIRE', spent_key, 2 * ticket_ttl / 1000)
end
write_line()

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
if placed then
    -- release.lua gives a place's turn back with the reservation
    redis.call('HSET', idem_key, 'k', spend, 'e', line.e)
end
redis.call('ZADD', pending_key, at, key)

return {1, order_id, tonumber(gen[1]), tonumber(gen[2])}
