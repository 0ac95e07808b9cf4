-- lib/shuffle.lua: the turn of pre-queue place k among n, a keyed
-- permutation of [0, n): include/fluxgate_shuffle.h computes the same in
-- C (t/207-shuffle.t checks that both agree).  A balanced Feistel network
-- of eight rounds (FG_SHUFFLE_ROUNDS) over the smallest 2^(2h) >= n, walked in cycles until
-- the result falls in [0, n); the round function is SHA-1 of
-- "<seed>:<round>:<half>", its first eight hex digits, masked to h bits.

local function shuffle(s, k, n)
    if n <= 1 or k >= n then
        return k
    end
    local bits = 1
    while 2 ^ (2 * bits) < n do
        bits = bits + 1
    end
    local half = 2 ^ bits
    local function encrypt(x)
        local left, right = math.floor(x / half), x % half
        for r = 0, 7 do
            local h = redis.sha1hex(s .. ':' .. r .. ':'
                                    .. string.format('%d', right))
            local f = tonumber(string.sub(h, 1, 8), 16) % half
            left, right = right, bit.bxor(left, f)
        end
        return left * half + right
    end
    local y = encrypt(k)
    while y >= n do
        y = encrypt(y)
    end
    return y
end
