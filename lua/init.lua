-- Flux-Gate: POST /init, a new generation of a product's stock.
--
-- KEYS[1] fg:{p}:stock   KEYS[2] fg:{p}:gen   KEYS[3] fg:{p}:admin:<key>
-- KEYS[4] fg:{p}:q (the line)   KEYS[5] fg:{p}:q: (its epochs' keys):
--         only with opensAt
-- ARGV    stock, ifGeneration ('' = unconditional), fingerprint,
--         idempotency ttl (ms), '1' when the request had an
--         X-Idempotency-Key (KEYS[3] is then its key), opensAt (us of
--         Redis TIME, '' = none)
--
-- Every set starts a new generation: the stock of the old one is gone
-- with it, and the orders reserved in it stay accounted against it.  A
-- retry with the same key and body replays the first answer and changes
-- nothing; ifGeneration makes the set a compare-and-set.
--
-- With opensAt the set announces a sale: the line starts anew (a new
-- epoch: places and tickets of the last one are void, its keys deleted or
-- left to expire), and until opensAt arrivals get places in the pre-queue
-- (lua/order.lua).  Without it the line goes on as it is (a restock).
-- Replies:
--   {1, generation}          set
--   {2, generation, stock}   replay of the key's first answer
--   {3, generation}          ifGeneration is not the current generation
--   {4}                      key used with another body
--
-- The contract, read by lua/header.sh into C #defines:
--- keys: stock gen admin line prefix
--- args: stock if_generation fingerprint ttl has_key opens_at
--- replies: SET=1 REPLAY=2 MISMATCH=3 KEY_REUSED=4

local stock_key, gen_key, admin_key, line_key =
    KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local stock, if_gen, fp, ttl, has_key, opens_at =
    ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5] == '1', ARGV[6]

if has_key then
    local a = redis.call('HMGET', admin_key, 'f', 'g', 's')
    if a[1] then
        if a[1] ~= fp then
            return {4}
        end
        return {2, tonumber(a[2]), tonumber(a[3])}
    end
end

local current = tonumber(redis.call('HGET', gen_key, 'g')) or 0

if if_gen ~= '' and tonumber(if_gen) ~= current then
    return {3, current}
end

local g = current + 1

redis.call('HSET', gen_key, 'g', g, 's', stock)
redis.call('SET', stock_key, stock)

if opens_at and opens_at ~= '' then
    local e = tonumber(redis.call('HGET', line_key, 'e')) or 0
    local old = KEYS[5] .. e
    redis.call('DEL', old .. ':spent', old .. ':marks', old .. ':pb')
    redis.call('DEL', line_key)
    redis.call('HSET', line_key, 'e', e + 1, 'n', 0, 'h', 0, 't', 0,
               'o', opens_at)
end

if has_key then
    redis.call('HSET', admin_key, 'f', fp, 'g', g, 's', stock)
    redis.call('PEXPIRE', admin_key, ttl)
end

return {1, g}
