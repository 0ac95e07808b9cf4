-- Flux-Gate: where a ticket stands in its product's line, read only, for
-- the waiting room's polls (fluxgate_queue_status).
--
-- KEYS[1] fg:{p}:stock   KEYS[2] fg:{p}:q:used:<ticket seq>
-- ARGV    the ticket (nginx checked its HMAC): admitted from, window end,
--         expiry, interval; microseconds of Redis TIME
--
-- The ticket carries its own booked admission time (order.lua), so its
-- place needs no list in Redis: the tickets still waiting ahead of it were
-- booked one interval apart.  Replies:
--   {1, position, admitted (0/1), eta_ms, sold out (0/1)}
--   {10, reason}   expired, its window passed, or spent: it has no place

local admit, till, expires, interval =
    tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
    tonumber(ARGV[4])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

if now >= expires then
    return {10, 'expired'}
end

if redis.call('EXISTS', KEYS[2]) == 1 then
    return {10, 'spent'}
end

if now > till then
    return {10, 'window'}
end

local sold_out = (tonumber(redis.call('GET', KEYS[1])) or 0) <= 0 and 1 or 0

if now >= admit then
    return {1, 0, 1, 0, sold_out}
end

return {1, math.ceil((admit - now) / interval), 0,
        math.ceil((admit - now) / 1000), sold_out}
