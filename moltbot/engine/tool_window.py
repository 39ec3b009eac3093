"""Where in a sequence's output a tool call's JSON is being written (the span a lazy grammar constrains).

Outside a call the output is free; once `trigger` (Qwen's `<tool_call>`) appears, the JSON value that
follows is written under the tools' grammar; when that value is complete the output is free again (the
model closes the tag, opens another call, or ends). The JSON value is followed by its brackets and
strings, so no grammar state is needed to know where it ends.
"""

from __future__ import annotations

import enum


class WindowChange(enum.Enum):
    OPENED = "opened"
    CLOSED = "closed"


class ToolWindow:
    """Feed the output text as it is produced; told when a call's JSON starts and ends."""

    def __init__(self, trigger: str, *, active: bool = False) -> None:
        self._trigger = trigger
        self.active = active
        self._tail = ""
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def feed(self, text: str) -> WindowChange | None:
        """The change this text makes (the last one, if it both closes and opens a call)."""
        change: WindowChange | None = None
        while text:
            if self.active:
                text = self._scan_json(text)
                if not self.active:
                    change = WindowChange.CLOSED
            else:
                self._tail += text
                text = ""
                at = self._tail.find(self._trigger) if self._trigger else -1
                if at < 0:
                    self._tail = self._tail[-len(self._trigger) :] if self._trigger else ""
                    continue
                text = self._tail[at + len(self._trigger) :]
                self._tail = ""
                self.active, self._depth, self._in_string, self._escaped = True, 0, False, False
                change = WindowChange.OPENED
        return change

    def _scan_json(self, text: str) -> str:
        """Follow `text` through the JSON value; the text after the value's end (returned) is free."""
        for index, char in enumerate(text):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth <= 0:
                    self.active = False
                    return text[index + 1 :]
        return ""
