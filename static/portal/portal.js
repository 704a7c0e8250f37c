// Behaviour every portal page may use, by markup alone (no inline handlers, so a strict CSP holds):
// - <form data-confirm="Question?">: asks before the form is sent (revoke, remove, cancel);
// - <button data-copy="field-id">: copies that field's value, and says so in #field-id-copied.
"use strict";

document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-confirm]");
  if (form && !window.confirm(form.dataset.confirm)) event.preventDefault();
});

document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  const said = document.getElementById(button.dataset.copy + "-copied");
  field.select();
  try {
    await navigator.clipboard.writeText(field.value);
    said.textContent = "Copied to the clipboard.";
  } catch (error) {
    document.execCommand("copy");
    said.textContent = "Selected: press Ctrl+C (⌘C) if it was not copied.";
  }
});
