/*
 * test_jwt.c: unit tests of ngx_fluxgate_jwt.c, the buyer's HS256 JWT,
 * printed as TAP (t/105-jwt.t runs it, with LeakSanitizer on in the
 * sanitized build: no path may leak).
 *
 * The tokens in the table were made outside this code, with Python's hmac
 * module: each signed one is jwt(header, payload) of its two columns,
 *
 *   SECRET = b"flux-gate-test-secret-0123456789abcdef"
 *   def b64(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
 *   def jwt(header, payload, key=SECRET, digest=hashlib.sha256):
 *       s = b64(header.encode()) + "." + b64(payload.encode())
 *       return s + "." + b64(hmac.new(key, s.encode(), digest).digest())
 *
 * with key or digest changed where the name says ("another secret",
 * "HMAC-SHA512"); the others (no header or payload column) were cut by
 * hand from the first token as their names say.  The first token's
 * signature agrees with OpenSSL's command line:
 *
 *   printf %s "$header.$payload" | openssl dgst -sha256 -mac HMAC \
 *       -macopt key:flux-gate-test-secret-0123456789abcdef -binary \
 *       | basenc --base64url | tr -d =
 *
 * The tests after the table build tokens with sign() below, which is
 * first shown to make the table's first token byte for byte.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "ngx_fluxgate_jwt.h"
#include "test_tap.h"

#define SECRET  "flux-gate-test-secret-0123456789abcdef"
#define NOW     1764000000LL          /* 2025-11-24T16:00:00Z */
#define HEADER  "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"

typedef struct {
    const char  *name;
    const char  *header;     /* what was signed, NULL: cut by hand */
    const char  *payload;
    const char  *token;
    const char  *why;        /* NULL: valid */
    const char  *sub;
    long long    exp;
} jwt_case_t;

