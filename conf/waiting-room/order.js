/*
 * Flux-Gate: placing an order through the gate, for the shop page and the
 * waiting room alike.  No dependencies; ES5 plus fetch and Promise.
 *
 *   FluxGateOrder.start({productId, userId, quantity},
 *                       {done: "/thanks", back: "/", user: "alice"})
 *       stores the order (its body and a fresh idempotency key) in
 *       sessionStorage and returns it
 *   FluxGateOrder.saved()          the stored order, or null
 *   FluxGateOrder.send(order, {ticket: T, proof: "C.n"}) -> Promise of an
 *   outcome:
 *       {kind: "accepted", orderId}     200, also a replay of the same key
 *       {kind: "queued", ticket}        302 with a place in line (also
 *                                       before the opening: the pre-queue)
 *       {kind: "challenge", challenge, bits}
 *                                       302: a proof of work first
 *       {kind: "redirected", retryAfter}  302 of a gate without a line
 *                                       (no fluxgate_queue_secret)
 *       {kind: "no_cookie"}             302, but the browser kept no cookie
 *       {kind: "sold_out"} {kind: "limit_reached"} {kind: "unknown_product"}
 *       {kind: "closed"}                409: the operator closed the sale
 *       {kind: "too_many_places", retryAfter}  429: this client's share
 *       {kind: "unauthenticated"}       401: sign in (again)
 *       {kind: "user_mismatch"}         403: signed in as someone else
 *       {kind: "in_progress", retryAfter}  the same key is still decided
 *       {kind: "retry", retryAfter}     503: the gate asks to come back
 *       {kind: "ticket_rejected", error}   400 naming X-Queue-Ticket
 *       {kind: "error", status, error}
 *   FluxGateOrder.ticket(p) / keepTicket(p, t) / dropTicket(p)
 *       the product's ticket, kept in sessionStorage
 *   FluxGateOrder.challenge(p) / keepChallenge(p, c) / dropChallenge(p)
 *       a challenge to solve before the order is sent again
 *
 * Why fetch() is left to follow the 302: with redirect: "manual" a
 * browser hands the page an opaque response (no status, no Location, no
 * body).  Followed, the answer says redirected === true, but its url has
 * lost the fragment that carries the ticket and its body is the waiting
 * room's page.  So the gate puts what the 302 means in a cookie of the
 * product as well (fluxgate_ticket_<p> = the ticket, fluxgate_challenge_<p>
 * = "<bits>:<challenge>"; not HttpOnly, SameSite=Strict): send() clears
 * both before each order, so whichever is there afterwards came with this
 * answer, and moves it into sessionStorage.  The ticket then travels in
 * the X-Queue-Ticket header only: never in an address, where access logs,
 * proxies and the Referer would see it.
 */
