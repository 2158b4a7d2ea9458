/*! keyport-connect 1.0.0 — keyport's Connect flow for any page. No dependencies. */
// Usage (your backend starts the flow with POST /api/v1/connections/oauth/start and a
// `return_to` on your site that also loads this script):
//
//   KeyportConnect.connect(() => fetch("/my-backend/keyport-start").then((r) => r.json()).then((b) => b.authorize_url))
//     .then(({ connection_id, status, account }) => …)
//     .catch((e) => e.reason); // popup_blocked | access_denied | invalid_redirect | timeout | closed,
//                              // or keyport's error code (token_exchange_failed, account_mismatch, …)
//
// A function given to connect() is called with { popup: true | false } (whether the window
// opened), so a backend can pass a `return_to` for the same-window case.
//
// The authorization opens in a popup. It ends on your `return_to` page inside the popup, where
// this script hands the result to your page and closes the popup. When the browser blocks the
// popup, the page itself goes to the provider (unless `{ fallback: "reject" }`) and comes back to
// `return_to`, where `KeyportConnect.result()` gives the outcome.
(function (global) {
  "use strict";
  var VERSION = "1.0.0";
  var MESSAGE = "keyport:connect-result";

  function failure(reason, message) {
    var e = new Error(message || reason);
    e.reason = reason;
    return e;
  }

  // The outcome keyport put on the return_to URL, or null.
  function parse(search) {
    var q = new URLSearchParams(search || "");
    var status = q.get("status");
    var id = q.get("connection_id");
    if (!status || !id) return null;
    return {
      connection_id: id,
      status: status,
      account: q.get("account") ? { display_name: q.get("account") } : null,
      error: q.get("error"),
      message: q.get("message")
    };
  }

  function settle(r, resolve, reject) {
    // Any error code (access_denied, token_exchange_failed, account_mismatch, …) rejects.
    if (r.status === "error" || r.error) {
      var reason = r.error || "provider_error";
      reject(failure(reason, r.message || reason));
    } else {
      resolve({ connection_id: r.connection_id, status: r.status, account: r.account });
    }
  }

  function checkedUrl(url) {
    var u;
    try { u = new URL(url, global.location.href); } catch (e) { return null; }
    return u.protocol === "https:" || u.protocol === "http:" ? u.href : null;
  }

  // connect(url | Promise<url> | () => url | Promise<url>, { fallback, timeoutMs })
  function connect(target, options) {
    var opts = options || {};
    var timeoutMs = opts.timeoutMs || 10 * 60 * 1000;
    // Open the window now, inside the click, so blockers let it through; point it later.
    var popup = global.open("", "keyport-connect", "popup,width=560,height=720");
    if (popup && popup.closed) popup = null;
    var urlPromise;
    try {
      urlPromise = Promise.resolve(typeof target === "function" ? target({ popup: !!popup }) : target);
    } catch (e) {
      urlPromise = Promise.reject(e);
    }
    return urlPromise.then(function (raw) {
      var url = checkedUrl(raw);
      if (!url) {
        if (popup) popup.close();
        throw failure("invalid_redirect", "the authorize URL is not an http(s) URL");
      }
      if (!popup) {
        if (opts.fallback !== "reject") global.location.assign(url);
        throw failure("popup_blocked", "the browser blocked the sign-in window");
      }
      popup.location.href = url;
      return new Promise(function (resolve, reject) {
        var done = false;
        var timer = null;
        var watch = null;
        function finish(fn, value) {
          if (done) return;
          done = true;
          global.removeEventListener("message", onMessage);
          clearTimeout(timer);
          clearInterval(watch);
          fn(value);
        }
        function onMessage(ev) {
          if (ev.origin !== global.location.origin || !ev.data || ev.data.type !== MESSAGE) return;
          settle(ev.data.result, function (v) { finish(resolve, v); }, function (e) { finish(reject, e); });
        }
        global.addEventListener("message", onMessage);
        timer = setTimeout(function () {
          try { popup.close(); } catch (e) { /* already gone */ }
          finish(reject, failure("timeout", "no answer from the sign-in window in time"));
        }, timeoutMs);
        watch = setInterval(function () {
          if (!popup.closed) return;
          clearInterval(watch);
          // A result posted just before closing is still on its way: wait a moment.
          setTimeout(function () { finish(reject, failure("closed", "the sign-in window was closed")); }, 1000);
        }, 500);
      });
    }, function (e) {
      if (popup) popup.close();
      throw e && e.reason ? e : failure("invalid_redirect", "could not get the authorize URL: " + (e && e.message ? e.message : e));
    });
  }

  // On the return_to page after a same-window authorization: the outcome, or null.
  function result() {
    var r = parse(global.location.search);
    if (!r) return null;
    return new Promise(function (resolve, reject) { settle(r, resolve, reject); });
  }

  // Inside the popup, on the return_to page: hand the outcome to the page that opened it.
  function relay() {
    var r = parse(global.location.search);
    var opener = global.opener;
    if (!r || !opener || opener === global) return false;
    try { opener.postMessage({ type: MESSAGE, result: r }, global.location.origin); } catch (e) { return false; }
    setTimeout(function () { global.close(); }, 100);
    return true;
  }

  global.KeyportConnect = { version: VERSION, connect: connect, result: result, relay: relay };
  relay();
})(window);