static const jwt_case_t  cases[] = {
    { "valid",
      "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
      "{\"sub\":\"user-42\",\"exp\":1764000600,\"iat\":1763999990}",
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxN"
      "zY0MDAwNjAwLCJpYXQiOjE3NjM5OTk5OTB9.GQHIiSwbB3C0aZbNooKr0KwatWEsLTed4V"
      "meYNFo-sk",
      NULL,
      "user-42", 1764000600LL },
    { "typ absent, exp a real",
      "{\"alg\":\"HS256\"}",
      "{\"sub\":\"u.1_x-Y\",\"exp\":1764000060.5}",
      "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1LjFfeC1ZIiwiZXhwIjoxNzY0MDAwMDYwLjV9."
      "OwOOfKNfTWXsP2RalFT0dYadx5_5LA7SixLUqKB9T6M",
      NULL,
      "u.1_x-Y", 1764000060LL },
    { "typ in lower case, a kid",
      "{\"typ\":\"jwt\",\"alg\":\"HS256\",\"kid\":\"k1\"}",
      "{\"sub\":\"user-42\",\"exp\":1764000600}",
      "eyJ0eXAiOiJqd3QiLCJhbGciOiJIUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJ1c2VyLT"
      "QyIiwiZXhwIjoxNzY0MDAwNjAwfQ.4uPvCIMVIHpoQ1WqKsG-OwTHqFrlEXuozW8xach18"
      "7g",
      NULL,
      "user-42", 1764000600LL },
    { "exp 29 s ago: inside the leeway",
      "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
      "{\"sub\":\"user-42\",\"exp\":1763999971}",
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxN"
      "zYzOTk5OTcxfQ.3X2mUZriZ5jnrrrOnYXyTBHdmNu_qfCe1x4ntTWDleQ",
      NULL,
      "user-42", 1763999971LL },
    { "exp 30 s ago: outside the leeway",
      "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
      "{\"sub\":\"user-42\",\"exp\":1763999970}",
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxN"
      "zYzOTk5OTcwfQ.a5QYlQr36ZMgvstODLmnLfq2Gad8TGCFtXWzF201An4",
      "expired",
      NULL, 0LL },
    { "exp an hour ago",
      "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
      "{\"sub\":\"user-42\",\"exp\":1763996400}",
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxN"
      "zYzOTk2NDAwfQ.t4scooTLHX_-_F3bT-hUF9_HAZlLwqDb-sxFcI5b6qc",
      "expired",
      NULL, 0LL },
    { "exp 29.5 s ago rounds down: expired",
      "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
      "{\"sub\":\"user-42\",\"exp\":1763999970.5}",
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxN"
      "zYzOTk5OTcwLjV9.AXHC5qSj8bhUAG2gZQmp4HcpiYzLveeykwQuQ1D8TJA",
      "expired",
      NULL, 0LL },
    { "nbf 30 s ahead: inside the leeway",
      "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
      "{\"sub\":\"user-42\",\"exp\":1764000600,\"nbf\":1764000030}",
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxN"
      "zY0MDAwNjAwLCJuYmYiOjE3NjQwMDAwMzB9.U4hhHj3LWwJjM3t5zdNqykxeFGhsZbgNIQ"
      "VWIo_uUy8",
      NULL,
      "user-42", 1764000600LL },
    { "nbf 31 s ahead",
      "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
      "{\"sub\":\"user-42\",\"exp\":1764000600,\"nbf\":1764000031}",
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxN"
      "zY0MDAwNjAwLCJuYmYiOjE3NjQwMDAwMzF9.FONG_z7V2zr-hS1IRnFjjuzC_giqsjOck6"
      "pE3oT-8fk",
      "not yet valid",
      NULL, 0LL },
    { "nbf 30.5 s ahead rounds up: not yet valid",
      "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
      "{\"sub\":\"user-42\",\"exp\":1764000600,\"nbf\":1764000030.5}",
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxN"
      "zY0MDAwNjAwLCJuYmYiOjE3NjQwMDAwMzAuNX0.8jOQRHPM87HmaONTZs2IPDzO5-rlIfQ"
      "qcpMDEKeR2T0",
      "not yet valid",
      NULL, 0LL },
    { "iat 30 s ahead: inside the leeway",
      "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
      "{\"sub\":\"user-42\",\"exp\":1764000600,\"iat\":1764000030}",
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxN"
      "zY0MDAwNjAwLCJpYXQiOjE3NjQwMDAwMzB9.PFQgxbuh9-Rxnw3RGyyEQ5I_junpygo057"
      "9uaDy1OCE",
      NULL,
      "user-42", 1764000600LL },
    { "iat 31 s ahead",
      "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
      "{\"sub\":\"user-42\",\"exp\":1764000600,\"iat\":1764000031}",
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxN"
      "zY0MDAwNjAwLCJpYXQiOjE3NjQwMDAwMzF9.SYx3gCraw7aQbFA_7sbzW_e4bCxfK_Hnb7"
      "Hb4AoBvY8",
      "issued in the future",
      NULL, 0LL },
    { "alg none, no signature",
      NULL,
      NULL,
      "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxNz"
      "Y0MDAwNjAwfQ.",
      "not HS256",
      NULL, 0LL },
    { "alg none, signed anyway",
      "{\"alg\":\"none\"}",
      "{\"sub\":\"user-42\",\"exp\":1764000600}",
      "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxNzY0MDAwNjAwfQ.nE6"
      "e7TLZD8Mu5P86S1480YlcUilU4N8avvXUJZFa_j0",
      "not HS256",
      NULL, 0LL },
    { "alg HS512, signed with HMAC-SHA512",
      "{\"alg\":\"HS512\",\"typ\":\"JWT\"}",
      "{\"sub\":\"user-42\",\"exp\":1764000600}",
      "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxN"
      "zY0MDAwNjAwfQ.QzUPjIon8FF1LK2t7CsUfrmdC9QYbKkzoL5ousmNSzY3bEQL-qObE3kz"
      "suqH0R-0pk3UTialzA9fk_9VuKYLOA",
      "not HS256",
      NULL, 0LL },
    { "alg in lower case",
      "{\"alg\":\"hs256\"}",
      "{\"sub\":\"user-42\",\"exp\":1764000600}",
      "eyJhbGciOiJoczI1NiJ9.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxNzY0MDAwNjAwfQ.Qf"
      "NZYiKNiMBRpqOun5OWhxf3gGsPoYhCCTtx_E3jZok",
      "not HS256",
      NULL, 0LL },
    { "alg missing",
      "{\"typ\":\"JWT\"}",
      "{\"sub\":\"user-42\",\"exp\":1764000600}",
      "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxNzY0MDAwNjAwfQ.eSZ2"
      "KiCXeJ-iSCUdkxxjuj-TfajkV7thTAGFQKiEZlo",
      "not HS256",
      NULL, 0LL },
    { "alg not a string",
      "{\"alg\":[\"HS256\"]}",
      "{\"sub\":\"user-42\",\"exp\":1764000600}",
      "eyJhbGciOlsiSFMyNTYiXX0.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxNzY0MDAwNjAwfQ"
      ".QqYGrcuVJNIEYXteEtjsCEMSgEBg0REbdNgEhXSoke8",
      "not HS256",
      NULL, 0LL },
    { "typ JWS",
      "{\"alg\":\"HS256\",\"typ\":\"JWS\"}",
      "{\"sub\":\"user-42\",\"exp\":1764000600}",
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXUyJ9.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxN"
      "zY0MDAwNjAwfQ.IZQAeEiMP-Zqx9APTfTa0gBydRH1TwaJ3VpF6VTeEqM",
      "typ is not JWT",
      NULL, 0LL },
    { "crit header",
      "{\"alg\":\"HS256\",\"crit\":[\"exp\"]}",
      "{\"sub\":\"user-42\",\"exp\":1764000600}",
      "eyJhbGciOiJIUzI1NiIsImNyaXQiOlsiZXhwIl19.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwI"
      "joxNzY0MDAwNjAwfQ.pjE2mEW_2wgBbZTJn1v3qBJnDrqNcRtCCMIrHY3Mppc",
      "crit header not supported",
      NULL, 0LL },
    { "signed with another secret",
      "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
      "{\"sub\":\"user-42\",\"exp\":1764000600}",
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxN"
      "zY0MDAwNjAwfQ.4Qxx_WbwZjSjVun241Z6NYlP8vk6wOHg81MhcgS7Ccg",
      "bad signature",
      NULL, 0LL },
    { "payload swapped, signature kept",
      NULL,
      NULL,
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZG1pbiIsImV4cCI6MTc2N"
      "DAwMDYwMH0.GQHIiSwbB3C0aZbNooKr0KwatWEsLTed4VmeYNFo-sk",
      "bad signature",
      NULL, 0LL },
    { "signature cut short",
      NULL,
      NULL,
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxN"
      "zY0MDAwNjAwLCJpYXQiOjE3NjM5OTk5OTB9.GQHIiSwbB3C0aZbNooKr0KwatWEsLTed4V"
      "meYNFo-s",
      "bad signature",
      NULL, 0LL },
    { "signature with its last unused bits set",
      NULL,
      NULL,
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxN"
      "zY0MDAwNjAwLCJpYXQiOjE3NjM5OTk5OTB9.GQHIiSwbB3C0aZbNooKr0KwatWEsLTed4V"
      "meYNFo-sl",
      "bad signature",
      NULL, 0LL },
    { "signature as standard base64 with padding",
      NULL,
      NULL,
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxN"
      "zY0MDAwNjAwLCJpYXQiOjE3NjM5OTk5OTB9.GQHIiSwbB3C0aZbNooKr0KwatWEsLTed4V"
      "meYNFo+sk=",
      "bad signature",
      NULL, 0LL },
    { "no exp",
      "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
      "{\"sub\":\"user-42\"}",
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIn0.4MQmpEPbN"
      "AUzs5yXz5b7huxsRKNDR5Rtm1A_-4GB1Ec",
      "no exp",
      NULL, 0LL },
    { "exp a string",
      "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
      "{\"sub\":\"user-42\",\"exp\":\"1764000600\"}",
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoiM"
      "Tc2NDAwMDYwMCJ9.sVm8mdDT6YiD26f_m6RtSw6BlIqN9sdgco5Zqhz1mQU",
      "exp is not a valid time",
      NULL, 0LL },
    { "exp negative",
      "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
      "{\"sub\":\"user-42\",\"exp\":-1}",
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjotM"
      "X0.96PyT6eC-6C-RiX6aG4RBYwgFpHVR_w6I6pi7I7etT8",
      "exp is not a valid time",
      NULL, 0LL },
    { "exp 2^53",
      "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
      "{\"sub\":\"user-42\",\"exp\":9007199254740992}",
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjo5M"
      "DA3MTk5MjU0NzQwOTkyfQ.md1sYnol18kuRzao4wghk2PdOO11HXNXLJoyI7OEltA",
      "exp is not a valid time",
      NULL, 0LL },
    { "nbf true",
      "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
      "{\"sub\":\"user-42\",\"exp\":1764000600,\"nbf\":true}",
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxN"
      "zY0MDAwNjAwLCJuYmYiOnRydWV9.dLsPTHLbmd5H5r17VavDfm8F-1pAoSEb3TpfTP4wcm"
      "U",
      "nbf is not a valid time",
      NULL, 0LL },
    { "iat null",
      "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
      "{\"sub\":\"user-42\",\"exp\":1764000600,\"iat\":null}",
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxN"
      "zY0MDAwNjAwLCJpYXQiOm51bGx9.7OjVrdmTDtZACa8Y3Uf8uglUkHlDBsRsvE39EsFmlW"
      "o",
      "iat is not a valid time",
      NULL, 0LL },
    { "sub missing",
      "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
      "{\"exp\":1764000600}",
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3NjQwMDA2MDB9.iho9oLtI"
      "gRLcfk2-1snKLvtCr88SMHX520YHJ6lCI_E",
      "sub missing or not a valid user id",
      NULL, 0LL },
    { "sub a number",
      "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
      "{\"sub\":42,\"exp\":1764000600}",
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOjQyLCJleHAiOjE3NjQwMDA2M"
      "DB9.5FxZpiNY45c4Se_VBObLAs-MohEZh84RAatfNDpEOvY",
      "sub missing or not a valid user id",
      NULL, 0LL },
    { "sub empty",
      "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
      "{\"sub\":\"\",\"exp\":1764000600}",
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIiLCJleHAiOjE3NjQwMDA2M"
      "DB9.9bzyWOWij_yrcFFjJtMjb20sHbDFLWTwZ24G_7XaTX4",
      "sub missing or not a valid user id",
      NULL, 0LL },
    { "sub with a space",
      "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
      "{\"sub\":\"user 42\",\"exp\":1764000600}",
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyIDQyIiwiZXhwIjoxN"
      "zY0MDAwNjAwfQ.JAbHhQSIaniRXH0lvCt9gtAbtGKstwjlNoxShZBzB58",
      "sub missing or not a valid user id",
      NULL, 0LL },
    { "sub with a colon and braces",
      "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
      "{\"sub\":\"{p}:x\",\"exp\":1764000600}",
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ7cH06eCIsImV4cCI6MTc2N"
      "DAwMDYwMH0.RAVOCA9ie7xgwlHy3wwEDirhGoucTij8F6MYCRi66gc",
      "sub missing or not a valid user id",
      NULL, 0LL },
    { "sub 64 characters",
      "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
      "{\"sub\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
      "aaaaa\",\"exp\":1764000600}",
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhYWFhYWFhYWFhYWFhYWFhY"
      "WFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhIiwiZXh"
      "wIjoxNzY0MDAwNjAwfQ.hk7UvOo625ozeIskdDO3NMPLvEb2kclz3bVg4uL9m-g",
      NULL,
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
      1764000600LL },
    { "sub 65 characters",
      "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
      "{\"sub\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
      "aaaaaa\",\"exp\":1764000600}",
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhYWFhYWFhYWFhYWFhYWFhY"
      "WFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYSIsImV"
      "4cCI6MTc2NDAwMDYwMH0._MOuu_OVsZux0WNyXjNMmPcQiT651RRohYyEOrMsvH0",
      "sub missing or not a valid user id",
      NULL, 0LL },
    { "two parts",
      NULL,
      NULL,
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxN"
      "zY0MDAwNjAwLCJpYXQiOjE3NjM5OTk5OTB9",
      "not a JWT",
      NULL, 0LL },
    { "four parts",
      NULL,
      NULL,
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxN"
      "zY0MDAwNjAwLCJpYXQiOjE3NjM5OTk5OTB9.GQHIiSwbB3C0aZbNooKr0KwatWEsLTed4V"
      "meYNFo-sk.GQHIiSwbB3C0aZbNooKr0KwatWEsLTed4VmeYNFo-sk",
      "not a JWT",
      NULL, 0LL },
    { "no dot",
      NULL,
      NULL,
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
      "not a JWT",
      NULL, 0LL },
    { "empty header",
      NULL,
      NULL,
      ".eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxNzY0MDAwNjAwLCJpYXQiOjE3NjM5OTk5OTB9."
      "GQHIiSwbB3C0aZbNooKr0KwatWEsLTed4VmeYNFo-sk",
      "not a JWT",
      NULL, 0LL },
    { "header as standard base64",
      NULL,
      NULL,
      "eyJhbGciOiJIUzI1NiIsIngiOiI/Pz8ifQ.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxNzY"
      "0MDAwNjAwLCJpYXQiOjE3NjM5OTk5OTB9.GQHIiSwbB3C0aZbNooKr0KwatWEsLTed4Vme"
      "YNFo-sk",
      "header is not base64url",
      NULL, 0LL },
    { "header with padding",
      NULL,
      NULL,
      "eyJhbGciOiJIUzI1NiJ9IA==.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxNzY0MDAwNjAwL"
      "CJpYXQiOjE3NjM5OTk5OTB9.GQHIiSwbB3C0aZbNooKr0KwatWEsLTed4VmeYNFo-sk",
      "header is not base64url",
      NULL, 0LL },
    { "header of 4n+1 characters",
      NULL,
      NULL,
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9A.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjox"
      "NzY0MDAwNjAwLCJpYXQiOjE3NjM5OTk5OTB9.GQHIiSwbB3C0aZbNooKr0KwatWEsLTed4"
      "VmeYNFo-sk",
      "header is not base64url",
      NULL, 0LL },
    { "payload with a stray '*', signed",
      NULL,
      NULL,
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIi*iJ1c2VyLTQyIiwiZXhwIjoxN"
      "zY0MDAwNjAwLCJpYXQiOjE3NjM5OTk5OTB9.wuuyQaDVyJpCCCpFaCzWPpNOERoOjhPYyA"
      "kqy8M4ZPA",
      "payload is not base64url",
      NULL, 0LL },
    { "header not JSON",
      NULL,
      NULL,
      "SFMyNTY.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxNzY0MDAwNjAwLCJpYXQiOjE3NjM5OT"
      "k5OTB9.GQHIiSwbB3C0aZbNooKr0KwatWEsLTed4VmeYNFo-sk",
      "header is not a JSON object",
      NULL, 0LL },
    { "header a JSON array",
      NULL,
      NULL,
      "WyJhbGciLCJIUzI1NiJd.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxNzY0MDAwNjAwLCJpY"
      "XQiOjE3NjM5OTk5OTB9.GQHIiSwbB3C0aZbNooKr0KwatWEsLTed4VmeYNFo-sk",
      "header is not a JSON object",
      NULL, 0LL },
    { "payload not JSON, signed",
      "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
      "sub=user-42",
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.c3ViPXVzZXItNDI._sdIkbPHc33L2wsA9"
      "5r1zrWnRWDn-JP9dCAm8viNbmA",
      "payload is not a JSON object",
      NULL, 0LL },
    { "payload not JSON, another secret: the signature is named",
      "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
      "sub=user-42",
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.c3ViPXVzZXItNDI.FmiWHM65BLHlkd_Xz"
      "h9uggPzIGqw1pCJhVQkpuT-dcM",
      "bad signature",
      NULL, 0LL },
    { "payload a JSON string, signed",
      "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
      "\"user-42\"",
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.InVzZXItNDIi.a_x6AbSbWfDAyC6QbpbA"
      "3wfrie69S-ZT65lwFckbptk",
      "payload is not a JSON object",
      NULL, 0LL },
    { "payload with a NUL escape, signed",
      "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
      "{\"sub\":\"a\\u0000b\",\"exp\":1764000600}",
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhXHUwMDAwYiIsImV4cCI6M"
      "Tc2NDAwMDYwMH0.tU_4PIbb89qssCzOnr9c8mZEWqtRrLK6bqD_KwjWiCE",
      "payload is not a JSON object",
      NULL, 0LL },
    { "duplicate sub, signed",
      "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
      "{\"sub\":\"user-42\",\"exp\":1764000600,\"sub\":\"admin\"}",
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxN"
      "zY0MDAwNjAwLCJzdWIiOiJhZG1pbiJ9.jT2XGTCUMZ-oN9JzXwaM1KP6HU3S3n1O5cd7nr"
      "v8nfM",
      "duplicate key in payload",
      NULL, 0LL },
    { "duplicate alg",
      "{\"alg\":\"HS256\",\"alg\":\"none\"}",
      "{\"sub\":\"user-42\",\"exp\":1764000600}",
      "eyJhbGciOiJIUzI1NiIsImFsZyI6Im5vbmUifQ.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjo"
      "xNzY0MDAwNjAwfQ.k2MbaM61yG5hYa70fp4DmGkTEe5iTQEKMExgDK_I0FE",
      "duplicate key in header",
      NULL, 0LL },
};