(function (global) {
  "use strict";

  var KEY = "fluxgate.order";

  function storage() {
    try {
      return global.sessionStorage;
    } catch (e) {
      return null;    /* storage off (some private modes) */
    }
  }

  function getItem(k) {
    var s = storage();
    try { return s ? s.getItem(k) : null; } catch (e) { return null; }
  }

  function setItem(k, v) {
    var s = storage();
    try {
      if (s) { s.setItem(k, v); return true; }
    } catch (e) { /* full or off */ }
    return false;
  }

  function removeItem(k) {
    var s = storage();
    try { if (s) { s.removeItem(k); } } catch (e) { /* off */ }
  }

  /* 1-64 of [A-Za-z0-9_-]; crypto.randomUUID needs a secure context, a
     phone on the shop's LAN address over plain http has none */
  function newKey() {
    var b = new Uint8Array(16), s = "", i;
    global.crypto.getRandomValues(b);
    for (i = 0; i < b.length; i++) {
      s += (b[i] < 16 ? "0" : "") + b[i].toString(16);
    }
    return s;
  }

  /* cookies: the gate names them after the product ([A-Za-z0-9._-]) */
  function cookie(name) {
    var parts = global.document ? global.document.cookie.split(";") : [];
    var i, kv;
    for (i = 0; i < parts.length; i++) {
      kv = parts[i].replace(/^\s+/, "");
      if (kv.indexOf(name + "=") === 0) {
        return kv.slice(name.length + 1);
      }
    }
    return "";
  }

  function dropCookie(name) {
    if (global.document) {
      global.document.cookie = name + "=; Path=/; Max-Age=0; SameSite=Strict";
    }
  }

  function ticket(p) {
    return getItem("fluxgate.ticket." + p) || cookie("fluxgate_ticket_" + p);
  }

  function keepTicket(p, t) {
    /* kept in the tab's storage; the cookie stays where storage is off */
    if (setItem("fluxgate.ticket." + p, t)) {
      dropCookie("fluxgate_ticket_" + p);
    }
  }

  function dropTicket(p) {
    removeItem("fluxgate.ticket." + p);
    dropCookie("fluxgate_ticket_" + p);
  }

  /* "<bits>:<challenge>", the cookie's form -> {challenge, bits} */
  function parseChallenge(text) {
    var m = /^(\d{1,2}):(.+)$/.exec(text || "");
    return m ? { challenge: m[2], bits: parseInt(m[1], 10) } : null;
  }

  function challenge(p) {
    return parseChallenge(getItem("fluxgate.challenge." + p)
                          || cookie("fluxgate_challenge_" + p));
  }

  function keepChallenge(p, c) {
    if (setItem("fluxgate.challenge." + p, c.bits + ":" + c.challenge)) {
      dropCookie("fluxgate_challenge_" + p);
    }
  }

  function dropChallenge(p) {
    removeItem("fluxgate.challenge." + p);
    dropCookie("fluxgate_challenge_" + p);
  }

  function store(order) {
    /* storage off: the order still goes out, only a resubmit from the
       waiting room is impossible */
    setItem(KEY, JSON.stringify(order));
  }

  function saved() {
    try {
      var o = JSON.parse(getItem(KEY) || "null");
      return o && o.body && o.key ? o : null;
    } catch (e) {
      return null;
    }
  }

  function clear() {
    removeItem(KEY);
  }

  /* body: {productId, userId, quantity}; opts.done: where to land with
     ?orderId=... once accepted; opts.back: the shop page; opts.user: who
     is buying, for the confirmation */
  function start(body, opts) {
    opts = opts || {};
    var order = { body: body, key: newKey(),
                  back: opts.back || global.location.pathname,
                  done: opts.done || "", user: opts.user || body.userId || "" };
    store(order);
    return order;
  }

  function retryAfter(res, dflt) {
    var s = parseInt(res.headers.get("Retry-After"), 10);
    return s > 0 ? s : dflt;
  }

  /* a followed 302: the cookie it set says what it meant */
  function redirected(res, p) {
    var c = parseChallenge(cookie("fluxgate_challenge_" + p));
    var t = cookie("fluxgate_ticket_" + p);
    var ra;
    if (c) {
      keepChallenge(p, c);
      return { kind: "challenge", challenge: c.challenge, bits: c.bits };
    }
    if (t) {
      keepTicket(p, t);
      dropChallenge(p);
      return { kind: "queued", ticket: t };
    }
    /* a gate without fluxgate_queue_secret: /waiting-room/?...&retryAfter=N */
    ra = /[?&]retryAfter=(\d+)/.exec(res.url || "");
    if (ra) {
      return { kind: "redirected", retryAfter: parseInt(ra[1], 10) || 1 };
    }
    return { kind: "no_cookie" };
  }

  /* opts.ticket: X-Queue-Ticket; opts.proof: X-Queue-Proof ("C.n") */
  function send(order, opts) {
    var p = order.body.productId;
    var headers = { "Content-Type": "application/json",
                    "X-Idempotency-Key": order.key };
    opts = typeof opts === "string" ? { ticket: opts } : (opts || {});
    if (opts.ticket) {
      headers["X-Queue-Ticket"] = opts.ticket;
    }
    if (opts.proof) {
      headers["X-Queue-Proof"] = opts.proof;
    }
    /* whatever cookie is there after the answer came with it */
    dropCookie("fluxgate_ticket_" + p);
    dropCookie("fluxgate_challenge_" + p);
    return global.fetch("/order", {
      method: "POST", headers: headers, body: JSON.stringify(order.body),
      cache: "no-store", credentials: "same-origin", redirect: "follow"
    }).then(function (res) {
      if (res.redirected) {
        return redirected(res, p);
      }
      return res.text().then(function (text) {
        var b = {};
        try { b = JSON.parse(text) || {}; } catch (e) { b = {}; }
        var st = b.status === "ignored" ? b.outcome : b.status;
        if (res.status === 200) {
          return { kind: "accepted", orderId: b.orderId || "" };
        }
        if (st === "sold_out" || st === "limit_reached"
            || st === "unknown_product" || st === "closed"
            || st === "unauthenticated" || st === "user_mismatch") {
          return { kind: st };
        }
        if (st === "too_many_places") {
          return { kind: st, retryAfter: retryAfter(res, 60) };
        }
        if (st === "in_progress") {
          return { kind: "in_progress", retryAfter: retryAfter(res, 1) };
        }
        if (res.status === 503) {
          return { kind: "retry", retryAfter: retryAfter(res, 2) };
        }
        if (res.status === 400 && b.field === "X-Queue-Ticket") {
          return { kind: "ticket_rejected", error: b.error || "" };
        }
        return { kind: "error", status: res.status,
                 error: b.error || b.status || "" };
      });
    });
  }

  global.FluxGateOrder = {
    start: start, saved: saved, clear: clear, send: send, newKey: newKey,
    ticket: ticket, keepTicket: keepTicket, dropTicket: dropTicket,
    challenge: challenge, keepChallenge: keepChallenge,
    dropChallenge: dropChallenge, parseChallenge: parseChallenge
  };
})(window);
