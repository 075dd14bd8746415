// Watching a live terminal, read-only.
(function () {
  "use strict";
  var box = document.getElementById("terminal");
  if (!box || !box.dataset.socket) return;
  var term = new Terminal({ disableStdin: true, fontSize: 14, screenReaderMode: true });
  term.open(box);
  var ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + box.dataset.socket);
  ws.binaryType = "arraybuffer";
  ws.onmessage = function (m) { if (typeof m.data !== "string") term.write(new Uint8Array(m.data)); };
  ws.onclose = function () { document.getElementById("watch-status").textContent = "The session has ended."; box.setAttribute("data-ended", "1"); };
})();
