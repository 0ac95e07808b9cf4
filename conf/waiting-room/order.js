/*
 * Flux-Gate: placing an order through the gate, for the shop page and the
 * waiting room alike.  No dependencies; ES5 plus fetch and Promise.
 *
 *   FluxGateOrder.start({productId, userId, quantity}, {done: "/thanks"})
 *       stores the order in sessionStorage and returns it
 *   FluxGateOrder.saved()          the stored order, or null
 *   FluxGateOrder.send(order, ticket) -> Promise of an outcome:
 *       {kind: "accepted", orderId}     200, also a replay of the same key
 *       {kind: "queued", url}           302: the waiting room, with a ticket
 *       {kind: "sold_out"} {kind: "limit_reached"} {kind: "unknown_product"}
 *       {kind: "in_progress", retryAfter}  the same key is still being decided
 *       {kind: "retry", retryAfter}    503: the gate asks to come back
 *       {kind: "ticket_rejected", error}   400 naming X-Queue-Ticket
 *       {kind: "error", status, error}
 *
 * Why fetch() is left to follow the 302: with redirect: "manual" Chromium
 * (and every browser) hands the page an opaque response: no status, no
 * Location, no body, so the ticket cannot be read.  Followed, the response
 * says redirected === true and its url is the waiting room's address with
 * productId and ticket, which the page then opens.  The 302's own body
 * (position, retryAfter) is lost that way; the waiting room asks
 * /queue/status at once instead.
 */
(function (global) {
  "use strict";

  var KEY = "fluxgate.order";

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

  function store(order) {
    try {
      global.sessionStorage.setItem(KEY, JSON.stringify(order));
    } catch (e) {
      /* private mode with storage off: the order still goes out, only a
         resubmit from the waiting room is impossible */
    }
  }

  function saved() {
    try {
      var o = JSON.parse(global.sessionStorage.getItem(KEY) || "null");
      return o && o.body && o.key ? o : null;
    } catch (e) {
      return null;
    }
  }

  function clear() {
    try { global.sessionStorage.removeItem(KEY); } catch (e) { /* none */ }
  }

  /* body: {productId, userId, quantity}; opts.done: where to land with
     ?orderId=... once accepted; opts.back: the shop page */
  function start(body, opts) {
    opts = opts || {};
    var order = { body: body, key: newKey(),
                  back: opts.back || global.location.pathname,
                  done: opts.done || "" };
    store(order);
    return order;
  }

  function retryAfter(res, dflt) {
    var s = parseInt(res.headers.get("Retry-After"), 10);
    return s > 0 ? s : dflt;
  }

  function send(order, ticket) {
    var headers = { "Content-Type": "application/json",
                    "X-Idempotency-Key": order.key };
    if (ticket) {
      headers["X-Queue-Ticket"] = ticket;
    }
    return global.fetch("/order", {
      method: "POST", headers: headers, body: JSON.stringify(order.body),
      cache: "no-store", credentials: "same-origin", redirect: "follow"
    }).then(function (res) {
      if (res.redirected) {
        return { kind: "queued", url: res.url };
      }
      return res.text().then(function (text) {
        var b = {};
        try { b = JSON.parse(text) || {}; } catch (e) { b = {}; }
        var st = b.status === "ignored" ? b.outcome : b.status;
        if (res.status === 200) {
          return { kind: "accepted", orderId: b.orderId || "" };
        }
        if (st === "sold_out" || st === "limit_reached"
            || st === "unknown_product") {
          return { kind: st };
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

  global.FluxGateOrder = { start: start, saved: saved, clear: clear,
                           send: send, newKey: newKey };
})(window);
