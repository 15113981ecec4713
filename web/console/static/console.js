// The console's only script: live rows over Server-Sent Events. Pages work without it (reload to refresh).
"use strict";
(function () {
  var kind = document.body.getAttribute("data-live");
  var rows = document.getElementById("rows");
  if (!kind || !rows || !window.EventSource) return;
  var busy = false, again = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(rows.getAttribute("data-fragment"), {credentials: "same-origin", headers: {"Accept": "text/html"}})
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) { rows.innerHTML = html; })  // our own server-rendered, escaped rows
      .catch(function () {})
      .then(function () { busy = false; if (again) { again = false; refresh(); } });
  }
  var source = new EventSource("/console/events");
  source.addEventListener(kind, refresh);
  source.addEventListener("open", function () {  // also after a reconnect: catch up on what changed meanwhile
    document.body.setAttribute("data-stream", "open");
    refresh();
  });
  source.addEventListener("error", function () { document.body.setAttribute("data-stream", "reconnecting"); });
})();
