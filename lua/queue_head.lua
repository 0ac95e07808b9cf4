-- Flux-Gate: the head of a product's line, for the gate's shared memory
-- (the waiting room's polls are answered from it, without Redis) and for
-- GET /queue/stats.  Opens the sale when it is due, and counts the
-- no-shows: turns whose window closed unspent.
--
-- KEYS[1] fg:{p}:stock   KEYS[2] fg:{p}:q (the line)   KEYS[3] fg:{p}:gen
-- KEYS[4] fg:{p}:q: (the prefix of its epochs' keys)
-- ARGV    rate (the gate's fluxgate_threshold), burst, admission window
--         (us), a seed (hex) should this call open the sale, full ('1':
--         count the no-shows and read the oldest wait; '0': the head
--         only, for the polls' refresh ten times a second: no-shows as
--         last counted, the oldest wait -1: TIME, GET and HMGET)
--
-- Reply: {now, known (0/1), stock, epoch, n, h (text: not an integer), t,
--         rate, state, opensAt (0: none), P (-1: not opened), seed,
--         window (turns), admitted, waiting, no-shows, oldest wait (us)}
-- (times in microseconds of Redis TIME; state '', 'paused', 'closed')
--
-- The contract, read by lua/header.sh into C #defines:
--- keys: stock line gen prefix
--- args: rate burst window seed full
--- replies: FIELDS=17

-- #include line.lua

local stock_key, line_key, gen_key = KEYS[1], KEYS[2], KEYS[3]
local rate, burst, window, seed =
    tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local full = ARGV[5] ~= '0'

local now = line_clock()

-- /init writes the stock and the generation together: a stock is a
-- product set by /init, no stock one that may never have been
local stock = redis.call('GET', stock_key)
if not stock and redis.call('EXISTS', gen_key) == 0 then
    return {now, 0}
end
stock = tonumber(stock) or 0

local line = line_load(line_key)
rate = line_rate(line, rate)
line_open(line, line_key, now, seed)

local H = line_head(line, now, rate, burst)
local W = line_window(window, rate)
local admitted = math.min(math.floor(H), line.n)
local prefix = KEYS[4] .. line.e

-- no-shows: the turns whose window closed since the last count, less the
-- spent ones among them (one BITCOUNT over the new range only)
local closed = W == math.huge and 0 or math.max(0, admitted - W)
if full and closed > line.ck then
    local spent = redis.call('BITCOUNT', prefix .. ':spent', line.ck,
                             closed - 1, 'BIT')
    line.ns = line.ns + (closed - line.ck) - spent
    line.ck = closed
    redis.call('HSET', line_key, 'ck', line.ck, 'ns', line.ns)
end

-- the oldest wait: the booking time sampled nearest before the first
-- waiting turn (the pre-queue's first booking while the pre-queue waits)
local oldest = full and 0 or -1
if full and admitted < line.n then
    local marks, m = prefix .. ':marks', nil
    if line_scheduled(line) or admitted < (line.P or 0) then
        m = redis.call('ZRANGE', marks, 0, 0)
    else
        m = redis.call('ZREVRANGEBYSCORE', marks, admitted, line.P or 0,
                       'LIMIT', 0, 1)
        if #m == 0 then
            m = redis.call('ZRANGEBYSCORE', marks, line.P or 0, '+inf',
                           'LIMIT', 0, 1)
        end
    end
    if m[1] then
        local at = tonumber(string.match(m[1], ':(%d+)$'))
        oldest = math.max(0, now - at)
    end
end

return {now, 1, stock, line.e, line.n, line_num(line.h),
        line.t, rate, line.st, line.o or 0, line.P or -1, line.s or '',
        W == math.huge and 0 or W, admitted, line.n - admitted, line.ns,
        oldest}
