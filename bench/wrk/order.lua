-- wrk script: POST /order with a distinct userId and X-Idempotency-Key per
-- request, for one product (WRK_PRODUCT), as bench/loadgen.c sends them.
--   WRK_PRODUCT=p1 wrk -t1 -c100 -d10 -s bench/wrk/order.lua http://127.0.0.1:8080/order

local product = os.getenv("WRK_PRODUCT") or "p1"
local counter = 0
local thread_id = 0
local run = tostring(os.time())

function setup(thread)
    thread_id = thread_id + 1
    thread:set("tid", thread_id)
end

function request()
    counter = counter + 1
    local n = run .. "-" .. (tid or 0) .. "-" .. counter
    local body = '{"productId":"' .. product .. '","userId":"u-' .. n
                 .. '","quantity":1}'
    return wrk.format("POST", nil, {
        ["Content-Type"] = "application/json",
        ["X-Idempotency-Key"] = "k-" .. n,
    }, body)
end

function done(summary, latency, requests)
    io.write(string.format("wrk: p50 %.3f ms, p99 %.3f ms\n",
                           latency:percentile(50) / 1000,
                           latency:percentile(99) / 1000))
end
