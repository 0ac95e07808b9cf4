/*
 * Flux-Gate: the waiting room's proof of work (fluxgate_queue_pow).
 *
 * Over the threshold the gate asks a browser without a place to show some
 * work first: a challenge C (signed, bound to the product and the buyer,
 * good for two minutes) and a number of bits N.  Find n, written in
 * decimal, such that SHA-256(C + "." + n) begins with N zero bits; the
 * order then goes again, the same key and body, with X-Queue-Proof: C.n.
 * nginx checks it with one hash.  On average 2^N hashes: 65,536 at 16.
 *
 *   FluxGatePow.solve(challenge, bits, onProgress) -> Promise of
 *       {n, tried, ms, where: "worker" | "page"}
 *   onProgress(tried) at most every 100 ms.  The promise fails with an
 *   Error whose code is "insecure" where the browser has no Web Crypto.
 *
 * The hashing is Web Crypto's (crypto.subtle.digest), in a Web Worker
 * (pow-worker.js loads this same file) so the page stays responsive, or in
 * the page where workers are unavailable.  Each digest is a promise that
 * the browser fulfils off the JavaScript thread; one at a time, the round
 * trips would dominate, so LANES digests are kept in flight at once.
 *
 * Where crypto.subtle is missing: browsers expose Web Crypto's digest only
 * in a secure context: a page served over https, or from localhost /
 * 127.0.0.1 even over plain http.  A page reached over plain http on any
 * other address (a phone trying the demo on the shop's LAN address) has
 * crypto.getRandomValues but no crypto.subtle, so it cannot do the work:
 * the waiting room says so plainly (data-state "insecure") instead of
 * falling back to a hand-written SHA-256 in JavaScript.  A shop serves
 * its pages over https anyway, and there the question does not arise.
 */
(function (global) {
  "use strict";

  var LANES = 64;          /* digests in flight at once */
  var PROGRESS_MS = 100;

  /* the address of this file, for the worker (set when loaded by a page) */
  var here = global.document && global.document.currentScript
      ? global.document.currentScript.src : "";

  function insecure() {
    var e = new Error("Web Crypto (crypto.subtle) is not available: the "
                      + "page is not in a secure context");
    e.code = "insecure";
    return e;
  }

  function subtle() {
    return global.crypto && global.crypto.subtle
        && typeof global.crypto.subtle.digest === "function"
        ? global.crypto.subtle : null;
  }

  /* ASCII only: a challenge is base64url and a dot */
  function ascii(s) {
    var b = new Uint8Array(s.length), i;
    for (i = 0; i < s.length; i++) {
      b[i] = s.charCodeAt(i) & 0x7f;
    }
    return b;
  }

  /* prefix + the decimal digits of n */
  function message(prefix, n) {
    var d = String(n), b = new Uint8Array(prefix.length + d.length), i;
    b.set(prefix);
    for (i = 0; i < d.length; i++) {
      b[prefix.length + i] = d.charCodeAt(i);
    }
    return b;
  }

  /* does the digest begin with `bits` zero bits? */
  function leadingZeros(digest, bits) {
    var b = new Uint8Array(digest), i = 0;
    for (; bits >= 8; bits -= 8, i++) {
      if (b[i] !== 0) {
        return false;
      }
    }
    return bits === 0 || (b[i] >> (8 - bits)) === 0;
  }

  /* the search itself, here (a page or a worker) */
  function search(challenge, bits, onProgress) {
    var s = subtle();
    if (!s) {
      return Promise.reject(insecure());
    }
    if (!(bits >= 0 && bits <= 32) || !challenge) {
      return Promise.reject(new Error("bad challenge"));
    }
    var prefix = ascii(challenge + ".");
    var next = 0, tried = 0, done = false, t0 = Date.now(), told = t0;
    return new Promise(function (resolve, reject) {
      function lane() {
        var n = next++;
        s.digest("SHA-256", message(prefix, n)).then(function (d) {
          if (done) {
            return;
          }
          tried++;
          if (leadingZeros(d, bits)) {
            done = true;
            resolve({ n: n, tried: tried, ms: Date.now() - t0 });
            return;
          }
          if (onProgress && Date.now() - told >= PROGRESS_MS) {
            told = Date.now();
            onProgress(tried);
          }
          lane();
        }, function (e) {
          if (!done) {
            done = true;
            reject(e);
          }
        });
      }
      var i;
      for (i = 0; i < LANES; i++) {
        lane();
      }
    });
  }

  /* in a worker when one can be made, else here */
  function solve(challenge, bits, onProgress) {
    var w, t0 = Date.now();
    if (!subtle()) {
      return Promise.reject(insecure());
    }
    try {
      w = global.Worker && here ? new global.Worker(
        here.replace(/pow\.js(\?.*)?$/, "pow-worker.js")) : null;
    } catch (e) {
      w = null;      /* a policy forbids workers: do it here */
    }
    if (!w) {
      return search(challenge, bits, onProgress).then(function (r) {
        r.where = "page";
        return r;
      });
    }
    return new Promise(function (resolve, reject) {
      function fallback() {
        w.terminate();
        search(challenge, bits, onProgress).then(function (r) {
          r.where = "page";
          resolve(r);
        }, reject);
      }
      w.onmessage = function (ev) {
        var m = ev.data || {};
        if (m.progress !== undefined) {
          if (onProgress) {
            onProgress(m.progress);
          }
        } else if (m.found) {
          w.terminate();
          m.found.where = "worker";
          m.found.ms = Date.now() - t0;
          resolve(m.found);
        } else if (m.error === "insecure") {
          w.terminate();
          reject(insecure());
        } else {
          fallback();
        }
      };
      /* the worker's script did not load or run: do it here */
      w.onerror = function (ev) {
        if (ev && ev.preventDefault) {
          ev.preventDefault();
        }
        fallback();
      };
      w.postMessage({ challenge: challenge, bits: bits });
    });
  }

  global.FluxGatePow = { solve: solve, search: search,
                         leadingZeros: leadingZeros, LANES: LANES };
})(typeof self !== "undefined" ? self : this);
