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
  document.addEventListener("htmx:wsClose", function () { setStatus("reconnecting…", false); });
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
