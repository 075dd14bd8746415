// Replaying a recorded terminal with asciinema-player: seek and speed.
(function () {
  "use strict";
  var el = document.getElementById("replay");
  if (!el || !window.AsciinemaPlayer) return;
  AsciinemaPlayer.create(el.dataset.cast, el, { controls: true, speed: 1, idleTimeLimit: 2, fit: "width" });
})();
