// Moltbot's chat page: conversations are the server's sessions (/v1/sessions). The API key lives in
// sessionStorage only. Model output is untrusted: it is rendered by building DOM nodes with textContent
// (never innerHTML); links are kept only for http(s) URLs. The page's CSP forbids inline script.
"use strict";

const KEY = "moltbot.key";
const $ = (id) => document.getElementById(id);
const state = { sessions: [], current: null, controller: null };

function key() { return sessionStorage.getItem(KEY); }

class ApiError extends Error {
  constructor(status, message, retryAfter) { super(message); this.status = status; this.retryAfter = retryAfter; }
}

function explain(error) {
  if (!(error instanceof ApiError)) return error.name === "AbortError" ? "" : `Network error: ${error.message}`;
  if (error.status === 401) return "Your API key was refused: it may have expired or been revoked. Sign in again.";
  if (error.status === 403) return `This key may not do that: ${error.message}`;
  if (error.status === 429) return `Rate limit reached; try again in ${error.retryAfter || "a few"} seconds.`;
  if (error.status === 503) return `The server is busy or still loading its models; try again in ${error.retryAfter || "a few"} seconds.`;
  return error.message;
}

async function api(method, path, body, signal) {
  const headers = { Authorization: `Bearer ${key()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { const data = await response.json(); message = (data.error && data.error.message) || message; } catch (_) { /* not JSON */ }
    if (response.status === 401) signOut();
    throw new ApiError(response.status, message, response.headers.get("Retry-After"));
  }
  return response;
}

// -- safe rendering -------------------------------------------------------------------------------

function safeUrl(text) {
  try {
    const url = new URL(text);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch (_) { return null; }
}

function inline(parent, text) {
  // `code`, **bold**, [label](http(s) url); everything else is text.
  const pattern = /`([^`]+)`|\*\*([^*]+)\*\*|\[([^\]]+)\]\(([^)\s]+)\)/g;
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    parent.append(document.createTextNode(text.slice(last, match.index)));
    if (match[1] !== undefined) {
      const code = document.createElement("code"); code.textContent = match[1]; parent.append(code);
    } else if (match[2] !== undefined) {
      const strong = document.createElement("strong"); strong.textContent = match[2]; parent.append(strong);
    } else {
      const href = safeUrl(match[4]);
      if (href) {
        const link = document.createElement("a");
        link.textContent = match[3]; link.href = href; link.rel = "noopener noreferrer nofollow"; link.target = "_blank";
        parent.append(link);
      } else {
        parent.append(document.createTextNode(match[0]));
      }
    }
    last = match.index + match[0].length;
  }
  parent.append(document.createTextNode(text.slice(last)));
}

