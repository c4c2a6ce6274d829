// rouse console: every data-refresh-ms, fetch the page's live part (rendered on the
// server, charts included) and swap it in. The next fetch starts only after the previous
// one ended, so a slow console is never asked twice at once; a hidden tab does not ask.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var status = document.getElementById("status");
  var every = parseInt(document.body.dataset.refreshMs, 10) || 2000;
  var refreshes = 0;
  if (!live) return;
  function say(text, ok) {
    status.textContent = text;
    status.className = "status " + (ok ? "ok" : "bad");
  }
  function next() { setTimeout(refresh, every); }
  function refresh() {
    if (document.hidden) { next(); return; }
    var url = location.pathname + "?fragment=1";
    fetch(url, { cache: "no-store" }).then(function (r) {
      // A service page whose service is gone answers 404 with a page that says so.
      if (!r.ok && r.status !== 404) throw new Error("HTTP " + r.status);
      return r.text();
    }).then(function (html) {
      live.innerHTML = html;
      refreshes++;
      document.body.dataset.refreshes = String(refreshes);
      say("live · " + new Date().toLocaleTimeString(), true);
    }).catch(function (e) {
      say("console unreachable (" + e.message + "); retrying", false);
    }).then(next);
  }
  say("live", true);
  next();
})();
