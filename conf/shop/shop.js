/*
 * Flux-Gate demo shop.  What any shop page in front of the gate does:
 *   1. the shopper signs in: the shop's login sets a session cookie the
 *      gate reads as the buyer (here the stack's demo sign-in service,
 *      POST /signin, sets shop_session, an HS256 JWT; fluxgate_user_token
 *      checks it).  The cookie is HttpOnly: the page asks GET /signin who
 *      is signed in;
 *   2. before sending the order, store it (body and a fresh idempotency
 *      key) with FluxGateOrder.start(): the waiting room re-sends exactly
 *      that, with the same key, after the proof of work and when its
 *      ticket is admitted;
 *   3. send POST /order and let fetch() follow a 302: a place in line or
 *      a challenge (order.js reads which from the gate's cookie and keeps
 *      it in sessionStorage) means: go to the waiting room;
 *   4. anything else is the gate's answer to the order itself.
 * Where the shop has no /signin (a gate in front of other pages), the
 * page buys as a demo user of its own, named in the body's userId.
 */
(function () {
  "use strict";

  var $ = function (id) { return document.getElementById(id); };
  var product = null;
  /* mode: signed_in, signed_out, or none (no sign-in service here) */
  var session = { mode: "unknown", user: "" };
  var clock = null;

  /* the demo's own user where nobody signs in: one per browser */
  function demoUser() {
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

  /* seconds to the opening; 0 once open (or never announced) */
  function opensIn() {
    if (!product || !product.opensAt) {
      return 0;
    }
    return Math.max(0, Math.ceil(product.opensAt - Date.now() / 1000));
  }

  function clockText(s) {
    var m = Math.floor(s / 60), sec = s % 60;
    return m + ":" + (sec < 10 ? "0" : "") + sec;
  }

  function buyable() {
    return product && product.stock > 0
        && (session.mode === "signed_in" || session.mode === "none");
  }

  function render() {
    var left = opensIn();
    document.body.setAttribute("data-session", session.mode);
    $("who").textContent = session.mode === "signed_in"
        ? "Signed in as " + session.user : "";
    $("signout").hidden = session.mode !== "signed_in";
    $("signin").hidden = session.mode !== "signed_out";
    if (!product) {
      return;
    }
    $("opens").hidden = !product.opensAt;
    if (product.opensAt) {
      $("opens").textContent = left > 0
          ? "The sale opens in " + clockText(left)
            + ". Join the line now: when it opens, places are drawn at "
            + "random among everyone in it."
          : "The sale is open.";
    }
    $("buy").disabled = !buyable() || document.body.getAttribute("data-state")
        === "ordering";
    $("buy").textContent = session.mode === "signed_out" ? "Sign in to buy"
        : left > 0 ? "Join the line" : "Buy now";
  }

  function show(p) {
    product = p;
    $("name").textContent = p.name || p.productId;
    $("blurb").textContent = p.description || "";
    $("price").textContent = p.price || "";
    if (p.stock === null || p.stock === undefined) {
      $("stock").textContent = "Not on sale yet";
    } else if (p.stock > 0) {
      $("stock").textContent = p.stock + (opensIn() > 0 ? " for sale"
                                          : " in stock when the sale opened");
    } else {
      $("stock").textContent = "Sold out";
    }
    if (p.opensAt && !clock) {
      clock = setInterval(render, 1000);
    }
    render();
  }

  /* who is signed in: GET /signin; no such service here: buy as the
     demo's own user */
  function whoami() {
    return fetch("/signin", { cache: "no-store", credentials: "same-origin" })
      .then(function (res) {
        var json = /json/.test(res.headers.get("Content-Type") || "");
        if (res.status !== 200 || !json) {
          session = { mode: "none", user: demoUser() };
          return null;
        }
        return res.json().then(function (b) {
          session = b.status === "signed_in"
              ? { mode: "signed_in", user: b.user }
              : { mode: "signed_out", user: "" };
        });
      }, function () {
        session = { mode: "none", user: demoUser() };
      });
  }

  function post(path, body) {
    return fetch(path, {
      method: "POST", cache: "no-store", credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body)
    }).then(function (res) {
      return res.json().then(function (b) { b.httpStatus = res.status; return b; });
    });
  }

  function signIn(ev) {
    ev.preventDefault();
    var name = $("user").value;
    $("signin-button").disabled = true;
    post("/signin", { user: name }).then(function (b) {
      $("signin-button").disabled = false;
      if (b.status === "signed_in") {
        session = { mode: "signed_in", user: b.user };
        say("ready", "");
      } else {
        say("error", "Cannot sign in: " + (b.error || b.status) + ".");
      }
      render();
    }, function () {
      $("signin-button").disabled = false;
      say("error", "The shop cannot be reached; please try again.");
    });
  }

  function signOut() {
    post("/signout", {}).then(function () {
      session = { mode: "signed_out", user: "" };
      say("ready", "");
      render();
    }, function () {
      say("error", "The shop cannot be reached; please try again.");
    });
  }

  function toWaitingRoom(extra) {
    say("queued", "High demand: taking you to the waiting room\u2026");
    location.assign("/waiting-room/?productId="
                    + encodeURIComponent(product.productId) + (extra || ""));
  }

  function buy() {
    var q = parseInt($("quantity").value, 10) || 1;
    /* the signed-in user's id in the body too: should the session lapse
       while the shopper waits, the gate still knows the same buyer (and a
       different user signed in meanwhile is told so: 403) */
    var body = { productId: product.productId, quantity: q,
                 userId: session.user };
    var order = FluxGateOrder.start(body, { back: "/", done: "/confirmation.html",
                                           user: session.user });
    var held = FluxGateOrder.ticket(product.productId);
    say("ordering", "Placing your order\u2026");
    render();
    function go(opts) {
      FluxGateOrder.send(order, opts).then(function (o) {
        answer(o, order, opts);
      }, function () {
        say("error", "The shop cannot be reached; please try again.");
        render();
      });
    }
    /* a place held already (back from the waiting room): keep it */
    go(held ? { ticket: held } : {});

    function answer(o, order, opts) {
      if (o.kind === "queued" || o.kind === "challenge") {
        return toWaitingRoom("");
      }
      if (o.kind === "redirected") {
        return toWaitingRoom("&retryAfter=" + o.retryAfter);
      }
      if (o.kind === "ticket_rejected" && opts.ticket) {
        FluxGateOrder.dropTicket(product.productId);
        return go({});
      }
      if (o.kind === "accepted") {
        FluxGateOrder.clear();
        FluxGateOrder.dropTicket(product.productId);
        try {
          sessionStorage.setItem("fluxgate.confirmed", JSON.stringify(
            { orderId: o.orderId, body: order.body, user: order.user }));
        } catch (e) { /* the id is in the address */ }
        location.assign("/confirmation.html?orderId="
                        + encodeURIComponent(o.orderId));
        return;
      }
      FluxGateOrder.clear();
      if (o.kind === "sold_out") {
        product.stock = 0;
        $("stock").textContent = "Sold out";
        say("sold_out", "Sorry, this product is sold out.");
      } else if (o.kind === "limit_reached") {
        say("limit_reached", "You already bought as many as one person may.");
      } else if (o.kind === "closed") {
        product.stock = 0;
        say("closed", "The sale is closed.");
      } else if (o.kind === "too_many_places") {
        say("too_many_places", "Many places in line are already held from "
            + "your network; please try again in a minute.");
      } else if (o.kind === "unauthenticated") {
        session = { mode: "signed_out", user: "" };
        say("unauthenticated", "Please sign in again.");
      } else if (o.kind === "user_mismatch") {
        say("user_mismatch", "You are signed in as someone else now.");
        whoami().then(render);
      } else if (o.kind === "in_progress" || o.kind === "retry") {
        say("error", "The shop is busy; please try again in a moment.");
      } else if (o.kind === "unknown_product") {
        say("error", "This product is not on sale yet.");
      } else if (o.kind === "no_cookie") {
        say("error", "This shop needs cookies to keep your place in line.");
      } else {
        say("error", "Your order could not be placed (" + o.status
            + (o.error ? ": " + o.error : "") + ").");
      }
      render();
    }
  }

  $("buy").addEventListener("click", buy);
  $("signin").addEventListener("submit", signIn);
  $("signout").addEventListener("click", signOut);
  $("user").value = "shopper-" + FluxGateOrder.newKey().slice(0, 6);

  Promise.all([
    fetch("/products.json", { cache: "no-store" })
      .then(function (res) { return res.json(); }),
    whoami()
  ]).then(function (got) {
    var want = new URLSearchParams(location.search).get("productId");
    var ps = got[0].products || [];
    var p = ps.filter(function (x) { return x.productId === want; })[0]
            || ps[0];
    if (!p) {
      throw new Error("no product");
    }
    say("ready", "");
    show(p);
  }).catch(function () { say("error", "The catalogue cannot be loaded."); });
})();
