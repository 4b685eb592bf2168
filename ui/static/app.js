// halapi console: live updates (server-sent events on /ui/events, sent
// when the node applies a raft index or sees a new leader) and a select-all
// box. No third-party code; the page works without this script.
(function () {
  "use strict";
  function busy(el) {
    if (el.querySelector("input[type=checkbox]:checked")) return true;
    var a = document.activeElement;
    return a && a !== document.body && el.contains(a) && a.tagName !== "BUTTON";
  }
  var inflight = false, pending = false;
  // leaving: a form was submitted or the page is going away. A refresh
  // that comes back after that must neither navigate (a 401 from a
  // sign-out racing it would abort the form's own navigation) nor swap
  // regions.
  var leaving = false, es = null;
  function leave() {
    leaving = true;
    if (es) es.close();
  }
  document.addEventListener("submit", leave);
  window.addEventListener("pagehide", leave);
  // back to a page kept in the back/forward cache: live again
  window.addEventListener("pageshow", function (e) {
    if (e.persisted && leaving) { leaving = false; start(); }
  });
  function refresh() {
    if (leaving) return;
    var live = document.querySelectorAll("[data-live]");
    if (!live.length) return;
    if (inflight) { pending = true; return; }
    inflight = true;
    fetch(location.href, { credentials: "same-origin", headers: { "X-Halapi-Live": "1" } })
      .then(function (r) {
        if (leaving) return null;
        if (r.status === 401) { location.href = "/ui/login"; return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (!html || leaving) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        live.forEach(function (el) {
          if (!el.id || busy(el)) return;
          var fresh = doc.getElementById(el.id);
          if (fresh) el.replaceWith(document.importNode(fresh, true));
        });
        bind();
      })
      .catch(function () {})
      .finally(function () {
        inflight = false;
        if (pending) { pending = false; refresh(); }
      });
  }
  function bind() {
    var all = document.getElementById("select-all");
    if (all && !all.dataset.bound) {
      all.dataset.bound = "1";
      all.addEventListener("change", function () {
        document.querySelectorAll("#decisions input[name=id]").forEach(function (b) { b.checked = all.checked; });
      });
    }
  }
  function start() {
    bind();
    if (!document.getElementById("applied-index") || !window.EventSource) return;
    var dot = document.getElementById("live-state");
    es = new EventSource("/ui/events");
    es.addEventListener("open", function () { if (dot) dot.className = "dot on"; });
    es.addEventListener("error", function () { if (dot) dot.className = "dot off"; });
    es.addEventListener("update", function (e) {
      var ev;
      try { ev = JSON.parse(e.data); } catch (x) { return; }
      var idx = document.getElementById("applied-index");
      if (idx) idx.textContent = String(ev.applied);
      refresh();
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
