/* refstream storefront snippet v1 (README: "Connect your Shopify store: the storefront
 * snippet"). Add to the theme: <script src="https://INGRESS/pixel/v1.js" async></script>
 *
 * On a landing from a referral link (?ref=CODE) it records the click with the ingress it was
 * loaded from (POST /v1/clicks, text/plain JSON, keepalive); on a landing from /r/ (?rsclid=ID)
 * it keeps the click id the redirect recorded. It keeps a visitor id (rs_vid) and the latest
 * click id (rs_clid) in first-party cookies of the shop, and writes both into the cart's
 * attributes (_rsvid, _rsclid) with Shopify's AJAX Cart API, so the order carries them in its
 * note_attributes. No third-party code, no dependencies. */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || !script.src || window.__refstreamPixel) return;
  window.__refstreamPixel = 1;

  var INGRESS = new URL(script.src).origin;
  var VISITOR = "rs_vid", CLICK = "rs_clid";
  var CART_VISITOR = "_rsvid", CART_CLICK = "_rsclid";
  var MAX_AGE = 90 * 86400; // the ingress's default click cookie lifetime
  var ID = /^[A-Za-z0-9_-]{1,100}$/;

  function cookie(name) {
    var parts = document.cookie ? document.cookie.split("; ") : [];
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf("=");
      if (parts[i].slice(0, eq) === name) return decodeURIComponent(parts[i].slice(eq + 1));
    }
    return null;
  }

  function keep(name, value) {
    document.cookie = name + "=" + encodeURIComponent(value) + "; Path=/; Max-Age=" + MAX_AGE +
      "; SameSite=Lax" + (location.protocol === "https:" ? "; Secure" : "");
  }

  function randomHex(bytes) {
    var a = new Uint8Array(bytes), out = "";
    crypto.getRandomValues(a);
    for (var i = 0; i < a.length; i++) out += (a[i] < 16 ? "0" : "") + a[i].toString(16);
    return out;
  }

  function cut(text, n) { return text && text.length > n ? text.slice(0, n) : text || null; }

  // Writes the ids into the cart's attributes when they are not there yet (one GET per page).
  function syncCart() {
    var ids = {};
    ids[CART_VISITOR] = cookie(VISITOR);
    ids[CART_CLICK] = cookie(CLICK);
    if (!ids[CART_VISITOR] && !ids[CART_CLICK]) return Promise.resolve(null);
    return fetch("/cart.js", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (cart) {
        var have = (cart && cart.attributes) || {}, attributes = {}, stale = false;
        for (var k in ids) {
          if (ids[k] && have[k] !== ids[k]) { attributes[k] = ids[k]; stale = true; }
        }
        if (!stale) return cart;
        return fetch("/cart/update.js", {
          method: "POST", credentials: "same-origin",
          headers: { "Content-Type": "application/json", Accept: "application/json" },
          body: JSON.stringify({ attributes: attributes }),
        }).then(function (r) { return r.ok ? r.json() : null; });
      });
  }

  // Records a ?ref= landing; resolves with the click id the ingress gave it (null: unknown).
  function record(code, visitor) {
    var body = JSON.stringify({ clicks: [{
      link_code: code, client_event_id: "px_" + randomHex(16), visitor_id: visitor,
      occurred_at: new Date().toISOString(), landing_url: cut(location.href, 2000),
      referrer: cut(document.referrer, 2000),
    }] });
    var url = INGRESS + "/v1/clicks";
    function beacon() {
      // Same client_event_id, so a click that did arrive is the same click (same id), not a
      // second one; the visitor id still ties the order to it.
      if (navigator.sendBeacon) navigator.sendBeacon(url, body);
      return null;
    }
    if (window.fetch) {
      // text/plain keeps it a simple CORS request (no preflight); keepalive lets it finish
      // when the shopper navigates on.
      return fetch(url, {
        method: "POST", body: body, keepalive: true, credentials: "omit", mode: "cors",
        headers: { "Content-Type": "text/plain;charset=UTF-8" },
      }).then(function (r) { return r.ok ? r.json() : null; })
        .then(function (answer) {
          var item = answer && answer.accepted && answer.accepted[0];
          return item ? item.click_id : null;
        }, beacon);
    }
    return Promise.resolve(beacon());
  }

  var params = new URLSearchParams(location.search);
  var visitor = cookie(VISITOR);
  if (!visitor || !ID.test(visitor)) visitor = randomHex(16);
  keep(VISITOR, visitor);

  var landing = Promise.resolve(null);
  var code = params.get("ref"), given = params.get("rsclid");
  if (given && /^clk_[0-9a-f]{32}$/.test(given)) {
    landing = Promise.resolve(given); // recorded by the ingress's /r/ redirect
  } else if (code && ID.test(code)) {
    landing = record(code, visitor);
  }
  var done = landing
    .catch(function () { return null; })
    .then(function (clickId) {
      if (clickId) keep(CLICK, clickId);
      return syncCart();
    })
    .then(function () {
      return { visitor_id: cookie(VISITOR), click_id: cookie(CLICK) };
    }, function () {
      return { visitor_id: cookie(VISITOR), click_id: cookie(CLICK) };
    });
  window.refstream = { ready: done };
})();
