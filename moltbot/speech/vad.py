"""Voice activity detection as audio arrives: Silero VAD v6 (the ONNX model faster-whisper ships, MIT)
run on each 32 ms window of 16 kHz audio, its recurrent state carried from window to window.

A turn starts after `start_ms` of windows above `threshold` and ends after `silence_ms` below
`threshold - 0.15` (hysteresis, as Silero's own streaming iterator does), so a breath inside a sentence
does not end it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

WINDOW: Final = 512  # samples at 16 kHz: 32 ms
CONTEXT: Final = 64
RATE: Final = 16_000


@dataclass(slots=True)
class VadEvent:
    kind: str  # "speech_started" or "speech_stopped"
    sample: int  # where in the stream (samples since the start) it happened


def _session() -> Any:
    import onnxruntime
    from faster_whisper.utils import get_assets_path

    options = onnxruntime.SessionOptions()
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = 1
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 4
    path = os.path.join(get_assets_path(), "silero_vad_v6.onnx")
    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"], sess_options=options)


class StreamingVad:
    def __init__(self, threshold: float = 0.5, silence_ms: int = 500, start_ms: int = 64) -> None:
        self.session = _session()
        self.threshold = threshold
        self.silence_windows = max(1, round(silence_ms / 32))
        self.start_windows = max(1, round(start_ms / 32))
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self.position = 0  # samples fed so far (whole windows)
        self.speaking = False
        self._above = 0
        self._below = 0

    @property
    def quiet_ms(self) -> int:
        """How long a turn in progress has been quiet (0 while speech goes on, or outside a turn)."""
        return self._below * 32 if self.speaking else 0

    def probability(self, window: np.ndarray) -> float:
        batch = np.concatenate([self._context, window]).reshape(1, CONTEXT + WINDOW)
        output, self._h, self._c = self.session.run(None, {"input": batch, "h": self._h, "c": self._c})
        self._context = window[-CONTEXT:]
        return float(np.asarray(output).reshape(-1)[0])

    def feed(self, samples: np.ndarray) -> list[VadEvent]:
        """Take 16 kHz float32 samples; the turn events they cause."""
        events: list[VadEvent] = []
        self._pending = np.concatenate([self._pending, samples.astype(np.float32)])
        while len(self._pending) >= WINDOW:
            window, self._pending = self._pending[:WINDOW], self._pending[WINDOW:]
            chance = self.probability(window)
            self.position += WINDOW
            if not self.speaking:
                self._above = self._above + 1 if chance >= self.threshold else 0
                if self._above >= self.start_windows:
                    self.speaking, self._below = True, 0
                    events.append(VadEvent("speech_started", self.position - self._above * WINDOW))
            else:
                self._below = self._below + 1 if chance < self.threshold - 0.15 else 0
                if self._below >= self.silence_windows:
                    self.speaking, self._above = False, 0
                    events.append(VadEvent("speech_stopped", self.position - self._below * WINDOW))
        return events

    def reset(self) -> None:
        self._h[:] = 0
        self._c[:] = 0
        self._context[:] = 0
        self._pending = np.zeros(0, dtype=np.float32)
        self.speaking = False
        self._above = self._below = 0
