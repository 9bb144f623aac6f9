// Follows /events and redraws the Kanban. Strings from the board go through textContent only.
"use strict";
(function () {
  var kanban = document.getElementById("kanban");
  var live = document.getElementById("live-text");
  if (!kanban || !window.EventSource) { return; }

  function card(entry) {
    var li = document.createElement("li");
    li.className = "card";
    li.dataset.id = entry.id;
    var link = document.createElement("a");
    link.href = "/task/" + encodeURIComponent(entry.id);
    link.textContent = entry.id;
    li.appendChild(link);
    [["agent", entry.agent], ["note", entry.note]].forEach(function (pair) {
      if (pair[1] === null || pair[1] === undefined || pair[1] === "") { return; }
      var span = document.createElement("span");
      span.className = pair[0];
      span.textContent = String(pair[1]);
      li.appendChild(document.createTextNode(" "));
      li.appendChild(span);
    });
    return li;
  }

  function render(view) {
    kanban.querySelectorAll("section.column").forEach(function (section) {
      var entries = view.columns[section.dataset.column] || [];
      var list = section.querySelector("ul");
      var fresh = document.createElement("ul");
      entries.forEach(function (entry) { fresh.appendChild(card(entry)); });
      section.replaceChild(fresh, list);
      section.querySelector(".count").textContent = String(entries.length);
    });
    var daemon = document.getElementById("daemon");
    if (daemon) {
      daemon.textContent = view.daemon.running
        ? "daemon running (pid " + view.daemon.pid + "), last looked " + (view.daemon.updated_at || "?")
        : "daemon not running" + (view.daemon.updated_at ? " (last seen " + view.daemon.updated_at + ")" : "");
    }
  }

  var source = new EventSource("/events");
  source.addEventListener("board", function (event) {
    render(JSON.parse(event.data));
    kanban.dataset.eventId = event.lastEventId;
    live.textContent = "live";
    document.body.classList.add("is-live");
  });
  source.onerror = function () {           // the browser reconnects by itself, with Last-Event-ID
    live.textContent = "reconnecting";
    document.body.classList.remove("is-live");
  };
})();
