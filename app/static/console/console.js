// The operator console's only script: the live feed (server-sent events) and the buttons and forms,
// which call the service's JSON admin endpoints from this same origin.
"use strict";

const notice = (text, ok) => {
  const el = document.getElementById("notice");
  el.textContent = text;
  el.className = ok ? "ok" : "bad";
  el.hidden = false;
};

async function call(method, url, body, contentType) {
  const init = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.body = body;
    init.headers["Content-Type"] = contentType;
  }
  const response = await fetch(url, init);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.message || data.error || `${response.status} ${response.statusText}`);
  return data;
}

const duration = (s) => (s >= 3600 ? `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`
  : s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`);

function cell(text) { const td = document.createElement("td"); td.textContent = text; return td; }

function row(cells, emptyText, span) {
  const tr = document.createElement("tr");
  if (cells === null) { const td = cell(emptyText); td.colSpan = span; td.className = "muted"; tr.append(td); }
  else tr.append(...cells);
  return tr;
}

function render(live) {
  const set = (key, text) => document.querySelectorAll(`[data-live="${key}"]`).forEach((el) => { el.textContent = text; });
  set("uptime", duration(live.uptimeS));
  set("activeStreams", String(live.activeStreams));
  set("memory.process", live.memory.process);
  set("memory.available", live.memory.available);
  const models = document.querySelector('[data-live="memory.models"]');
  if (models) {
    models.replaceChildren(...(live.memory.models.length ? live.memory.models.map((m) =>
      row([cell(m.alias), cell(m.size), cell(String(m.leases)), cell(`${m.idleS} s`)])) : [row(null, "No model in memory", 4)]));
  }
  const streams = document.querySelector('[data-live="streams"]');
  if (streams) {
    streams.replaceChildren(...(live.streams.length ? live.streams.map((s) => {
      const stop = document.createElement("button");
      Object.assign(stop.dataset, { action: "stop", session: s.id });
      stop.textContent = "Stop";
      const tr = row([cell(s.id), cell(s.model), cell(`${s.durationS} s`), cell(String(s.tokens)), document.createElement("td")]);
      tr.dataset.session = s.id;
      tr.lastChild.append(stop);
      return tr;
    }) : [row(null, "No active stream", 5)]));
  }
}

function follow() {
  if (!document.querySelector("[data-live]")) return;
  const events = new EventSource("/console/events");
  events.addEventListener("live", (event) => render(JSON.parse(event.data)));
  document.body.dataset.live = "connecting";
  events.addEventListener("open", () => { document.body.dataset.live = "open"; });
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  button.disabled = true;
  try {
    if (button.dataset.action === "model") {
      const { verb, name } = button.dataset;
      await call("POST", `/api/v1/models/${name.split("/").map(encodeURIComponent).join("/")}/${verb}`);
      notice(`${name}: ${verb === "load" ? "loaded" : "unloaded"}`, true);
      setTimeout(() => window.location.reload(), 600);
    } else if (button.dataset.action === "stop") {
      const result = await call("POST", `/console/streams/${encodeURIComponent(button.dataset.session)}/stop`);
      notice(`Stream ${result.sessionId} stopped after ${result.tokenCount} tokens (${result.finalStatus})`, true);
    }
  } catch (error) {
    notice(error.message, false);
    button.disabled = false;
  }
});

function parseValue(text) {
  if (text.trim() === "") return null;
  try { return JSON.parse(text); } catch { return text; }
}

function result(form, text, ok) {
  const el = form.querySelector("[data-result]");
  el.textContent = text;
  el.className = `small ${ok ? "ok" : "bad"}`;
}

const problems = (validation) => validation.errors.map((e) => e.message || JSON.stringify(e)).join("; ");

// the value box starts from the setting's current value, as the table shows it
function prefill(form) {
  const current = document.querySelector(`#settings tr[data-key="${form.key.value}"] code`);
  form.value.value = current ? current.textContent : "";
}
const editForm = document.getElementById("config-edit");
if (editForm) {
  editForm.key.addEventListener("change", () => prefill(editForm));
  prefill(editForm);
}

document.getElementById("config-edit")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const change = { [form.key.value]: parseValue(form.value.value) };
  try {
    if (change[form.key.value] !== null) {  // a removal has nothing to validate
      const validation = await call("POST", "/api/v1/config/validate", JSON.stringify(change), "application/json");
      if (!validation.valid) { result(form, `Not valid: ${problems(validation)}`, false); return; }
    }
    const applied = await call("PATCH", "/api/v1/config", JSON.stringify(change), "application/json");
    result(form, `Applied as revision ${applied.revision.id}`, true);
    setTimeout(() => window.location.reload(), 600);
  } catch (error) { result(form, error.message, false); }
});

document.getElementById("config-restore")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const file = form.file.files[0];
  if (!file) { result(form, "Choose a TOML file first", false); return; }
  const text = await file.text();
  try {
    const validation = await call("POST", "/api/v1/config/validate", text, "application/toml");
    if (!validation.valid) { result(form, `Not valid: ${problems(validation)}`, false); return; }
    const restored = await call("POST", "/api/v1/config/restore", text, "application/toml");
    result(form, `Restored as revision ${restored.revision.id}`, true);
    setTimeout(() => window.location.reload(), 600);
  } catch (error) { result(form, error.message, false); }
});

follow();
