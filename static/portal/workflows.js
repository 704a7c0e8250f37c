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

// Forms that undo something ask first (the cancel button of a run).
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-confirm]");
  if (form && !window.confirm(form.dataset.confirm)) event.preventDefault();
});
