// The microphone's AudioWorklet: the context's samples (usually 48 kHz) down to 16 kHz mono PCM16,
// posted to the page in 40 ms chunks while `on` (the page sends them over the Realtime WebSocket);
// turned off, it posts what it holds and then `{end: true}`.
"use strict";

const TARGET = 16000;
const CHUNK = 640; // 40 ms at 16 kHz

class MicProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.on = false;
    this.step = sampleRate / TARGET; // input samples per output sample
    this.position = 0; // where the next output sample falls in the next input block
    this.out = new Int16Array(CHUNK);
    this.filled = 0;
    this.port.onmessage = (event) => {
      const was = this.on;
      this.on = Boolean(event.data.on);
      if (was && !this.on) { // the last samples, then a mark: everything said has been posted
        if (this.filled) this.flush();
        this.port.postMessage({ end: true });
      }
    };
  }

  flush() {
    this.port.postMessage(this.out.slice(0, this.filled).buffer);
    this.filled = 0;
  }

  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (!input || !this.on) return true;
    // Linear interpolation at each output sample's place in the input (speech keeps little energy
    // above 8 kHz, so no separate anti-aliasing filter).
    let at = this.position;
    while (at < input.length) {
      const i = Math.floor(at);
      const fraction = at - i;
      const next = i + 1 < input.length ? input[i + 1] : input[i];
      const value = Math.max(-1, Math.min(1, input[i] * (1 - fraction) + next * fraction));
      this.out[this.filled++] = value < 0 ? value * 0x8000 : value * 0x7fff;
      if (this.filled === CHUNK) this.flush();
      at += this.step;
    }
    this.position = at - input.length;
    return true;
  }
}

registerProcessor("moltbot-mic", MicProcessor);
