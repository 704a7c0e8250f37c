// The webhooks pages: the copy button beside a secret shown once (no inline script: CSP).
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
