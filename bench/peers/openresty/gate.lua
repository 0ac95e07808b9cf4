-- The OpenResty way of gating a flash sale, for the benchmark only: what a
-- user who would not pick Flux-Gate writes with lua-nginx-module,
-- lua-resty-redis (Debian: lua-nginx-redis) and lua-cjson.  It makes the
-- same decision as the module with the same script (lua/order.lua as
-- lua/expand.sh makes it, the v3 contract: 7 keys, 21 arguments, the queue
-- on as the shipped gate has it, no ticket), one EVALSHA per request on a
-- keepalive pool.  It has no Kafka client (none is packaged for OpenResty
-- in Debian), so it is compared on the path that does not produce: the
-- sold-out path.
--
-- $fg_flag = 1 adds the same idea as fluxgate_sold_out_cache with what
-- OpenResty offers: a lua_shared_dict "fg_sold_out" (the nginx.conf
-- declares it) flagged for a second when the script answered sold out with
-- stock 0, and read before Redis.

local cjson = require "cjson.safe"
local redis = require "nginx.redis"

if ngx.req.get_method() ~= "POST" then
    ngx.header["Allow"] = "POST"
    return ngx.exit(405)
end

local ctype = ngx.var.content_type or ""
if not ctype:find("^application/json") then
    return ngx.exit(415)
end

-- a body with its Content-Length, as the module answers (not chunked)
local function respond(status, body)
    ngx.status = status
    ngx.header["Content-Type"] = "application/json"
    ngx.header["Content-Length"] = #body + 1
    ngx.print(body, "\n")
    return ngx.exit(status)
end

local function bad(field)
    return respond(400, cjson.encode({status = "error", field = field}))
end

local key = ngx.var.http_x_idempotency_key
if not key or #key > 64 or not key:find("^[A-Za-z0-9_-]+$") then
    return bad("X-Idempotency-Key")
end

ngx.req.read_body()
local order = cjson.decode(ngx.req.get_body_data() or "")
if type(order) ~= "table" then
    return bad("body")
end

local function id_ok(v)
    return type(v) == "string" and #v <= 64 and v:find("^[A-Za-z0-9._-]+$")
end

if not id_ok(order.productId) then return bad("productId") end
if not id_ok(order.userId) then return bad("userId") end
local qty = order.quantity or 1
if type(qty) ~= "number" or qty ~= math.floor(qty) or qty < 1 or qty > 10 then
    return bad("quantity")
end

local p = order.productId
local flags = ngx.var.fg_flag == "1" and ngx.shared.fg_sold_out or nil
if flags and flags:get(p) then
    return respond(409, '{"status":"sold_out"}')
end

local tag = "fg:{" .. p .. "}:"
local order_id = string.format("%08x-%04x-7%03x-%04x-%012x",
                               ngx.now() * 1000 % 4294967296,
                               math.random(0, 65535), math.random(0, 4095),
                               32768 + math.random(0, 16383),
                               math.random(0, 281474976710655))

local red = redis:new()
red:set_timeout(1000)
local ok, err = red:connect("127.0.0.1", tonumber(ngx.var.fg_redis_port))
if not ok then
    return respond(503, cjson.encode({status = "error", error = err}))
end

-- KEYS stock, the line, buyers, idem, gen, pending, the line's prefix;
-- ARGV userId, quantity, fingerprint, orderId, ttl ms, rate, burst,
-- per-user limit, key, queue, window us, ticket life us, buyer, client,
-- places per client, proof, seed, and the four fields of no ticket
local seed = string.format("%08x%08x%08x%08x", math.random(0, 2147483647),
                           math.random(0, 2147483647),
                           math.random(0, 2147483647),
                           math.random(0, 2147483647))
local function run()
    return red:evalsha(ngx.var.fg_script_sha, 7, tag .. "stock", tag .. "q",
                       tag .. "buyers", tag .. "idem:" .. key, tag .. "gen",
                       tag .. "pending", tag .. "q:", order.userId, qty,
                       order.userId .. ":" .. qty, order_id, 60000,
                       tonumber(ngx.var.fg_rate), tonumber(ngx.var.fg_burst),
                       0, key, "1", 30000000, 3600000000, order.userId, "",
                       0, "0", seed, "", "", "", "")
end
local res
res, err = run()
if not res and err and err:find("NOSCRIPT") then
    red:script("load", GATE_SCRIPT)
    res, err = run()
end
if not res then
    return respond(503, cjson.encode({status = "error", error = err}))
end
red:set_keepalive(10000, 200)

local kind = res[1]
if kind == 1 then
    return respond(200, cjson.encode({status = "success", orderId = order_id}))
elseif kind == 2 then
    ngx.header["Idempotent-Replayed"] = "true"
    return respond(res[2], cjson.encode({status = "ignored", outcome = res[3],
                                         orderId = res[4]}))
elseif kind == 3 then
    return respond(409, '{"status":"in_progress"}')
elseif kind == 4 then
    return respond(422, '{"status":"error"}')
elseif kind == 5 then
    ngx.header["Retry-After"] = math.ceil(res[2] / 1000)
    return ngx.redirect("/waiting-room/", 302)
elseif kind == 6 then
    if flags and res[2] == 0 then
        flags:set(p, true, 1)
    end
    return respond(409, '{"status":"sold_out"}')
elseif kind == 7 then
    return respond(409, '{"status":"limit_reached"}')
elseif kind == 8 then
    return respond(404, '{"status":"unknown_product"}')
else
    -- the line's answers (places, tickets, closed): not this benchmark's
    return respond(503, cjson.encode({status = "error", reply = kind}))
end