static ngx_fluxgate_jwt_t  jwt;
static const char         *why;
static char                buf[1 << 20];


static int
verify_at(const char *token, size_t len, long long now)
{
    return ngx_fluxgate_jwt_verify((const unsigned char *) token, len,
                                   (const unsigned char *) SECRET,
                                   strlen(SECRET), now, &jwt, &why);
}


static int
verify(const char *token)
{
    return verify_at(token, strlen(token), NOW);
}


static void
accepted(const char *token, const char *sub, long long exp, const char *what)
{
    if (!is_int(verify(token), 0, "%s: accepted", what)) {
        diag("refused: %s", why ? why : "(no reason)");
        return;
    }

    ok(why == NULL, "%s: no reason given", what);
    is_str(jwt.sub, sub, "%s: sub", what);
    ok(jwt.sub_len == strlen(sub) && jwt.sub[jwt.sub_len] == '\0',
       "%s: sub_len %zu, NUL-terminated", what, jwt.sub_len);
    is_int(jwt.exp, exp, "%s: exp", what);
}


/* a refusal leaves the caller's struct as it was */

static void
refused_len(const char *token, size_t len, long long now, const char *want,
    const char *what)
{
    ngx_fluxgate_jwt_t  before;

    memset(&jwt, 0x5a, sizeof(jwt));
    before = jwt;

    if (!is_int(verify_at(token, len, now), -1, "%s: refused", what)) {
        return;
    }

    is_str(why, want, "%s: the reason", what);
    ok(memcmp(&jwt, &before, sizeof(jwt)) == 0, "%s: out untouched", what);
}


