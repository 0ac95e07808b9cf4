/*
 * Flux-Gate: the proof of work off the page's thread (pow.js says what it
 * is).  Message in: {challenge, bits}.  Messages out: {progress: tried}
 * now and then, then {found: {n, tried, ms}} or {error: "insecure" |
 * text}.
 */
/* global importScripts, FluxGatePow */
importScripts("pow.js");

self.onmessage = function (ev) {
  "use strict";
  var m = ev.data || {};
  FluxGatePow.search(m.challenge, m.bits, function (tried) {
    self.postMessage({ progress: tried });
  }).then(function (r) {
    self.postMessage({ found: r });
  }, function (e) {
    self.postMessage({ error: e && e.code === "insecure" ? "insecure"
                                : String(e && e.message || e) });
  });
};
