// Fieldpass portal: small progressive enhancements. Every page works
// without this file; the server enforces every rule.
(function () {
  "use strict";
  // Countdowns: <time class="countdown" datetime="RFC3339"> shows the time
  // left, and turns red in the last ten minutes.
  function left(ms) {
    if (ms <= 0) return "ended";
    var s = Math.floor(ms / 1000), d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600),
        m = Math.floor(s % 3600 / 60);
    if (d > 0) return d + "d " + h + "h left";
    if (h > 0) return h + "h " + m + "m left";
    if (m >= 10) return m + "m left";
    return m + "m " + (s % 60) + "s left";
  }
  function tick() {
    var now = Date.now();
    document.querySelectorAll("time.countdown[datetime]").forEach(function (el) {
      var ms = Date.parse(el.getAttribute("datetime")) - now;
      el.textContent = left(ms);
      el.classList.toggle("soon", ms > 0 && ms < 600000);
    });
  }
  var main = document.querySelector("main[data-refresh]");
  var shown = main && main.innerHTML; // the server's content, before tick() touches it
  tick();
  setInterval(tick, 1000);
  // Forms that ask before they act: <form data-confirm="question">.
  document.addEventListener("submit", function (e) {
    var q = e.target.getAttribute && e.target.getAttribute("data-confirm");
    if (q && !window.confirm(q)) e.preventDefault();
  });
  // Live pages (<main data-refresh="seconds">) reload their content. The
  // content is replaced only when the server's copy changed, and never
  // under a person's focus or text selection, so a click or a copy is not
  // lost to a refresh.
  if (main) {
    var every = parseInt(main.getAttribute("data-refresh"), 10) * 1000;
    setInterval(function () {
      if (document.hidden) return;
      fetch(location.href, { headers: { "Accept": "text/html" }, credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (!html) return;
          var doc = new DOMParser().parseFromString(html, "text/html");
          var fresh = doc.querySelector("main[data-refresh]");
          if (!fresh || fresh.innerHTML === shown) return;
          var sel = window.getSelection();
          if (main.contains(document.activeElement) || (sel && !sel.isCollapsed && main.contains(sel.anchorNode))) return;
          shown = fresh.innerHTML;
          main.innerHTML = shown;
          tick();
        });
    }, every);
  }
})();
