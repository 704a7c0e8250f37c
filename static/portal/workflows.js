// The workflows pages (apps/portal/workflows_pages.py): no inline handlers, delegated listeners
// (the run page's live part is swapped in by HTMX every second).
"use strict";

// The editor's format: before anything was typed, show the same definition in the other format
// (the server writes it); once the text was changed, keep it and read it in the format chosen.
document.addEventListener("change", (event) => {
  const radio = event.target.closest("input[type=radio][name=format]");
  if (!radio) return;
  const editor = document.getElementById("id_definition");
  // Only in a fresh editor (a GET): after a refused save the text is the person's, kept as typed.
  if (!editor || editor.value !== editor.defaultValue || !("fresh" in editor.form.dataset)) return;
  const url = new URL(window.location.href);
  url.searchParams.set("format", radio.value);
  window.location.assign(url.toString());
});

// A run's page follows the run: its events stream (server-sent events, woken when the run or a
// step changes) sends the live part rendered; it ends when the run does. When the stream can't be
// held open (every long-response slot taken, no EventSource), the part is polled instead.
(() => {
  const live = document.querySelector("[data-run-events]");
  if (!live) return;
  const finished = () => live.querySelector("[data-finished]")?.dataset.finished === "true";
  if (finished()) return;
  const every = 1000 * Number(live.dataset.pollSeconds || 2);
  const poll = async () => {
    try {
      const answer = await fetch(live.dataset.runLive, { headers: { Accept: "text/html" }, credentials: "same-origin" });
      if (answer.ok) live.innerHTML = await answer.text(); // rendered and escaped by the server
    } catch (error) {
      // The network blinked: the next round tries again.
    }
    if (!finished()) window.setTimeout(poll, every);
  };
  if (!window.EventSource) {
    window.setTimeout(poll, every);
    return;
  }
  const source = new EventSource(live.dataset.runEvents);
  source.addEventListener("live", (event) => {
    const data = JSON.parse(event.data);
    live.innerHTML = data.html; // rendered and escaped by the server's template
    // The server closes the stream now; without this the browser would reconnect.
    if (data.finished) source.close();
  });
  source.addEventListener("error", () => {
    // Refused (429) or not a stream: EventSource gives up for good; poll instead.
    if (source.readyState === EventSource.CLOSED) window.setTimeout(poll, every);
  });
})();
