// Live updates. After every (re)connect the page says what it is (so that the server sends only fragments it
// has targets for) and which commands it still waits for (so it can catch up); a pending row that appears
// later is announced on its own.
(function () {
  var socket = null;

  function setStatus(text, ok) {
    var el = document.getElementById("live-status");
    if (el) { el.textContent = text; el.className = "live-status " + (ok ? "on" : "off"); }
  }

  function pendingIn(root) {
    var rows = Array.prototype.slice.call(root.querySelectorAll("[data-pending-command]"));
    if (root.matches && root.matches("[data-pending-command]")) { rows.push(root); }
    return rows.map(function (el) { return [el.dataset.account, el.dataset.pendingCommand]; });
  }

  document.addEventListener("htmx:wsOpen", function (event) {
    var live = document.getElementById("live");
    socket = event.detail.socketWrapper;
    socket.send(JSON.stringify({
      type: "hello",
      page: live.dataset.page || null,
      account: live.dataset.account || null,
      history: live.dataset.history === "1",
      chart: live.dataset.chart ? Number(live.dataset.chart) : null,
      pending: pendingIn(document),
    }), live);
    setStatus("live", true);
  });
  // 4013 (try again later): the server has too many live pages or lost Redis for a moment; htmx
  // retries after a growing, jittered pause, as after a restart (1006/1012).
  document.addEventListener("htmx:wsClose", function (event) {
    var closed = event.detail && event.detail.event;
    setStatus(closed && closed.code === 4013 ? "busy, retrying…" : "reconnecting…", false);
  });

  document.addEventListener("htmx:load", function (event) {
    if (!socket || event.target === document.body) { return; }
    pendingIn(event.target).forEach(function (pair) {
      socket.send(JSON.stringify({ type: "watch", account: pair[0], command: pair[1] }), document.getElementById("live"));
    });
  });
  // Copy an account number (the compact form, no spaces) to the clipboard.
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-copy]");
    if (!button) { return; }
    var done = function () { button.textContent = "Copied"; setTimeout(function () { button.textContent = "Copy"; }, 1500); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(button.dataset.copy).then(done, function () { button.textContent = "Select and copy"; });
    } else {
      var range = document.createRange();
      range.selectNodeContents(document.getElementById("account-number"));
      window.getSelection().removeAllRanges();
      window.getSelection().addRange(range);
      button.textContent = "Selected: press Ctrl+C";
    }
  });
})();
