/*
 * Flux-Gate demo shop.  What any shop page in front of the gate does:
 *   1. before sending the order, store it (body and a fresh idempotency
 *      key) with FluxGateOrder.start(): the waiting room re-sends exactly
 *      that, with the same key, when its ticket is admitted;
 *   2. send POST /order and let fetch() follow a 302: a redirected answer
 *      means "queued", and its url is the waiting room with the ticket;
 *   3. anything else is the gate's answer to the order itself.
 */
(function () {
  "use strict";

  var $ = function (id) { return document.getElementById(id); };
  var product = null;

  /* the demo's signed-in user: one per browser */
  function userId() {
    var u = null;
    try { u = localStorage.getItem("fluxgate.demo.user"); } catch (e) { u = null; }
    if (!u) {
      u = "u-" + FluxGateOrder.newKey().slice(0, 12);
      try { localStorage.setItem("fluxgate.demo.user", u); } catch (e) { /* per page */ }
    }
    return u;
  }

  function say(st, text) {
    document.body.setAttribute("data-state", st);
    $("status").textContent = text;
  }

  function show(p) {
    product = p;
    $("name").textContent = p.name || p.productId;
    $("blurb").textContent = p.description || "";
    $("price").textContent = p.price || "";
    if (p.stock === null || p.stock === undefined) {
      $("stock").textContent = "Not on sale yet";
    } else if (p.stock > 0) {
      $("stock").textContent = p.stock + " in stock when the sale opened";
      $("buy").disabled = false;
    } else {
      $("stock").textContent = "Sold out";
    }
    say("ready", "");
  }

  function buy() {
    var q = parseInt($("quantity").value, 10) || 1;
    var order = FluxGateOrder.start(
      { productId: product.productId, userId: userId(), quantity: q },
      { back: "/", done: "/confirmation.html" });
    $("buy").disabled = true;
    say("ordering", "Placing your order\u2026");
    FluxGateOrder.send(order, "").then(function (o) {
      if (o.kind === "queued") {
        say("queued", "High demand: taking you to the waiting room\u2026");
        location.assign(o.url);
        return;
      }
      if (o.kind === "accepted") {
        FluxGateOrder.clear();
        try {
          sessionStorage.setItem("fluxgate.confirmed", JSON.stringify(
            { orderId: o.orderId, body: order.body }));
        } catch (e) { /* the id is in the address */ }
        location.assign("/confirmation.html?orderId="
                        + encodeURIComponent(o.orderId));
        return;
      }
      FluxGateOrder.clear();
      $("buy").disabled = false;
      if (o.kind === "sold_out") {
        $("buy").disabled = true;
        $("stock").textContent = "Sold out";
        say("sold_out", "Sorry, this product is sold out.");
      } else if (o.kind === "limit_reached") {
        say("limit_reached", "You already bought as many as one person may.");
      } else if (o.kind === "in_progress" || o.kind === "retry") {
        say("error", "The shop is busy; please try again in a moment.");
      } else if (o.kind === "unknown_product") {
        say("error", "This product is not on sale yet.");
      } else {
        say("error", "Your order could not be placed (" + o.status
            + (o.error ? ": " + o.error : "") + ").");
      }
    }, function () {
      $("buy").disabled = false;
      say("error", "The shop cannot be reached; please try again.");
    });
  }

  $("buy").addEventListener("click", buy);

  fetch("/products.json", { cache: "no-store" })
    .then(function (res) { return res.json(); })
    .then(function (list) {
      var want = new URLSearchParams(location.search).get("productId");
      var ps = list.products || [];
      var p = ps.filter(function (x) { return x.productId === want; })[0]
              || ps[0];
      if (!p) {
        throw new Error("no product");
      }
      show(p);
    })
    .catch(function () { say("error", "The catalogue cannot be loaded."); });
})();