static void
refused(const char *token, const char *want, const char *what)
{
    refused_len(token, strlen(token), NOW, want, what);
}


static void
b64url(const unsigned char *src, size_t len, char *dst)
{
    size_t       i;
    unsigned     acc;
    int          bits;
    const char  *abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                       "0123456789-_";

    acc = 0;
    bits = 0;

    for (i = 0; i < len; i++) {
        acc = (acc << 8) | src[i];
        bits += 8;

        while (bits >= 6) {
            bits -= 6;
            *dst++ = abc[(acc >> bits) & 63];
        }
    }

    if (bits > 0) {
        *dst++ = abc[(acc << (6 - bits)) & 63];
    }

    *dst = '\0';
}


/* buf = a token of header and payload signed with key; returns buf */

static char *
sign(const char *header, const char *payload, const char *key)
{
    char           *p;
    unsigned int    n;
    unsigned char   mac[EVP_MAX_MD_SIZE];

    b64url((const unsigned char *) header, strlen(header), buf);
    p = buf + strlen(buf);
    *p++ = '.';
    b64url((const unsigned char *) payload, strlen(payload), p);
    p += strlen(p);

    if (HMAC(EVP_sha256(), key, (int) strlen(key), (unsigned char *) buf,
             p - buf, mac, &n) == NULL)
    {
        fprintf(stderr, "test_jwt: HMAC failed\n");
        exit(2);
    }

    *p++ = '.';
    b64url(mac, n, p);

    return buf;
}


