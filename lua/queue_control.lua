-- Flux-Gate: POST /queue/control, the operator's levers on a product's
-- line, effective at once for orders (they read the line here) and within
-- the gates' refresh for the waiting room's polls.
--
-- KEYS[1] fg:{p}:q (the line)   KEYS[2] fg:{p}:gen
-- KEYS[3] fg:{p}:q:ctl:<key> (the request's idempotency key)
-- ARGV    action ('pause', 'resume', 'close', 'rate'), the new rate,
--         fingerprint, idempotency ttl (ms), the gate's rate, burst,
--         a seed (hex) should this call open the sale
--
-- pause: the head stops where it is (nobody admitted, arrivals still get
-- places); resume: it goes on from there, in order; close: arrivals get
-- 409 closed; rate: the head moves on at the new rate from now on.  A
-- retry with the same key replays the first answer and changes nothing.
-- Replies:
--   {1, state, rate}     done     {2, state, rate}   replay
--   {4}                  key used with another body
--   {8}                  unknown product
--
-- The contract, read by lua/header.sh into C #defines:
--- keys: line gen ctl
--- args: action rate fingerprint ttl gate_rate burst seed
--- replies: DONE=1 REPLAY=2 KEY_REUSED=4 UNKNOWN=8

-- #include line.lua

local line_key, gen_key, ctl_key = KEYS[1], KEYS[2], KEYS[3]
local action, new_rate, fp, ttl, rate, burst, seed =
    ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]),
    tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]

local c = redis.call('HMGET', ctl_key, 'f', 'st', 'r')
if c[1] then
    if c[1] ~= fp then
        return {4}
    end
    return {2, c[2], tonumber(c[3])}
end

if redis.call('EXISTS', gen_key) == 0 then
    return {8}
end

local now = line_clock()
local line = line_load(line_key)
rate = line_rate(line, rate)
line_open(line, line_key, now, seed)

-- the head as of now becomes the base the change starts from
local H = line_head(line, now, rate, burst)

if action == 'pause' or action == 'close' then
    -- stopped: no turn is free meanwhile (the capacity an idle product
    -- saved up would admit the first arrivals of a paused line)
    line.st = action == 'pause' and 'paused' or 'closed'
    H = math.min(H, line.n)
elseif action == 'resume' then
    line.st = ''
elseif action == 'rate' then
    line.r = new_rate
    rate = new_rate
end

redis.call('HSET', line_key, 'h', line_num(H), 't', line_num(now),
           'st', line.st, 'r', line.r)

redis.call('HSET', ctl_key, 'f', fp, 'st', line.st, 'r', rate)
redis.call('PEXPIRE', ctl_key, ttl)

return {1, line.st, rate}
