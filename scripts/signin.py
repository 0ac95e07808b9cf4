#!/usr/bin/python3
"""Flux-Gate demo shop: the sign-in service.

The gate knows a shopper by a JWT in the shop_session cookie
(fluxgate_user_token $cookie_shop_session secret=<file>): the token's
"sub" is the buyer, so one person holds one place in line whatever key or
body they send.  Something must sign that token with the same secret; in a
real shop it is the shop's own login.  The demo shop has no accounts, so
this service signs in whoever names themselves: enough to try the flow in a
browser, never a login to put in front of real users.

Python 3's standard library only.  scripts/stack runs it under supervisord
on loopback; nginx proxies the shop's /signin and /signout to it.

  POST /signin   {"user": "<name>"} -> 200 {"status":"signed_in",
                 "user":..., "expires":<unix s>} and
                 Set-Cookie: shop_session=<JWT>; HttpOnly; SameSite=Strict;
                 Path=/; Max-Age=<session> (Secure behind https);
                 400 naming "user" for a name the gate would refuse
  GET /signin    who the cookie says is signed in: 200 {"status":
                 "signed_in", ...} or {"status":"signed_out"}
  POST /signout  the cookie cleared: 200 {"status":"signed_out"}

The name is what the gate takes as a userId: 1-64 of [A-Za-z0-9._-].  The
body must be JSON (Content-Type: application/json): a form on another site
cannot send that without the browser asking first, so no page elsewhere can
sign a visitor in under a name of its choosing.

Environment: FG_SIGNIN_LISTEN (127.0.0.1:8082), FG_USER_SECRET (the
secret file, as fluxgate_user_token reads it: its bytes, a trailing
newline dropped; at least 32), FG_SESSION_SECONDS (28800: a shopping day,
well beyond a place in line's hour, so a session never ends while its
place waits; a token that expired in line would make the buyer another
one and the ticket another buyer's).
"""

import base64
import hashlib
import hmac
import json
import os
import re
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COOKIE = "shop_session"
NAME = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
BODY_MAX = 4096


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def read_secret(path):
    with open(path, "rb") as f:
        secret = f.read(4097)
    if len(secret) > 4096:
        sys.exit("signin: %s is longer than 4096 bytes" % path)
    secret = secret.rstrip(b"\r\n")
    if len(secret) < 32:
        sys.exit("signin: %s holds %d bytes, at least 32 are needed"
                 % (path, len(secret)))
    return secret


class Tokens:
    """HS256 JWTs as fluxgate_user_token checks them"""

    def __init__(self, secret, lifetime):
        self.secret = secret
        self.lifetime = lifetime
        self.header = b64url(json.dumps(
            {"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())

    def _mac(self, signing_input):
        return hmac.new(self.secret, signing_input.encode("ascii"),
                        hashlib.sha256).digest()

    def sign(self, user, now):
        claims = {"sub": user, "iat": now, "exp": now + self.lifetime}
        payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = self.header + "." + payload
        return signing_input + "." + b64url(self._mac(signing_input)), claims

    def verify(self, token, now):
        """the claims of a good, unexpired token of ours, else None"""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        try:
            sig = b64url_decode(parts[2])
            claims = json.loads(b64url_decode(parts[1]))
        except (ValueError, UnicodeDecodeError):
            return None
        if parts[0] != self.header \
                or not hmac.compare_digest(
                    sig, self._mac(parts[0] + "." + parts[1])):
            return None
        if not isinstance(claims, dict) \
                or not isinstance(claims.get("sub"), str) \
                or not isinstance(claims.get("exp"), int) \
                or claims["exp"] <= now:
            return None
        return claims


class Handler(BaseHTTPRequestHandler):
    server_version = "fluxgate-signin"
    protocol_version = "HTTP/1.1"

    def version_string(self):
        return self.server_version

    def reply(self, code, body, cookie=None):
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        if cookie:
            self.send_header("Set-Cookie", cookie)
        self.end_headers()
        self.wfile.write(data)

    def bad(self, code, error, field):
        self.reply(code, {"status": "bad_request", "error": error,
                          "field": field})

    def cookie(self, value, max_age):
        attrs = "%s=%s; HttpOnly; SameSite=Strict; Path=/; Max-Age=%d" % (
            COOKIE, value, max_age)
        # nginx says how the shopper reached it: a cookie that carries a
        # session must not travel over plain http once the shop is https
        if self.headers.get("X-Forwarded-Proto", "") == "https":
            attrs += "; Secure"
        return attrs

    def session(self, now):
        # by hand: http.cookies gives up on the whole header at the first
        # cookie it does not like, and the shop's other cookies are not ours
        for header in self.headers.get_all("Cookie") or []:
            for pair in header.split(";"):
                name, _, value = pair.strip().partition("=")
                if name == COOKIE:
                    return self.server.tokens.verify(value.strip('"'), now)
        return None

    def body(self):
        """the JSON object sent, or None once an error was answered"""
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length < 0 or length > BODY_MAX:
            self.close_connection = True
            self.bad(400, "the body must be at most %d bytes" % BODY_MAX,
                     "body")
            return None
        raw = self.rfile.read(length)
        if ctype.lower() != "application/json":
            self.bad(415, "Content-Type must be application/json",
                     "Content-Type")
            return None
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self.bad(400, "the body must be a JSON object", "body")
            return None
        return body

    def do_GET(self):
        if self.path.split("?")[0] != "/signin":
            return self.reply(404, {"status": "not_found"})
        claims = self.session(int(time.time()))
        if claims is None:
            return self.reply(200, {"status": "signed_out"})
        return self.reply(200, {"status": "signed_in", "user": claims["sub"],
                                "expires": claims["exp"]})

    def do_POST(self):
        path = self.path.split("?")[0]
        if path not in ("/signin", "/signout"):
            return self.reply(404, {"status": "not_found"})
        body = self.body()
        if body is None:
            return None
        if path == "/signout":
            return self.reply(200, {"status": "signed_out"},
                              self.cookie("", 0))
        user = body.get("user")
        if not isinstance(user, str) or not NAME.match(user):
            return self.bad(400, "user must be 1-64 characters of "
                            "A-Z a-z 0-9 . _ -", "user")
        now = int(time.time())
        token, claims = self.server.tokens.sign(user, now)
        self.log_message("signed in %s until %d", user, claims["exp"])
        return self.reply(200, {"status": "signed_in", "user": user,
                                "expires": claims["exp"]},
                          self.cookie(token, self.server.tokens.lifetime))

    def do_HEAD(self):
        self.send_response(405)
        self.send_header("Allow", "GET, POST")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_PUT = do_DELETE = do_PATCH = do_HEAD


def main():
    listen = os.environ.get("FG_SIGNIN_LISTEN", "127.0.0.1:8082")
    host, _, port = listen.rpartition(":")
    secret_file = os.environ.get("FG_USER_SECRET")
    if not secret_file:
        sys.exit("signin: FG_USER_SECRET must name the user secret file")
    try:
        lifetime = int(os.environ.get("FG_SESSION_SECONDS", "28800"))
    except ValueError:
        lifetime = 0
    if not 60 <= lifetime <= 7 * 86400:
        sys.exit("signin: FG_SESSION_SECONDS must be 60 to 604800")
    server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
    server.daemon_threads = True
    server.tokens = Tokens(read_secret(secret_file), lifetime)
    sys.stderr.write("signin: listening on %s, sessions of %d s\n"
                     % (listen, lifetime))
    sys.stderr.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