static void
test_table(void)
{
    size_t             i;
    const jwt_case_t  *c;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        c = &cases[i];

        if (c->why == NULL) {
            accepted(c->token, c->sub, c->exp, c->name);

        } else {
            refused(c->token, c->why, c->name);
        }
    }
}


static void
test_signer(void)
{
    is_str(sign(cases[0].header, cases[0].payload, SECRET), cases[0].token,
           "sign() makes the table's first token, as Python's hmac did");
}


static void
test_bearer(void)
{
    const char  *valid = cases[0].token;

    snprintf(buf, sizeof(buf), "Bearer %s", valid);
    accepted(buf, "user-42", NOW + 600, "Bearer and a space");

    snprintf(buf, sizeof(buf), "bEARER    %s", valid);
    accepted(buf, "user-42", NOW + 600, "bEARER and four spaces");

    snprintf(buf, sizeof(buf), "Bearer\t%s", valid);
    refused(buf, "header is not base64url", "Bearer and a tab");

    snprintf(buf, sizeof(buf), "Bearer%s", valid);
    refused(buf, "header is not base64url", "Bearer and no space");

    snprintf(buf, sizeof(buf), " Bearer %s", valid);
    refused(buf, "header is not base64url", "a space before Bearer");

    snprintf(buf, sizeof(buf), "%s ", valid);
    refused(buf, "bad signature", "a space after the token");

    refused("Basic dXNlcjpwYXNzd29yZA==", "not a JWT", "Basic credentials");
    refused("", "no token", "an empty value");
    refused("Bearer ", "no token", "Bearer and nothing");
    refused("bearer      ", "no token", "bearer and spaces only");
    refused_len(NULL, 0, NOW, "no token", "no value at all");
}


