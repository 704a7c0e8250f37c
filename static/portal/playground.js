// The playground page (templates/portal/playground/playground.html): messages added and removed,
// the prompt posted with fetch and its answer read as server-sent events from the response body,
// and the same call shown as code. Text from the model or the server is only ever set as text;
// the code panel is HTML rendered (and escaped) by the server.
(() => {
  "use strict";
  const form = document.getElementById("playground-form");
  if (!form) return;
  const turns = document.getElementById("turns");
  const template = document.getElementById("turn-template");
  const addTurn = document.getElementById("add-turn");
  const runButton = document.getElementById("run");
  const stopButton = document.getElementById("stop");
  const codeButton = document.getElementById("view-code");
  const answer = document.getElementById("answer");
  const status = document.getElementById("answer-status");
  const refusal = document.getElementById("refusal");
  const meta = document.getElementById("answer-meta");
  const code = document.getElementById("code");
  const maxTurns = Number(addTurn.dataset.maxTurns || 50);
  let running = null; // the AbortController of the call in flight

  const CACHE_LAYERS = {
    miss: "Miss: the provider answered",
    l1: "Hit: L1 (this server's memory)",
    l2: "Hit: L2 (Redis)",
    l3: "Hit: L3 (semantic)",
    l4: "Hit: L4 (durable store)",
  };
  const REFUSALS = {
    budget_exceeded: "Budget exceeded",
    rate_limit_exceeded: "Rate limited",
    rate_limiter_unavailable: "Rate limiter unavailable",
    too_many_streams: "Too many open streams",
    model_not_found: "Model not available",
    model_not_allowed: "Model not allowed",
    provider_not_configured: "Provider not configured",
    no_model_available: "No model available",
    insufficient_scope: "Not allowed",
    plan_usage_exhausted: "Plan limit reached",
    plan_limit_reached: "Plan limit reached",
    plan_feature_unavailable: "Not in your plan",
  };

  // --- Messages -------------------------------------------------------------------------------
  function renumber() {
    const items = turns.querySelectorAll("[data-turn]");
    items.forEach((item, index) => {
      const n = index + 1;
      const role = item.querySelector("select");
      const content = item.querySelector("textarea");
      const error = item.querySelector("[data-error-for]");
      role.id = `turn-${n}-role`;
      content.id = `turn-${n}-content`;
      error.id = `error-turn-${n}`;
      error.dataset.errorFor = `turn-${n}`;
      content.setAttribute("aria-describedby", error.id);
      item.querySelectorAll("label").forEach((label) => {
        const forRole = label.htmlFor.endsWith("-role");
        label.htmlFor = forRole ? role.id : content.id;
        label.textContent = `${label.dataset.label} ${n}`;
      });
      item.querySelector("[data-remove-turn]").setAttribute("aria-label", `Remove message ${n}`);
    });
    addTurn.disabled = items.length >= maxTurns;
    code.hidden = true; // shown for the prompt as it was
  }

  addTurn.addEventListener("click", () => {
    const items = turns.querySelectorAll("[data-turn]");
    if (items.length >= maxTurns) return;
    const last = items[items.length - 1];
    const item = template.content.firstElementChild.cloneNode(true);
    // Conversations alternate: after the user's message comes the assistant's, and so on.
    item.querySelector("select").value = last && last.querySelector("select").value === "user" ? "assistant" : "user";
    turns.appendChild(item);
    renumber();
    item.querySelector("textarea").focus();
  });

  turns.addEventListener("click", (event) => {
    const button = event.target.closest("[data-remove-turn]");
    if (!button) return;
    button.closest("[data-turn]").remove();
    renumber();
    addTurn.focus();
  });

  // --- Errors ---------------------------------------------------------------------------------
  function clearErrors() {
    form.querySelectorAll("[data-error-for]").forEach((element) => {
      element.hidden = true;
      element.textContent = "";
    });
    form.querySelectorAll("[aria-invalid]").forEach((element) => element.removeAttribute("aria-invalid"));
    refusal.hidden = true;
    refusal.textContent = "";
  }

  function fieldInput(field) {
    if (field.startsWith("turn-")) return document.getElementById(`${field}-content`);
    return document.getElementById(`id_${field}`);
  }

  // A refusal by the organization's plan links to the plan page (for members who may open it).
  function plansLink() {
    const url = refusal.dataset.plansUrl;
    if (!url) return document.createTextNode("An owner, an admin or a billing member can change the plan.");
    const link = document.createElement("a");
    link.href = url;
    link.textContent = "See plans";
    return link;
  }

  function showProblem(problem) {
    const where = problem.field && form.querySelector(`[data-error-for="${CSS.escape(problem.field)}"]`);
    if (where) {
      where.textContent = problem.message;
      where.hidden = false;
      const input = fieldInput(problem.field);
      if (input) {
        input.setAttribute("aria-invalid", "true");
        input.focus();
      }
    }
    if (!where || problem.code !== "invalid_field") {
      const title = REFUSALS[problem.code] || "The call was refused";
      refusal.replaceChildren();
      const strong = document.createElement("strong");
      strong.textContent = `${title}: `;
      refusal.append(strong, document.createTextNode(problem.message));
      if (problem.code && problem.code.startsWith("plan_")) {
        refusal.append(/[.!?]$/.test(problem.message) ? " " : ". ", plansLink());
      }
      refusal.hidden = false;
    }
    status.textContent = "Nothing was run.";
  }

  async function problemOf(response) {
    try {
      const body = await response.json();
      if (body && body.error) return body.error;
    } catch (error) {
      // Not our JSON (a proxy's page, a sign-in redirect): said below.
    }
    if (response.status === 403) return { message: "Your role doesn't allow running prompts here.", code: "forbidden" };
    if (response.status === 400 || response.status === 413) return TOO_LARGE;
    return { message: `The server answered ${response.status}. Reload the page and try again.`, code: "error" };
  }

  // --- Running --------------------------------------------------------------------------------
  // URL-encoded (no file in this form): cheaper for the server to read than multipart.
  function formData() {
    return new URLSearchParams(new FormData(form));
  }

  // The server reads a form body up to a size (and refuses a larger one with a bare 400 page).
  const maxBodyBytes = Number(form.dataset.maxBodyBytes || 0);
  function tooLarge(body) {
    return maxBodyBytes > 0 && body.toString().length > maxBodyBytes;
  }
  const TOO_LARGE = {
    field: "turns",
    code: "invalid_field",
    message: "The prompt is too large to send from this page: shorten it, or send it through the API.",
  };

  function csrfToken() {
    return form.querySelector("[name=csrfmiddlewaretoken]").value;
  }

  function money(value) {
    const amount = Number(value);
    return Number.isFinite(amount) ? `$${amount.toFixed(6)}` : String(value);
  }

  function showMeta(end) {
    const cost = Number(end.cost_usd);
    document.getElementById("meta-model").textContent = end.simulated ? `${end.model} (simulated)` : end.model;
    document.getElementById("meta-tokens").textContent =
      `${end.prompt_tokens} in · ${end.completion_tokens} out`;
    document.getElementById("meta-cost").textContent = Number.isFinite(cost)
      ? `$${cost.toFixed(6)}${cost === 0 && end.cache !== "miss" ? " (cached answers cost nothing)" : ""}`
      : end.cost_usd;
    document.getElementById("meta-cache").textContent = CACHE_LAYERS[end.cache] || end.cache;
    document.getElementById("meta-latency").textContent =
      `${Math.round(end.latency_ms)} ms` +
      (end.first_token_ms === null ? "" : ` (first token ${Math.round(end.first_token_ms)} ms)`);
    const budget = document.getElementById("meta-budget");
    document.getElementById("meta-budget-item").hidden = end.reserved_usd === undefined;
    if (end.reserved_usd !== undefined) {
      budget.textContent =
        Number(end.reserved_usd) > 0
          ? `${money(end.reserved_usd)} reserved, ${money(end.settled_usd)} settled`
          : `nothing reserved (cache)${Number(end.saved_usd) > 0 ? `, ${money(end.saved_usd)} saved` : ""}`;
    }
    const request = document.getElementById("meta-request");
    request.replaceChildren();
    if (form.dataset.requestUrl) {
      const link = document.createElement("a");
      link.href = form.dataset.requestUrl.replace("REQUEST_ID", encodeURIComponent(end.request_id));
      link.textContent = end.request_id;
      link.setAttribute("aria-label", `Request ${end.request_id} in the request log`);
      request.append(link);
    } else {
      request.textContent = end.request_id;
    }
    meta.hidden = false;
  }

  function handle(name, data) {
    if (name === "start") {
      status.textContent = `Answering with ${data.model}…`;
    } else if (name === "delta") {
      answer.append(document.createTextNode(data.text));
    } else if (name === "end") {
      showMeta(data);
      status.textContent =
        data.finish_reason === "length" ? "Done: the answer stopped at the max tokens limit." : "Done.";
    } else if (name === "error") {
      showProblem({ message: data.message, code: "stream_broken" });
      status.textContent = "The answer was cut off.";
    }
  }

  // Server-sent events from a fetch body: blocks separated by a blank line, `event:` and `data:` lines.
  async function readEvents(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
        }
        if (data.length) handle(name, JSON.parse(data.join("\n")));
      }
    }
  }

  function setRunning(on) {
    runButton.disabled = on;
    stopButton.hidden = !on;
    answer.setAttribute("aria-busy", on ? "true" : "false");
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (running) return;
    clearErrors();
    answer.replaceChildren();
    meta.hidden = true;
    const body = formData();
    if (tooLarge(body)) {
      showProblem(TOO_LARGE);
      return;
    }
    status.textContent = "Sending…";
    running = new AbortController();
    setRunning(true);
    try {
      const response = await fetch(form.action, {
        method: "POST",
        body,
        headers: { "X-CSRFToken": csrfToken(), Accept: "text/event-stream" },
        credentials: "same-origin",
        signal: running.signal,
      });
      if (!response.ok || !(response.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
        showProblem(await problemOf(response));
        return;
      }
      await readEvents(response);
    } catch (error) {
      if (error.name === "AbortError") {
        status.textContent = "Stopped. A stopped call is charged what it reserved.";
      } else {
        showProblem({ message: "The connection to the server was lost before the answer ended.", code: "error" });
      }
    } finally {
      running = null;
      setRunning(false);
    }
  });

  // Code shown for an earlier prompt would mislead: it goes when the prompt changes.
  form.addEventListener("input", () => {
    code.hidden = true;
  });

  // Ctrl+Enter (⌘+Enter) in a message runs the prompt, as in other playgrounds.
  form.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && event.target.matches("textarea")) {
      event.preventDefault();
      form.requestSubmit(runButton);
    }
  });

  stopButton.addEventListener("click", () => {
    if (running) running.abort();
  });

  // --- Cost before running ----------------------------------------------------------------------
  const preview = document.getElementById("cost-preview");
  let previewTimer = null;
  let previewAsked = 0;

  async function showPreview() {
    const asked = ++previewAsked;
    const body = formData();
    if (tooLarge(body)) {
      preview.textContent = TOO_LARGE.message;
      return;
    }
    let text;
    try {
      const response = await fetch(form.dataset.previewUrl, {
        method: "POST",
        body,
        headers: { "X-CSRFToken": csrfToken() },
        credentials: "same-origin",
      });
      const figures = await response.json();
      if (response.ok) {
        const fallback = figures.worst_model === figures.model ? "" : ` if it falls back to ${figures.worst_model}`;
        text =
          `Cost: about ${money(figures.expected_usd)} on ${figures.model} for a ${figures.expected_output_tokens}-token ` +
          `answer; at most ${money(figures.worst_usd)}${fallback}.`;
        if (figures.budget) {
          const left = Number(figures.budget.remaining_usd);
          text +=
            ` ${figures.budget.label[0].toUpperCase()}${figures.budget.label.slice(1)} has ${money(left)} left` +
            (left < Number(figures.worst_usd) ? ": less than the worst case, so the call may be refused." : ".");
        }
      } else if (!figures.error || (figures.error.field || "").startsWith("turn")) {
        text = "The cost appears here once the prompt is written.";
      } else {
        text = `No cost yet: ${figures.error.message}`;
      }
    } catch (error) {
      text = "";
    }
    if (asked === previewAsked) preview.textContent = text; // only the latest answer counts
  }

  function previewSoon() {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(showPreview, 400);
  }

  form.addEventListener("input", previewSoon);
  form.addEventListener("change", previewSoon);
  turns.addEventListener("click", (event) => {
    if (event.target.closest("[data-remove-turn]")) previewSoon();
  });
  addTurn.addEventListener("click", previewSoon);

  // --- View as code ---------------------------------------------------------------------------
  codeButton.addEventListener("click", async () => {
    clearErrors();
    const body = formData();
    if (tooLarge(body)) {
      showProblem(TOO_LARGE);
      return;
    }
    let response;
    try {
      response = await fetch(form.dataset.codeUrl, {
        method: "POST",
        body,
        headers: { "X-CSRFToken": csrfToken() },
        credentials: "same-origin",
      });
    } catch (error) {
      showProblem({ message: "The server could not be reached. Try again.", code: "error" });
      return;
    }
    if (!response.ok) {
      showProblem(await problemOf(response));
      status.textContent = "";
      return;
    }
    // Rendered by the server from the validated prompt, every value escaped there.
    code.innerHTML = await response.text();
    code.hidden = false;
    code.scrollIntoView({ behavior: "smooth", block: "start" });
  });

  code.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-copy-code]");
    if (!button) return;
    const text = document.getElementById(button.dataset.copyCode).textContent;
    const said = document.getElementById("code-copied");
    try {
      await navigator.clipboard.writeText(text);
      said.textContent = "Copied to the clipboard.";
    } catch (error) {
      const range = document.createRange();
      range.selectNodeContents(document.getElementById(button.dataset.copyCode));
      window.getSelection().removeAllRanges();
      window.getSelection().addRange(range);
      said.textContent = "Selected: press Ctrl+C (⌘C) to copy.";
    }
  });

  renumber();
  showPreview();
})();
