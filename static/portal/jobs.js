// A job's page follows the job while it runs: the server's progress stream (server-sent events)
// sends the page's live part, rendered, each time the job changes; it ends when the job does.
(() => {
  "use strict";
  const live = document.querySelector("[data-job-events]");
  if (!live || !window.EventSource) return;
  const source = new EventSource(live.dataset.jobEvents);
  source.addEventListener("status", (event) => {
    const data = JSON.parse(event.data);
    live.innerHTML = data.html; // rendered (and escaped) by the server's template
    live.dataset.status = data.status;
    if (data.finished) {
      // The server closes the stream now; without this the browser would reconnect.
      source.close();
      document.querySelectorAll("[data-while-unfinished]").forEach((element) => element.remove());
    }
  });
})();