static void
test_secret(void)
{
    const char  *valid = cases[0].token;

    is_int(ngx_fluxgate_jwt_verify((const unsigned char *) valid,
                                   strlen(valid), (const unsigned char *) "",
                                   0, NOW, &jwt, &why),
           -1, "an empty secret verifies nothing");
    is_str(why, "no secret", "an empty secret: the reason");

    is_int(ngx_fluxgate_jwt_verify((const unsigned char *) valid,
                                   strlen(valid),
                                   (const unsigned char *) SECRET,
                                   strlen(SECRET) - 1, NOW, &jwt, &why),
           -1, "the secret but its last byte does not verify");
    is_str(why, "bad signature", "the secret but its last byte: the reason");
}


/* the times are bounded, so no now overflows them (UBSan watches) */

static void
test_far_times(void)
{
    const char  *valid = cases[0].token;

    refused_len(valid, strlen(valid), LLONG_MAX, "expired",
                "now at LLONG_MAX");
    refused_len(valid, strlen(valid), LLONG_MIN, "not yet valid",
                "now at LLONG_MIN");
    refused_len(valid, strlen(valid), NOW - 41, "issued in the future",
                "now 41 s before iat");

    is_int(verify_at(valid, strlen(valid), NOW - 40), 0,
           "now 40 s before iat: inside the leeway");
    is_int(verify_at(valid, strlen(valid), NOW + 629), 0,
           "now 29 s after exp: inside the leeway");
    is_int(verify_at(valid, strlen(valid), NOW + 630), -1,
           "now 30 s after exp: expired");

    sign(HEADER, "{\"sub\":\"u\",\"exp\":9007199254740991,"
         "\"nbf\":9007199254740991}", SECRET);
    refused_len(buf, strlen(buf), LLONG_MAX, "expired",
                "exp and nbf at 2^53 - 1, now at LLONG_MAX");
    refused_len(buf, strlen(buf), NOW, "not yet valid",
                "exp and nbf at 2^53 - 1, now today");

    sign(HEADER, "{\"sub\":\"u\",\"exp\":1e300}", SECRET);
    refused(buf, "exp is not a valid time", "exp 1e300");

    sign(HEADER, "{\"sub\":\"u\",\"exp\":-0.5}", SECRET);
    refused(buf, "exp is not a valid time", "exp -0.5");

    sign(HEADER, "{\"sub\":\"u\",\"exp\":1764000600,\"iat\":0}", SECRET);
    accepted(buf, "u", NOW + 600, "iat 0");
}