function render(target, text) {
  target.replaceChildren();
  const parts = text.split(/^```[^\n]*\n?/m);
  parts.forEach((part, i) => {
    if (i % 2 === 1) {
      const pre = document.createElement("pre"); const code = document.createElement("code");
      code.textContent = part.replace(/\n$/, ""); pre.append(code); target.append(pre);
      return;
    }
    for (const paragraph of part.split(/\n{2,}/)) {
      if (!paragraph.trim()) continue;
      const p = document.createElement("p");
      paragraph.split("\n").forEach((line, j) => { if (j) p.append(document.createElement("br")); inline(p, line); });
      target.append(p);
    }
  });
}

function addMessage(role, text) {
  const item = document.createElement("li"); item.className = role;
  const body = document.createElement("div"); body.className = "body";
  const meta = document.createElement("div"); meta.className = "meta";
  item.append(body, meta); render(body, text); $("messages").append(item);
  item.scrollIntoView({ block: "end" });
  return { item, body, meta };
}

// -- conversations --------------------------------------------------------------------------------

async function loadSessions() {
  const data = await (await api("GET", "/v1/sessions?limit=100")).json();
  state.sessions = data.data;
  const list = $("sessions"); list.replaceChildren();
  for (const session of state.sessions) {
    const li = document.createElement("li"); const button = document.createElement("button");
    button.type = "button"; button.textContent = session.title || "Untitled"; button.dataset.id = session.id;
    button.setAttribute("aria-current", String(state.current === session.id));
    button.addEventListener("click", () => openSession(session.id).catch(show));
    li.append(button); list.append(li);
  }
}

async function openSession(id) {
  const session = await (await api("GET", `/v1/sessions/${id}`)).json();
  state.current = session.id;
  $("title").value = session.title || "";
  $("messages").replaceChildren();
  for (const message of session.messages) {
    const shown = addMessage(message.role, message.content);
    if (message.status === "interrupted") shown.meta.textContent = "stopped";
  }
  for (const button of $("sessions").querySelectorAll("button")) button.setAttribute("aria-current", String(button.dataset.id === id));
  if (window.matchMedia("(max-width: 700px)").matches) $("sidebar").classList.add("closed");
}

function newConversation() {
  state.current = null; $("title").value = ""; $("messages").replaceChildren(); $("error").textContent = "";
  for (const button of $("sessions").querySelectorAll("button")) button.setAttribute("aria-current", "false");
  $("input").focus();
}

async function loadModels() {
  const data = await (await api("GET", "/v1/models")).json();
  const select = $("model"); select.replaceChildren();
  for (const model of data.data.filter((m) => m.kind === "generate")) {
    const option = document.createElement("option"); option.value = model.id; option.textContent = model.id;
    option.selected = Boolean(model.default); select.append(option);
  }
}

// -- a turn ---------------------------------------------------------------------------------------

async function* events(response) {
  const reader = response.body.getReader(); const decoder = new TextDecoder(); let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (data === "[DONE]") return;
      if (data) yield JSON.parse(data);
    }
  }
}

async function send(text) {
  $("error").textContent = "";
  if (!state.current) {
    const body = { model: $("model").value || undefined, title: text.slice(0, 60), system_prompt: $("system").value.trim() || undefined };
    const session = await (await api("POST", "/v1/sessions", body)).json();
    state.current = session.id; $("title").value = session.title || "";
    loadSessions().catch(show);
  }
  addMessage("user", text);
  const answer = addMessage("assistant", "");
  state.controller = new AbortController(); busy(true);
  let said = ""; const started = performance.now(); let first = null;
  try {
    const temperature = Number($("temperature").value);
    const response = await api("POST", `/v1/sessions/${state.current}/messages`, { content: text, stream: true, temperature }, state.controller.signal);
    for await (const event of events(response)) {
      if (event.error) throw new ApiError(0, event.error.message);
      const delta = event.choices && event.choices[0] && event.choices[0].delta;
      if (delta && delta.content) { first = first || performance.now(); said += delta.content; render(answer.body, said); answer.item.scrollIntoView({ block: "end" }); }
      if (event.usage) {
        const seconds = (performance.now() - (first || started)) / 1000;
        const speed = seconds > 0 ? (event.usage.completion_tokens / seconds).toFixed(1) : "–";
        answer.meta.textContent = `${event.usage.prompt_tokens} + ${event.usage.completion_tokens} tokens · ${speed} tokens/s`;
      }
    }
  } catch (error) {
    if (error.name === "AbortError") answer.meta.textContent = "stopped"; else show(error);
  } finally {
    state.controller = null; busy(false);
  }
}

function busy(on) { $("send").hidden = on; $("stop").hidden = !on; $("input").disabled = on; if (!on) $("input").focus(); }

function show(error) { const text = explain(error); if (text) $("error").textContent = text; }

// -- wiring ---------------------------------------------------------------------------------------

function signOut() { sessionStorage.removeItem(KEY); $("app").hidden = true; $("signin").hidden = false; $("key").focus(); }

async function start() {
  $("signin").hidden = true; $("app").hidden = false;
  await loadModels(); await loadSessions(); newConversation();
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault(); $("signin-error").textContent = "";
    sessionStorage.setItem(KEY, $("key").value.trim()); $("key").value = "";
    try { await start(); } catch (error) { signOut(); $("signin-error").textContent = explain(error); }
  });
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault(); const text = $("input").value.trim();
    if (!text || state.controller) return;
    $("input").value = ""; send(text).catch(show);
  });
  $("input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("composer").requestSubmit(); }
  });
  $("stop").addEventListener("click", () => { if (state.controller) state.controller.abort(); });
  $("new").addEventListener("click", newConversation);
  $("signout").addEventListener("click", signOut);
  $("toggle").addEventListener("click", () => $("sidebar").classList.toggle("closed"));
  $("rename").addEventListener("click", async () => {
    if (!state.current) return;
    try { await api("PATCH", `/v1/sessions/${state.current}`, { title: $("title").value.trim() || null }); await loadSessions(); } catch (error) { show(error); }
  });
  $("delete").addEventListener("click", async () => {
    if (!state.current || !window.confirm("Delete this conversation?")) return;
    try { await api("DELETE", `/v1/sessions/${state.current}`); newConversation(); await loadSessions(); } catch (error) { show(error); }
  });
  $("export").addEventListener("click", async () => {
    if (!state.current) return;
    try {
      const data = await (await api("GET", `/v1/sessions/${state.current}/export`)).blob();
      const link = document.createElement("a"); link.href = URL.createObjectURL(data); link.download = `${state.current}.json`;
      link.click(); URL.revokeObjectURL(link.href);
    } catch (error) { show(error); }
  });
  if (key()) start().catch((error) => { signOut(); $("signin-error").textContent = explain(error); }); else signOut();
});
