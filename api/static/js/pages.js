// Small enhancements of the server-rendered pages; every page works without them.
// - [data-copy="<id>"] buttons copy the value or text of element <id> and say so in [data-copy-status] (or their
//   own label); `window.pages.copied` keeps the last copied text so a test can read what the page copied.
// - [data-native-share] offers the phone's share sheet where the browser has one.
// - On the targets page, changing a pick marks the forecast as out of date until it is updated.
(function () {
  "use strict";

  var state = { copied: null, copyMethod: null };
  window.pages = state;

  function textOf(element) {
    if (!element) { return ""; }
    return "value" in element && element.tagName !== "BUTTON" ? element.value : element.textContent.trim();
  }

  function announce(button, message) {
    var status = document.querySelector("[data-copy-status]");
    if (status) {
      status.textContent = "";
      window.setTimeout(function () { status.textContent = message; }, 30); // re-announced on every copy
    }
    var label = button.dataset.label || button.textContent;
    button.dataset.label = label;
    button.textContent = button.dataset.copiedLabel || "Copied";
    button.classList.add("is-copied");
    window.clearTimeout(button._restore);
    button._restore = window.setTimeout(function () {
      button.textContent = label;
      button.classList.remove("is-copied");
    }, 2500);
  }

  // The old way, for browsers (or insecure origins) without the asynchronous clipboard.
  function copyBySelection(source, text) {
    var field = source;
    var temporary = null;
    if (!field || !("select" in field)) {
      temporary = field = document.createElement("textarea");
      field.value = text;
      field.setAttribute("readonly", "");
      field.style.position = "fixed";
      field.style.opacity = "0";
      document.body.appendChild(field);
    }
    field.select();
    var done = false;
    try { done = document.execCommand("copy"); } catch (err) { done = false; }
    if (temporary) { temporary.remove(); }
    return done;
  }

  function copy(button) {
    var source = document.getElementById(button.dataset.copy);
    var text = textOf(source);
    if (!text) { return; }
    function succeeded(method) {
      state.copied = text;
      state.copyMethod = method;
      button.dataset.copiedText = text;
      announce(button, (button.dataset.copiedLabel || "Copied") + ": " + (text.length > 80 ? text.slice(0, 77) + "…" : text));
    }
    function fallback() {
      if (copyBySelection(source, text)) {
        succeeded("selection");
      } else {
        if (source && "select" in source) { source.focus(); source.select(); }
        announce(button, "Press Ctrl+C (or Cmd+C) to copy the selected text.");
      }
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { succeeded("clipboard"); }, fallback);
    } else {
      fallback();
    }
  }

  Array.prototype.forEach.call(document.querySelectorAll("[data-copy]"), function (button) {
    button.addEventListener("click", function () { copy(button); });
  });

  Array.prototype.forEach.call(document.querySelectorAll("[data-native-share]"), function (button) {
    if (!navigator.share) { return; }
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.share({ text: button.dataset.shareText || "", url: button.dataset.shareUrl }).catch(function () {
        /* the person closed the share sheet: nothing to do */
      });
    });
  });

  var pickForm = document.querySelector("[data-pick-form]");
  if (pickForm) {
    pickForm.addEventListener("change", function (event) {
      if (event.target.name !== "pick") { return; }
      var stale = document.querySelector("[data-forecast-stale]");
      if (stale) { stale.hidden = false; }
      var ask = document.querySelector("[data-ask-button]");
      if (ask) {
        ask.disabled = true;
        ask.setAttribute("aria-describedby", "forecast-heading");
        ask.textContent = "Update the forecast before launching";
      }
    });
  }
})();