/* a token of exactly len bytes, its payload padded with a claim */

static size_t
sized(size_t len)
{
    size_t  pad;
    char    payload[4096];

    for (pad = 0; pad < 3100; pad++) {
        snprintf(payload, sizeof(payload),
                 "{\"sub\":\"big\",\"exp\":%lld,\"pad\":\"%0*d\"}",
                 NOW + 600, (int) pad, 0);
        sign(HEADER, payload, SECRET);

        if (strlen(buf) >= len) {
            break;
        }
    }

    return strlen(buf);
}


static void
test_sizes(void)
{
    size_t  n;
    char   *bearer;

    n = sized(NGX_FLUXGATE_JWT_MAX);
    if (is_int(n, NGX_FLUXGATE_JWT_MAX, "a token of 4096 bytes is made")) {
        accepted(buf, "big", NOW + 600, "4096 bytes");

        bearer = malloc(n + 16);
        if (bearer == NULL) {
            exit(2);
        }
        snprintf(bearer, n + 16, "Bearer   %s", buf);
        accepted(bearer, "big", NOW + 600,
                 "4096 bytes after Bearer: the prefix is not counted");
        free(bearer);
    }

    n = sized(NGX_FLUXGATE_JWT_MAX + 1);
    if (is_int(n, NGX_FLUXGATE_JWT_MAX + 1, "a token of 4097 bytes is made")) {
        refused(buf, "token too long", "4097 bytes, well signed");
    }

    memset(buf, 'A', sizeof(buf) - 1);
    buf[sizeof(buf) - 1] = '\0';
    buf[10] = '.';
    buf[20] = '.';
    refused(buf, "token too long", "a megabyte");
}


/* whatever one byte of a good token becomes, it is no longer good */

static void
test_every_byte(void)
{
    size_t       i, len, tried, passed;
    char         token[512];
    unsigned     k;
    const char  *valid = cases[0].token;
    static const unsigned char  xors[] = { 0x01, 0x02, 0x04, 0x08, 0x10,
                                           0x20, 0x40, 0x80, 0xff };

    len = strlen(valid);
    tried = 0;
    passed = 0;

    for (i = 0; i < len; i++) {
        for (k = 0; k < sizeof(xors); k++) {
            memcpy(token, valid, len);
            token[i] = (char) (token[i] ^ xors[k]);
            tried++;

            if (verify_at(token, len, NOW) == 0) {
                passed++;
                diag("byte %zu ^ 0x%02x verified", i, xors[k]);
            }
        }
    }

    is_int(passed, 0, "none of %zu one-byte changes of a good token verifies",
           tried);
}


int
main(void)
{
    test_table();
    test_signer();
    test_bearer();
    test_secret();
    test_far_times();
    test_sizes();
    test_every_byte();

    return done_testing();
}
