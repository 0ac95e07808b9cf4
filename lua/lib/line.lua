-- lib/line.lua: a product's line, as order.lua, queue_head.lua and
-- queue_control.lua read it (each includes this file: `config` and
-- reconcile/Makefile expand "-- #include" lines before loading a script).
--
-- fg:{p}:q holds e (the sale's epoch), n (turns handed out), h and t (the
-- head: h turns admitted at time t), st ('', 'paused' or 'closed'), r
-- (the operator's rate, 0: the gate's), o (opensAt, absent: open), P and
-- s (the pre-queue's size and seed, from the opening on), ck and ns (the
-- turns whose window closed that were counted, and the no-shows among
-- them), mt (when a booking time was last sampled).  Times: microseconds
-- of Redis TIME.

local function line_load(line_key)
    local q = redis.call('HMGET', line_key, 'e', 'n', 'h', 't', 'st', 'r',
                         'o', 'P', 's', 'ck', 'ns', 'mt')
    return {
        e = tonumber(q[1]) or 0, n = tonumber(q[2]) or 0,
        h = tonumber(q[3]) or 0, t = tonumber(q[4]) or 0, st = q[5] or '',
        r = tonumber(q[6] or '') or 0, o = tonumber(q[7] or ''),
        P = tonumber(q[8] or ''), s = q[9], ck = tonumber(q[10]) or 0,
        ns = tonumber(q[11]) or 0, mt = tonumber(q[12]) or 0 }
end

local function line_clock()
    local c = redis.call('TIME')
    return tonumber(c[1]) * 1000000 + tonumber(c[2]), tonumber(c[1])
end

-- the product's rate: the operator's (queue control), else the gate's
local function line_rate(line, rate)
    if line.r > 0 then
        return line.r
    end
    return rate
end

-- the opening: the first script at or after it freezes the pre-queue and
-- keeps the seed it was given (written at once: whatever this call
-- answers, the seed is the one)
local function line_open(line, line_key, now, seed)
    if line.o and not line.P and now >= line.o then
        line.P, line.s, line.h, line.t = line.n, seed, 0, line.o
        redis.call('HSET', line_key, 'P', line.P, 's', seed, 'h', 0,
                   't', string.format('%d', line.o))
    end
end

local function line_scheduled(line)
    return line.o ~= nil and line.P == nil
end

-- H: the turns admitted by now (not rounded).  It saves up at most one
-- free turn beyond those handed out, plus the burst, as a GCRA does
local function line_head(line, now, rate, burst)
    if line_scheduled(line) then
        return 0
    end
    if line.st == 'paused' or line.st == 'closed' then
        return line.h
    end
    if rate == 0 then
        return line.n + burst + 1
    end
    local x = line.h + math.max(0, now - line.t) * rate / 1000000
    return math.min(x, line.n + burst + 1)
end

-- the admission window, in turns: the window's time at the rate
local function line_window(window, rate)
    if rate == 0 then
        return math.huge
    end
    return math.max(1, math.ceil(window / 1000000 * rate))
end

-- a number as Redis keeps it in the line's hash
local function line_num(v)
    return string.format(v == math.floor(v) and '%d' or '%.6f', v)
end
