/*
 * Flux-Gate waiting room: keeps the shopper's place in line and sends the
 * saved order when the gate admits the ticket.
 *
 * States (on <body data-state>, for styling and for tests): loading,
 * waiting, admitted, ordering, in_progress, accepted, sold_out,
 * limit_reached, unknown_product, expired, no_order, error.
 */
(function () {
  "use strict";

  var MAX_POLL = 5;        /* seconds: well inside an admission window */
  var params = new URLSearchParams(location.search);
  var productId = params.get("productId") || "";
  var ticket = params.get("ticket") || "";
  /* a gate without fluxgate_queue_secret sends ?retryAfter=N, no ticket */
  var legacyRetry = parseInt(params.get("retryAfter"), 10) || 0;
  var order = FluxGateOrder.saved();
  var firstPosition = 0;
  var failures = 0;
  var sends = 0;
  var timer = null;
  var $ = function (id) { return document.getElementById(id); };

  /* what the page saw, in order: tests and curious people read it */
  var trace = window.fluxgateWaitingRoom = { positions: [], states: [] };

  if (order && order.body && order.body.productId && !productId) {
    productId = order.body.productId;
  }
  $("back").href = (order && order.back) || "/";

  function state(name, text, tone) {
    document.body.setAttribute("data-state", name);
    document.body.className = tone || "";
    trace.states.push(name);
    if (text !== undefined) {
      $("status").textContent = text;
    }
  }

  function finish(name, text, tone) {
    clearTimeout(timer);
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

  function showPlace(position, etaSeconds) {
    if (position > firstPosition) {
      firstPosition = position;
    }
    var done = firstPosition > 0
        ? Math.round(100 * (firstPosition - position + 1) / (firstPosition + 1))
        : 0;
    $("position").textContent = position > 0 ? String(position) : "\u2713";
    $("eta").textContent = eta(etaSeconds);
    $("fill").style.width = done + "%";
    $("bar").setAttribute("aria-valuenow", String(done));
    document.body.setAttribute("data-position", String(position));
    trace.positions.push(position);
  }

  function poll() {
    var url = "/queue/status?productId=" + encodeURIComponent(productId)
            + "&ticket=" + encodeURIComponent(ticket);
    fetch(url, { cache: "no-store", credentials: "same-origin" })
      .then(function (res) {
        var ra = retryAfter(res);
        if (res.status === 200) {
          return res.json().then(function (s) { onStatus(s, ra); });
        }
        if (res.status === 400) {
          /* the gate no longer knows this ticket: expired or mangled */
          return expired();
        }
        return res.text().then(function () { trouble(ra); });
      })
      .catch(function () { trouble(0); });
  }

  function trouble(ra) {
    failures++;
    state("waiting", "The shop is busy; still keeping your place\u2026");
    later(poll, ra || Math.min(MAX_POLL, failures), ra);
  }

  function onStatus(s, ra) {
    failures = 0;
    if (s.soldOut) {
      return soldOut();
    }
    if (s.admitted) {
      showPlace(0, 0);
      $("fill").style.width = "100%";
      return admitted();
    }
    showPlace(s.position, s.etaSeconds);
    state("waiting", s.position === 1 ? "You are next."
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
    submit(ticket);
  }

  function submit(withTicket) {
    sends++;
    state("ordering", "Placing your order\u2026", "good");
    FluxGateOrder.send(order, withTicket).then(outcome, function () {
      /* the network failed: the same key makes another try safe */
      later(function () { submit(withTicket); }, Math.min(MAX_POLL, sends));
    });
  }

  function outcome(o) {
    switch (o.kind) {
    case "accepted":
      return accepted(o.orderId);
    case "queued":
      /* over the threshold again (no ticket, or its window passed): the
         gate gave a new place in line */
      location.replace(o.url);
      return;
    case "sold_out":
      return soldOut();
    case "limit_reached":
      FluxGateOrder.clear();
      $("title").textContent = "One per person";
      return finish("limit_reached", "You already bought as many of "
                    + "these as one person may.", "bad");
    case "unknown_product":
      FluxGateOrder.clear();
      $("title").textContent = "Not on sale";
      return finish("unknown_product", "This product is not on sale.", "bad");
    case "in_progress":
      /* an earlier try with this key is still being decided: ask again */
      state("in_progress", "Your order is being processed\u2026", "good");
      later(function () { submit(ticket); }, o.retryAfter, o.retryAfter);
      return;
    case "retry":
      state("ordering", "The shop is busy; trying again\u2026");
      later(function () { submit(ticket); }, o.retryAfter, o.retryAfter);
      return;
    case "ticket_rejected":
      /* spent or expired.  Without it the same key replays an order that
         went through, or joins the line again */
      if (ticket) {
        ticket = "";
        return submit("");
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
    try {
      sessionStorage.setItem("fluxgate.confirmed", JSON.stringify(
        { orderId: orderId, body: order ? order.body : null }));
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
    $("title").textContent = "Sold out";
    finish("sold_out", "Sorry, this product sold out while you waited.",
           "bad");
  }

  function expired() {
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
    submit("");
  });

  if (ticket && productId) {
    state("waiting");
    poll();
  } else if (order) {
    /* no ticket: wait what the gate asked, then send the order again */
    state("waiting", "Waiting for a free slot\u2026");
    $("queue").hidden = true;
    later(function () { submit(""); }, legacyRetry || 1, legacyRetry);
  } else {
    finish("no_order", "Nothing to wait for here: go back to the shop.", "");
  }
})();
