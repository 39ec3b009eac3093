"""Stop-string matching over streamed text, holding back what might begin a stop string."""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Feed text pieces; get back what is safe to emit, and whether a stop string was hit."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False
        self.matched = ""  # the stop string that was hit

    def feed(self, text: str) -> str:
        """Return the text that can be emitted now; sets `stopped` when a stop string appears."""
        if self.stopped:
            return ""
        buffer = self._held + text
        cut = self._first_stop(buffer)
        if cut is not None:
            self.stopped = True
            self.matched = next(s for s in self._stops if buffer.find(s) == cut)
            self._held = ""
            return buffer[:cut]
        keep = self._partial_suffix(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """Release held-back text at the end of generation."""
        held, self._held = self._held, ""
        return held

    def _first_stop(self, buffer: str) -> int | None:
        positions = [i for i in (buffer.find(s) for s in self._stops) if i >= 0]
        return min(positions) if positions else None

    def _partial_suffix(self, buffer: str) -> int:
        """Length of the longest suffix of `buffer` that is a proper prefix of a stop string."""
        best = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(buffer)), best, -1):
                if buffer.endswith(stop[:size]):
                    best = size
                    break
        return best
