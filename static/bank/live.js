// Live updates: after every (re)connect, tell the server what this page still waits for, so it can catch up.
(function () {
  function setStatus(text, ok) {
    var el = document.getElementById("live-status");
    if (el) { el.textContent = text; el.className = "live-status " + (ok ? "on" : "off"); }
  }
  document.addEventListener("htmx:wsOpen", function (event) {
    var live = document.getElementById("live");
    var pending = Array.prototype.map.call(document.querySelectorAll("[data-pending-command]"), function (el) {
      return el.dataset.pendingCommand;
    });
    event.detail.socketWrapper.send(JSON.stringify({ type: "hello", account: live.dataset.account || null, pending: pending }), live);
    setStatus("live", true);
  });
  // 1013 (try again later): the server has too many live pages or lost Redis for a moment; htmx
  // retries after a growing, jittered pause, as after a restart (1006/1012).
  document.addEventListener("htmx:wsClose", function (event) {
    var closed = event.detail && event.detail.event;
    setStatus(closed && closed.code === 1013 ? "busy, retrying…" : "reconnecting…", false);
  });
})();
