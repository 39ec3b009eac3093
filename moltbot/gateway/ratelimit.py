"""Per-key rate limits (requests/minute and tokens/minute token buckets, concurrent requests) and a
per-client limit on failed authentications. In memory, for one process.

A bucket holds up to a minute's allowance and refills continuously. Requests take one request token at
admission; generated and prompt tokens are charged when the reply is done (the tokens bucket may go
negative: the key then waits until it is refilled). Time comes from the monotonic clock.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field

_MAX_CLIENTS = 10_000  # failed-auth buckets kept; least recently used dropped past that


@dataclass(slots=True)
class Bucket:
    per_minute: float
    level: float = field(init=False)
    updated: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.level = self.per_minute

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.level = min(self.per_minute, self.level + elapsed * self.per_minute / 60.0)
        self.updated = max(now, self.updated)

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` can be taken (0 when it can now)."""
        missing = amount - self.level
        return 0.0 if missing <= 0 else missing * 60.0 / self.per_minute

    def reset_after(self) -> float:
        """Seconds until the bucket is full again."""
        return (self.per_minute - self.level) * 60.0 / self.per_minute


@dataclass(slots=True, frozen=True)
class Limits:
    requests_per_minute: int  # 0: no limit
    tokens_per_minute: int  # 0: no limit
    concurrent: int  # 0: no limit
    auth_failures_per_minute: int  # per client address; 0: no limit


@dataclass(slots=True, frozen=True)
class Decision:
    allowed: bool
    retry_after_s: float = 0.0
    reason: str = ""
    headers: tuple[tuple[bytes, bytes], ...] = ()


def _duration(seconds: float) -> str:
    """OpenAI's reset format: `1s`, `6m0s`, `120ms`."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)}m{secs:.0f}s" if minutes else f"{secs:.0f}s"


@dataclass(slots=True)
class _KeyState:
    requests: Bucket | None
    tokens: Bucket | None
    in_flight: int = 0


class RateLimiter:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._keys: dict[str, _KeyState] = {}
        self._failures: OrderedDict[str, Bucket] = OrderedDict()

    def _state(self, key_id: str, now: float) -> _KeyState:
        state = self._keys.get(key_id)
        if state is None:
            limits = self.limits
            state = _KeyState(
                Bucket(limits.requests_per_minute, updated=now) if limits.requests_per_minute else None,
                Bucket(limits.tokens_per_minute, updated=now) if limits.tokens_per_minute else None,
            )
            self._keys[key_id] = state
        return state

    def admit(self, key_id: str, now: float | None = None) -> Decision:
        """Take one request for this key, or say how long to wait."""
        now = time.monotonic() if now is None else now
        state = self._state(key_id, now)
        limits = self.limits
        if limits.concurrent and state.in_flight >= limits.concurrent:
            return Decision(False, 1.0, f"more than {limits.concurrent} concurrent requests for this key")
        waits: list[tuple[float, str]] = []
        if state.requests is not None:
            state.requests.refill(now)
            waits.append((state.requests.wait_for(1), f"{limits.requests_per_minute} requests per minute"))
        if state.tokens is not None:
            state.tokens.refill(now)
            waits.append((state.tokens.wait_for(0), f"{limits.tokens_per_minute} tokens per minute"))
        longest = max(waits, default=(0.0, ""))
        if longest[0] > 0:
            return Decision(False, longest[0], f"rate limit of {longest[1]} reached", self._headers(state))
        if state.requests is not None:
            state.requests.level -= 1
        state.in_flight += 1
        return Decision(True, headers=self._headers(state))

    def release(self, key_id: str) -> None:
        state = self._keys.get(key_id)
        if state is not None and state.in_flight > 0:
            state.in_flight -= 1

    def charge(self, key_id: str, tokens: int, now: float | None = None) -> None:
        state = self._keys.get(key_id)
        if state is not None and state.tokens is not None and tokens > 0:
            state.tokens.refill(time.monotonic() if now is None else now)
            state.tokens.level -= tokens

    def auth_blocked(self, client: str, now: float | None = None) -> float:
        """Seconds this client must wait before trying a key again (0: it may)."""
        if not self.limits.auth_failures_per_minute:
            return 0.0
        bucket = self._failures.get(client)
        if bucket is None:
            return 0.0
        bucket.refill(time.monotonic() if now is None else now)
        return bucket.wait_for(1)

    def auth_failed(self, client: str, now: float | None = None) -> None:
        if not self.limits.auth_failures_per_minute:
            return
        now = time.monotonic() if now is None else now
        bucket = self._failures.pop(client, None) or Bucket(self.limits.auth_failures_per_minute, updated=now)
        bucket.refill(now)
        bucket.level -= 1
        self._failures[client] = bucket
        while len(self._failures) > _MAX_CLIENTS:
            self._failures.popitem(last=False)

    def _headers(self, state: _KeyState) -> tuple[tuple[bytes, bytes], ...]:
        headers: list[tuple[bytes, bytes]] = []
        for kind, bucket in (("requests", state.requests), ("tokens", state.tokens)):
            if bucket is None:
                continue
            headers += [
                (f"x-ratelimit-limit-{kind}".encode(), str(int(bucket.per_minute)).encode()),
                (f"x-ratelimit-remaining-{kind}".encode(), str(max(0, math.floor(bucket.level))).encode()),
                (f"x-ratelimit-reset-{kind}".encode(), _duration(bucket.reset_after()).encode()),
            ]
        return tuple(headers)
