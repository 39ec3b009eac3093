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
  if (id !== voice.sessionId) closeVoice();
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
  closeVoice();
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

async function ensureSession(title) {
  if (state.current) return state.current;
  const body = { model: $("model").value || undefined, title: title.slice(0, 60), system_prompt: $("system").value.trim() || undefined };
  const session = await (await api("POST", "/v1/sessions", body)).json();
  state.current = session.id; $("title").value = session.title || "";
  loadSessions().catch(show);
  return session.id;
}

async function send(text) {
  $("error").textContent = "";
  await ensureSession(text);
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

// -- voice ----------------------------------------------------------------------------------------
// The microphone goes through an AudioWorklet (mic.js: 16 kHz PCM16) to the Realtime WebSocket
// (/v1/realtime, the key in OpenAI's subprotocol, the turns stored in this conversation's session);
// the answer's audio (16 kHz PCM16) is queued for playback as it arrives. Push to talk: the turn is
// what is said while the button is held. Hands-free: the server's VAD finds the turns; speaking over
// an answer stops its playback (barge-in).

const RATE = 16000;
const voice = {
  ws: null, sessionId: null, opened: null, context: null, node: null, stream: null, mode: null,
  playAt: 0, sources: [], user: null, heard: "", answer: null, said: "", onEnd: null,
  releasedAt: null, firstAudioMs: null, // push to talk: from letting go to the answer's first audio
};

function voiceState(text) { $("voice-state").textContent = text; }

function base64(buffer) {
  const bytes = new Uint8Array(buffer); let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

function voiceSend(event) { if (voice.ws && voice.ws.readyState === WebSocket.OPEN) voice.ws.send(JSON.stringify(event)); }

async function openVoice() {
  const sessionId = await ensureSession("Voice conversation");
  if (voice.ws && voice.sessionId === sessionId && voice.ws.readyState <= WebSocket.OPEN) return voice.opened;
  if (voice.ws) { const old = voice.ws; voice.ws = null; old.close(1000); } // another conversation's
  stopPlayback();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = `${scheme}://${location.host}/v1/realtime?session_id=${encodeURIComponent(sessionId)}`;
  const ws = new WebSocket(url, ["realtime", `openai-insecure-api-key.${key()}`]);
  voice.ws = ws; voice.sessionId = sessionId;
  voice.opened = new Promise((resolve, reject) => {
    ws.addEventListener("message", (message) => {
      const event = JSON.parse(message.data);
      if (event.type === "session.created") resolve();
      onVoiceEvent(event);
    });
    ws.addEventListener("close", (closed) => {
      reject(new Error(closed.reason || "the voice connection was refused"));
      if (voice.ws === ws) {
        voice.ws = null; stopMic(); stopPlayback(); voiceState("");
        if (closed.code !== 1000 && closed.code !== 1005) show(new Error(`Voice: ${closed.reason || `connection closed (${closed.code})`}`));
      }
    });
  });
  await voice.opened;
  voiceSend({ type: "session.update", session: { temperature: Number($("temperature").value) } });
  return voice.opened;
}

function closeVoice() {
  stopMic(); stopPlayback(); setHandsFree(false);
  if (voice.ws) { const ws = voice.ws; voice.ws = null; ws.close(1000); }
  voice.user = null; voice.answer = null; voiceState("");
}

async function startMic() {
  if (!voice.context) {
    voice.context = new AudioContext();
    await voice.context.audioWorklet.addModule("/ui/mic.js");
  }
  await voice.context.resume();
  if (!voice.node) {
    const constraints = { audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true } };
    voice.stream = await navigator.mediaDevices.getUserMedia(constraints);
    const source = voice.context.createMediaStreamSource(voice.stream);
    voice.node = new AudioWorkletNode(voice.context, "moltbot-mic", { numberOfInputs: 1, numberOfOutputs: 0 });
    voice.node.port.onmessage = (message) => {
      if (message.data instanceof ArrayBuffer) voiceSend({ type: "input_audio_buffer.append", audio: base64(message.data) });
      else if (message.data.end && voice.onEnd) { const then = voice.onEnd; voice.onEnd = null; then(); }
    };
    source.connect(voice.node);
  }
}

function micOn(on) { if (voice.node) voice.node.port.postMessage({ on }); }

function stopMic() {
  micOn(false);
  if (voice.stream) for (const track of voice.stream.getTracks()) track.stop();
  if (voice.node) voice.node.disconnect();
  voice.stream = null; voice.node = null; voice.onEnd = null;
}

function play(encoded) {
  const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
  const samples = new Int16Array(bytes.buffer, 0, bytes.length >> 1);
  if (!samples.length || !voice.context) return;
  const buffer = voice.context.createBuffer(1, samples.length, RATE);
  const channel = buffer.getChannelData(0);
  for (let i = 0; i < samples.length; i++) channel[i] = samples[i] / 32768;
  const source = voice.context.createBufferSource();
  source.buffer = buffer; source.connect(voice.context.destination);
  voice.playAt = Math.max(voice.playAt, voice.context.currentTime + 0.02);
  source.start(voice.playAt); voice.playAt += buffer.duration;
  voice.sources.push(source);
  source.onended = () => { voice.sources = voice.sources.filter((s) => s !== source); if (!voice.sources.length && voice.mode) voiceState(voice.mode === "handsfree" ? "listening" : ""); };
  const state = $("voice-state");
  state.dataset.playedMs = String(Number(state.dataset.playedMs) + Math.round(buffer.duration * 1000));
  voiceState("speaking");
}

function stopPlayback() {
  for (const source of voice.sources) { try { source.stop(); } catch (_) { /* not started */ } }
  voice.sources = []; voice.playAt = 0;
}

function onVoiceEvent(event) {
  switch (event.type) {
    case "input_audio_buffer.speech_started":
      stopPlayback(); // barge-in: the server cancels the answer, the page stops playing it
      voice.user = voice.user || addMessage("user", "…"); voice.heard = ""; voiceState("hearing");
      break;
    case "conversation.item.input_audio_transcription.delta":
      voice.user = voice.user || addMessage("user", "…");
      voice.heard += event.delta; render(voice.user.body, voice.heard);
      break;
    case "conversation.item.input_audio_transcription.completed":
      voice.user = voice.user || addMessage("user", "");
      if (event.transcript.trim()) render(voice.user.body, event.transcript); else voice.user.item.remove();
      voice.user = null; voice.heard = ""; voiceState("thinking");
      break;
    case "response.created":
      voice.answer = addMessage("assistant", ""); voice.said = "";
      break;
    case "response.audio_transcript.delta":
      if (!voice.answer) break;
      voice.said += event.delta; render(voice.answer.body, voice.said); voice.answer.item.scrollIntoView({ block: "end" });
      break;
    case "response.audio.delta":
      if (voice.releasedAt !== null) { voice.firstAudioMs = performance.now() - voice.releasedAt; voice.releasedAt = null; }
      play(event.delta);
      break;
    case "response.done": {
      const state = $("voice-state"); state.dataset.responses = String(Number(state.dataset.responses) + 1);
      if (voice.answer) {
        const timing = event.response.timing || {};
        const waited = timing.first_audio_ms != null ? timing.first_audio_ms : voice.firstAudioMs;
        voice.answer.meta.textContent = event.response.status === "cancelled" ? "stopped"
          : (waited != null ? `voice · first audio ${Math.round(waited)} ms after you stopped` : "voice");
        voice.firstAudioMs = null;
      }
      voice.answer = null;
      if (!voice.sources.length) voiceState(voice.mode === "handsfree" ? "listening" : "");
      break;
    }
    case "error":
      show(new Error(`Voice: ${event.error.message}`));
      break;
    default:
      break;
  }
}

async function talkStart() {
  if (voice.mode === "talk") return;
  if (voice.mode === "handsfree") setHandsFree(false);
  voice.mode = "talk"; $("talk").classList.add("talking"); $("error").textContent = "";
  try {
    await openVoice();
    // Partial transcripts while the button is held (they would share the CPU with an answer made ahead
    // in hands-free mode, where the server decides the turn: there the final transcript comes alone).
    voiceSend({ type: "session.update", session: { turn_detection: null, input_audio_transcription: { partial_results: true } } });
    await startMic();
    stopPlayback(); voiceSend({ type: "response.cancel" });
    if (voice.mode !== "talk") return; // released while the microphone opened
    voice.user = addMessage("user", "…"); voice.heard = "";
    micOn(true); voiceState("hearing");
  } catch (error) { voice.mode = null; $("talk").classList.remove("talking"); show(error); }
}

function talkEnd() {
  if (voice.mode !== "talk") return;
  voice.mode = null; $("talk").classList.remove("talking");
  if (!voice.node) return;
  voice.onEnd = () => { voiceSend({ type: "input_audio_buffer.commit" }); voiceSend({ type: "response.create" }); };
  voice.releasedAt = performance.now(); micOn(false); voiceState("thinking");
}

function setHandsFree(on) {
  $("handsfree").setAttribute("aria-pressed", String(on));
  if (!on) { if (voice.mode === "handsfree") { voice.mode = null; micOn(false); voiceState(""); } return; }
  voice.mode = "handsfree";
}

async function handsFree() {
  if (voice.mode === "handsfree") { setHandsFree(false); return; }
  setHandsFree(true); $("error").textContent = "";
  try {
    await openVoice();
    const detection = { type: "server_vad", silence_duration_ms: 500 };
    voiceSend({ type: "session.update", session: { turn_detection: detection, input_audio_transcription: { partial_results: false } } });
    await startMic();
    if (voice.mode === "handsfree") { micOn(true); voiceState("listening"); }
  } catch (error) { setHandsFree(false); show(error); }
}

// -- wiring ---------------------------------------------------------------------------------------

function signOut() { closeVoice(); sessionStorage.removeItem(KEY); $("app").hidden = true; $("signin").hidden = false; $("key").focus(); }

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
  const talk = $("talk");
  talk.addEventListener("pointerdown", (event) => { event.preventDefault(); talk.setPointerCapture(event.pointerId); talkStart(); });
  talk.addEventListener("pointerup", talkEnd);
  talk.addEventListener("pointercancel", talkEnd);
  talk.addEventListener("keydown", (event) => { if (event.key === " " && !event.repeat) { event.preventDefault(); talkStart(); } });
  talk.addEventListener("keyup", (event) => { if (event.key === " ") { event.preventDefault(); talkEnd(); } });
  $("handsfree").addEventListener("click", () => handsFree());
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
