/*
 * Flux-Gate waiting room: does the gate's proof of work, keeps the
 * shopper's place in line and sends the saved order when the gate admits
 * the ticket.
 *
 * What the page starts from, in this order:
 *   - the address: #challenge=C&bits=N or #ticket=T (a navigation keeps
 *     the fragment), or ?ticket=T from an older gate; taken into
 *     sessionStorage and removed from the address (history, bookmarks,
 *     a shared link);
 *   - the product's cookies fluxgate_challenge_<p> / fluxgate_ticket_<p>
 *     (a fetch() that followed the gate's 302), as order.js left them;
 *   - sessionStorage (a reload).
 * A challenge is solved first (pow.js); the ticket then travels in the
 * X-Queue-Ticket header of GET /queue/status and of the order, never in an
 * address.
 *
 * States (on <body data-state>, for styling and for tests): loading,
 * challenge, prequeue, waiting, paused, admitted, ordering, in_progress,
 * too_many_places, accepted, sold_out, limit_reached, unknown_product,
 * closed, expired, unauthenticated, user_mismatch, insecure, no_order,
 * error.  <body data-position> is the place in line, data-opens-in the
 * seconds to the opening.
 */
(function () {
  "use strict";

  var MAX_POLL = 5;        /* seconds: well inside an admission window */
  var params = new URLSearchParams(location.search);
  var frag = new URLSearchParams(location.hash.replace(/^#/, ""));
  var productId = params.get("productId") || "";
  /* a gate without fluxgate_queue_secret sends ?retryAfter=N, no ticket */
  var legacyRetry = parseInt(params.get("retryAfter"), 10) || 0;
  var order = FluxGateOrder.saved();
  var ticket = "";
  var firstPosition = 0;
  var wasPrequeue = false;
  var failures = 0;
  var sends = 0;
  var timer = null;
  var clock = null;
  var $ = function (id) { return document.getElementById(id); };
  var LEAD = $("lead").textContent;

  /* what the page saw, in order: tests and curious people read it */
  var trace = window.fluxgateWaitingRoom = {
    positions: [], states: [], opensIn: [], proofs: []
  };

  if (order && order.body && order.body.productId && !productId) {
    productId = order.body.productId;
  }
  $("back").href = (order && order.back) || "/";

  function state(name, text, tone) {
    document.body.setAttribute("data-state", name);
    document.body.className = tone || "";
    if (trace.states[trace.states.length - 1] !== name) {
      trace.states.push(name);
    }
    if (text !== undefined) {
      $("status").textContent = text;
    }
  }

  function stopClock() {
    clearInterval(clock);
    clock = null;
    $("countdown").hidden = true;
    document.body.removeAttribute("data-opens-in");
  }

  function finish(name, text, tone) {
    clearTimeout(timer);
    stopClock();
    state(name, text, tone + " final");
  }

  /* never sooner than the server asked, spread by up to half again so a
     crowd that arrived together does not poll together */
  function later(fn, seconds, floor) {
    var base = Math.max(seconds, floor || 0, 0.5);
    var s = base * (1 + Math.random() * 0.5);
    if (floor) {
      s = Math.max(s, floor);
    }
    clearTimeout(timer);
    timer = setTimeout(fn, Math.round(s * 1000));
  }

  function retryAfter(res) {
    var s = parseInt(res.headers.get("Retry-After"), 10);
    return s > 0 ? s : 0;
  }

  function eta(seconds) {
    if (!(seconds >= 0)) {
      return "\u2026";
    }
    if (seconds < 60) {
      return seconds <= 1 ? "now" : "~" + Math.round(seconds) + " s";
    }
    return "~" + Math.round(seconds / 60) + " min";
  }

  /* 161 -> "2:41", 3725 -> "1:02:05" */
  function clockText(s) {
    var h = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60),
        sec = s % 60;
    var two = function (x) { return (x < 10 ? "0" : "") + x; };
    return h > 0 ? h + ":" + two(m) + ":" + two(sec) : m + ":" + two(sec);
  }

  function showPlace(position, etaSeconds) {
    if (position > firstPosition) {
      firstPosition = position;
    }
    var done = firstPosition > 0
        ? Math.round(100 * (firstPosition - position + 1) / (firstPosition + 1))
        : 0;
    $("queue").hidden = false;
    $("queue").className = "";
    $("position").textContent = position > 0 ? String(position) : "\u2713";
    $("eta").textContent = eta(etaSeconds);
    $("fill").style.width = done + "%";
    $("bar").setAttribute("aria-valuenow", String(done));
    document.body.setAttribute("data-position", String(position));
    if (trace.positions[trace.positions.length - 1] !== position) {
      trace.positions.push(position);
    }
  }

  function progress(fraction) {
    var pct = Math.min(99, Math.round(100 * fraction));
    $("fill").style.width = pct + "%";
    $("bar").setAttribute("aria-valuenow", String(pct));
  }

  /* --- the place in line ------------------------------------------------ */

  function poll() {
    var url = "/queue/status?productId=" + encodeURIComponent(productId);
    fetch(url, { cache: "no-store", credentials: "same-origin",
                 headers: { "X-Queue-Ticket": ticket } })
      .then(function (res) {
        var ra = retryAfter(res);
        if (res.status === 200) {
          return res.json().then(function (s) { onStatus(s, ra); });
        }
        if (res.status === 400) {
          /* the gate no longer takes this ticket: expired, its window
             passed, or a sale started anew */
          return expired();
        }
        if (res.status === 404) {
          return unknownProduct();
        }
        return res.text().then(function () { trouble(ra); });
      })
      .catch(function () { trouble(0); });
  }

  function trouble(ra) {
    failures++;
    $("status").textContent = "The shop is busy; still keeping your place\u2026";
    later(poll, ra || Math.min(MAX_POLL, failures), ra);
  }

  /* before the opening: a countdown from the gate's own figure (the
     shopper's clock may be wrong), ticking here between polls */
  function prequeue(s, ra) {
    var at = Date.now(), secs = Math.max(0, s.etaSeconds || 0);
    wasPrequeue = true;
    $("title").textContent = "The sale opens soon";
    $("lead").textContent = "Keep this page open: when it is your turn, "
        + "your order goes out by itself.";
    $("queue").hidden = true;
    $("countdown").hidden = false;
    state("prequeue", "You have a place in line. When the sale opens, "
          + "places are drawn at random among everyone who is here "
          + "before then: coming early gains nothing, and neither does "
          + "reloading.");
    function tick() {
      var left = Math.max(0, Math.round(secs - (Date.now() - at) / 1000));
      $("countdown").textContent = left > 0
          ? "The sale opens in " + clockText(left)
          : "The sale is opening\u2026";
      document.body.setAttribute("data-opens-in", String(left));
      if (trace.opensIn[trace.opensIn.length - 1] !== left) {
        trace.opensIn.push(left);
      }
    }
    tick();
    clearInterval(clock);
    clock = setInterval(tick, 1000);
    /* Retry-After is the time to the opening, at most 5 s */
    later(poll, Math.min(MAX_POLL, Math.max(1, secs)), ra);
  }

  function onStatus(s, ra) {
    failures = 0;
    if (s.soldOut) {
      return soldOut();
    }
    if (s.closed) {
      return closed();
    }
    if (s.position === null || s.position === undefined) {
      return prequeue(s, ra);
    }
    stopClock();
    $("lead").textContent = LEAD;
    if (s.admitted) {
      showPlace(0, 0);
      $("fill").style.width = "100%";
      return admitted();
    }
    $("title").textContent = "You are in the queue";
    showPlace(s.position, s.etaSeconds);
    if (s.paused) {
      state("paused", "The sale is paused for a moment. Your place is "
            + "kept: the line goes on from here when it resumes.");
      later(poll, MAX_POLL, ra);
      return;
    }
    state("waiting", s.position === 1 ? "You are next."
          : wasPrequeue ? "The sale is open: your place was drawn at "
                          + "random. Please keep this page open."
          : "Please keep this page open.");
    /* poll about four times over the expected wait, at most every
       MAX_POLL seconds, never before Retry-After */
    later(poll, Math.min(MAX_POLL, Math.max(1, (s.etaSeconds || 0) / 4)), ra);
  }

  function admitted() {
    if (!order) {
      finish("no_order", "It is your turn! Go back to the shop and order "
             + "now: your place is kept for a short while.", "good");
      return;
    }
    $("title").textContent = "It is your turn";
    state("admitted", "Placing your order\u2026", "good");
    submit({ ticket: ticket });
  }

  /* --- the proof of work ------------------------------------------------- */

  function solve(c) {
    if (!order) {
      FluxGateOrder.dropChallenge(productId);
      return finish("no_order", "Nothing to wait for here: go back to the "
                    + "shop and order again.", "");
    }
    var expect = Math.pow(2, c.bits);
    $("title").textContent = "One moment";
    $("queue").hidden = false;
    $("queue").className = "checking";
    progress(0);
    state("challenge", "Checking your browser\u2026");
    FluxGatePow.solve(c.challenge, c.bits, function (tried) {
      /* the chance of having found it by now */
      progress(1 - Math.exp(-tried / expect));
    }).then(function (r) {
      FluxGateOrder.dropChallenge(productId);
      trace.proofs.push({ bits: c.bits, tried: r.tried, ms: r.ms,
                          where: r.where });
      progress(1);
      submit({ proof: c.challenge + "." + r.n });
    }, function (e) {
      FluxGateOrder.dropChallenge(productId);
      $("title").textContent = "Sorry";
      if (e && e.code === "insecure") {
        return finish("insecure", "This page cannot check your browser: "
                      + "it was not opened over a secure connection "
                      + "(https). Open the shop at its https address and "
                      + "order again.", "bad");
      }
      return finish("error", "Your browser could not be checked ("
                    + (e && e.message || e) + ").", "bad");
    });
  }

  /* --- the order ----------------------------------------------------------- */

  function submit(opts) {
    sends++;
    state("ordering", "Placing your order\u2026", "good");
    FluxGateOrder.send(order, opts).then(function (o) {
      outcome(o, opts);
    }, function () {
      /* the network failed: the same key makes another try safe */
      later(function () { submit(opts); }, Math.min(MAX_POLL, sends));
    });
  }

  function outcome(o, opts) {
    switch (o.kind) {
    case "accepted":
      return accepted(o.orderId);
    case "queued":
      /* a place (over the threshold again, or before the opening): wait
         for it here */
      $("title").textContent = "You are in the queue";
      state("waiting", "Finding your place\u2026");
      if (opts.ticket && o.ticket === opts.ticket) {
        /* sent as admitted, but the line says not yet (the gate's
           record of it was a moment old): ask again in a moment */
        later(poll, 1, 1);
        return;
      }
      ticket = o.ticket;
      return poll();
    case "challenge":
      return solve(o);
    case "redirected":
      /* a gate without a line: wait what it asked, then send again */
      state("waiting", "Waiting for a free slot\u2026");
      $("queue").hidden = true;
      later(function () { submit({}); }, o.retryAfter, o.retryAfter);
      return;
    case "no_cookie":
      $("title").textContent = "Sorry";
      return finish("error", "This shop keeps your place in line in a "
                    + "cookie, and your browser refused it. Allow cookies "
                    + "for this site and order again.", "bad");
    case "sold_out":
      return soldOut();
    case "closed":
      return closed();
    case "limit_reached":
      FluxGateOrder.clear();
      FluxGateOrder.dropTicket(productId);
      $("title").textContent = "One per person";
      return finish("limit_reached", "You already bought as many of "
                    + "these as one person may.", "bad");
    case "unknown_product":
      return unknownProduct();
    case "too_many_places":
      /* fluxgate_queue_per_client: others on this network (one address)
         hold their places; ask again when one may have ended */
      $("title").textContent = "Please wait";
      $("queue").hidden = true;
      state("too_many_places", "Many places in line are already held "
            + "from your network. Trying again in about "
            + Math.round(o.retryAfter / 60 * 10) / 10 + " min\u2026");
      later(function () { submit({}); }, o.retryAfter, o.retryAfter);
      return;
    case "unauthenticated":
      $("title").textContent = "Please sign in";
      return finish("unauthenticated", "Your session with the shop has "
                    + "ended. Sign in again in the shop, then order "
                    + "again.", "bad");
    case "user_mismatch":
      FluxGateOrder.clear();
      $("title").textContent = "Signed in as someone else";
      return finish("user_mismatch", "This order was made by another "
                    + "person than the one signed in now. Go back to the "
                    + "shop and order again.", "bad");
    case "in_progress":
      /* an earlier try with this key is still being decided: ask again */
      state("in_progress", "Your order is being processed\u2026", "good");
      later(function () { submit(opts); }, o.retryAfter, o.retryAfter);
      return;
    case "retry":
      state("ordering", "The shop is busy; trying again\u2026");
      later(function () { submit(opts); }, o.retryAfter, o.retryAfter);
      return;
    case "ticket_rejected":
      /* spent, expired or not this buyer's: without it the same key
         replays an order that went through, or joins the line again */
      FluxGateOrder.dropTicket(productId);
      if (ticket) {
        ticket = "";
        return submit({});
      }
      return expired();
    default:
      FluxGateOrder.clear();
      $("title").textContent = "Sorry";
      return finish("error", "Your order could not be placed ("
                    + o.status + (o.error ? ": " + o.error : "") + ").",
                    "bad");
    }
  }

  function accepted(orderId) {
    var done = order && order.done;
    FluxGateOrder.clear();
    FluxGateOrder.dropTicket(productId);
    try {
      sessionStorage.setItem("fluxgate.confirmed", JSON.stringify(
        { orderId: orderId, body: order ? order.body : null,
          user: order ? order.user : "" }));
    } catch (e) { /* the page below shows it anyway */ }
    if (done) {
      state("accepted", "Order placed.", "good");
      location.replace(done + (done.indexOf("?") < 0 ? "?" : "&")
                       + "orderId=" + encodeURIComponent(orderId));
      return;
    }
    $("title").textContent = "Thank you!";
    finish("accepted", "Your order is placed: " + orderId + ".", "good");
  }

  function soldOut() {
    FluxGateOrder.clear();
    FluxGateOrder.dropTicket(productId);
    $("title").textContent = "Sold out";
    finish("sold_out", "Sorry, this product sold out while you waited.",
           "bad");
  }

  function closed() {
    FluxGateOrder.clear();
    FluxGateOrder.dropTicket(productId);
    $("title").textContent = "The sale is closed";
    finish("closed", "The shop has closed this sale: no more orders are "
           + "taken for it.", "bad");
  }

  function unknownProduct() {
    FluxGateOrder.clear();
    FluxGateOrder.dropTicket(productId);
    $("title").textContent = "Not on sale";
    finish("unknown_product", "This product is not on sale.", "bad");
  }

  function expired() {
    FluxGateOrder.dropTicket(productId);
    ticket = "";
    $("title").textContent = "Your place has expired";
    finish("expired", "Your turn passed while this page was closed or "
           + "offline.", "bad");
    if (order) {
      $("again").hidden = false;
    }
  }

  $("again").addEventListener("click", function () {
    $("again").hidden = true;
    $("title").textContent = "You are in the queue";
    ticket = "";
    submit({});
  });

  /* --- start ---------------------------------------------------------------- */

  /* what the address carries, into sessionStorage, and out of the address */
  (function () {
    var t = frag.get("ticket") || params.get("ticket");
    var c = frag.get("challenge"), bits = parseInt(frag.get("bits"), 10);
    if (!productId) {
      return;
    }
    if (c && bits >= 0) {
      FluxGateOrder.keepChallenge(productId, { challenge: c, bits: bits });
    }
    if (t) {
      FluxGateOrder.keepTicket(productId, t);
      ticket = t;
    }
    if (location.hash || params.has("ticket")) {
      params.delete("ticket");
      history.replaceState(null, "", location.pathname + "?"
                           + params.toString());
    }
  })();

  var pending = productId ? FluxGateOrder.challenge(productId) : null;
  ticket = ticket || (productId ? FluxGateOrder.ticket(productId) : "");

  if (!productId) {
    finish("no_order", "Nothing to wait for here: go back to the shop.", "");
  } else if (pending) {
    solve(pending);
  } else if (ticket) {
    state("waiting");
    poll();
  } else if (order) {
    /* no ticket: wait what the gate asked, then send the order again */
    state("waiting", "Waiting for a free slot\u2026");
    $("queue").hidden = true;
    later(function () { submit({}); }, legacyRetry || 1, legacyRetry);
  } else {
    finish("no_order", "Nothing to wait for here: go back to the shop.", "");
  }
})();
