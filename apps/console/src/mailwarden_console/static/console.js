// mailwarden console: live updates without a build step.
// One EventSource per page (the body's data-events URL). Each notice names a kind and ids; every
// element whose data-live lists "<kind>:<id>" or "<kind>:*" gets an htmx "mw-live" event and
// re-reads itself from the console (which asks the service with the user's token).
(function () {
  "use strict";
  var url = document.body.getAttribute("data-events");
  if (!url || !window.EventSource || !window.htmx) { return; }
  var source = new EventSource(url);
  // At most one re-read per region every 300 ms, and always one after the last notice (htmx's own
  // throttle drops the trailing event, which would leave a finished job showing "running").
  function poke(el) {
    if (el._mwTimer) { return; }
    el._mwTimer = window.setTimeout(function () { el._mwTimer = null; window.htmx.trigger(el, "mw-live"); }, 300);
  }
  function refresh(kind, ids) {
    var keys = [kind + ":*"];
    Object.keys(ids).forEach(function (name) { if (ids[name]) { keys.push(kind + ":" + ids[name]); } });
    document.querySelectorAll("[data-live]").forEach(function (el) {
      var wanted = el.getAttribute("data-live").split(/\s+/);
      if (keys.some(function (k) { return wanted.indexOf(k) >= 0; })) { poke(el); }
    });
  }
  ["job", "alert", "mailbox"].forEach(function (kind) {
    source.addEventListener(kind, function (event) { refresh(kind, JSON.parse(event.data)); });
  });
  // On (re)connecting, re-read every live region once: what changed before the stream opened is not lost.
  source.addEventListener("open", function () {
    document.querySelectorAll("[data-live]").forEach(poke);
    document.body.setAttribute("data-live-state", "open");
  });
  window.addEventListener("pagehide", function () { source.close(); });
  // "Select all" for the lists' check boxes (without JavaScript each row is ticked on its own).
  document.querySelectorAll("input[data-select-all]").forEach(function (box) {
    box.addEventListener("change", function () {
      var form = document.getElementById(box.getAttribute("data-select-all"));
      form.querySelectorAll("input[type=checkbox][name=mailbox_ids]").forEach(function (row) {
        row.checked = box.checked;
      });
    });
  });
})();
