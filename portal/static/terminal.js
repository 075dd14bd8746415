// The browser terminal: xterm.js over a WebSocket to the broker, which is
// the SSH client. The first message is the login; the password or key is
// sent once and forgotten by the page.
(function () {
  "use strict";
  var form = document.getElementById("term-login");
  if (!form) return;
  var box = document.getElementById("terminal"), err = document.getElementById("term-error"),
      status = document.getElementById("term-status");
  function fail(msg) { err.textContent = msg; err.hidden = false; }
  function readKey(input) {
    return new Promise(function (resolve, reject) {
      var f = input.files && input.files[0];
      if (!f) { resolve(""); return; }
      if (f.size > 16384) { reject(new Error("That key file is too large to be a private key.")); return; }
      var r = new FileReader();
      r.onload = function () { resolve(String(r.result)); };
      r.onerror = function () { reject(new Error("The key file could not be read.")); };
      r.readAsText(f);
    });
  }
  // Connect stays disabled until this script is there to take the form:
  // without it, a click would submit the password in a request of its own.
  document.getElementById("term-connect").disabled = false;
  form.addEventListener("submit", function (e) {
    e.preventDefault();
    err.hidden = true;
    readKey(document.getElementById("term-key")).then(function (key) {
      var term = new Terminal({ cursorBlink: true, convertEol: false, fontSize: 14, screenReaderMode: true });
      var fit = new FitAddon.FitAddon();
      term.loadAddon(fit);
      box.hidden = false;
      term.open(box);
      fit.fit();
      var ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/terminal/socket");
      ws.binaryType = "arraybuffer";
      var enc = new TextEncoder();
      ws.onopen = function () {
        ws.send(JSON.stringify({
          device: form.dataset.device, service: form.dataset.service,
          user: document.getElementById("term-user").value,
          password: document.getElementById("term-password").value,
          key: key, passphrase: document.getElementById("term-passphrase").value,
          cols: term.cols, rows: term.rows
        }));
        document.getElementById("term-password").value = "";
        document.getElementById("term-passphrase").value = "";
        form.hidden = true;
      };
      ws.onmessage = function (m) {
        if (typeof m.data !== "string") { term.write(new Uint8Array(m.data)); return; }
        var s = JSON.parse(m.data);
        if (s.type === "ready") {
          status.textContent = "Connected (host key " + s.fingerprint + (s.pinned ? ", pinned now" : "") + "). Recorded. ";
          var t = document.getElementById("term-countdown");
          if (t) status.appendChild(t);
          term.focus();
        } else if (s.type === "ended" || s.type === "error") {
          fail(s.message);
          box.setAttribute("data-ended", s.reason || "error");
        }
      };
      ws.onclose = function () {
        if (!box.hasAttribute("data-ended")) { fail("The connection to the broker closed."); box.setAttribute("data-ended", "closed"); }
        term.options.disableStdin = true;
      };
      term.onData(function (d) { if (ws.readyState === 1) ws.send(enc.encode(d)); });
      term.onResize(function (s) { if (ws.readyState === 1) ws.send(JSON.stringify({ type: "resize", cols: s.cols, rows: s.rows })); });
      window.addEventListener("resize", function () { fit.fit(); });
    }, function (e2) { fail(e2.message); });
  });
})();
