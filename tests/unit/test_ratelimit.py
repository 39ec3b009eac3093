"""Token buckets per key, concurrency, failed-auth limits per client; client addresses; JSON depth."""

from __future__ import annotations

import json

import pytest

from moltbot.gateway.clients import client_address, parse_networks
from moltbot.gateway.limits import json_too_deep
from moltbot.gateway.ratelimit import Limits, RateLimiter


def limiter(rpm: int = 0, tpm: int = 0, concurrent: int = 0, failures: int = 0) -> RateLimiter:
    return RateLimiter(Limits(rpm, tpm, concurrent, failures))


def test_requests_per_minute_bucket_refills() -> None:
    limits = limiter(rpm=6)
    for i in range(6):
        decision = limits.admit("k", now=100.0)
        assert decision.allowed, i
        limits.release("k")
    refused = limits.admit("k", now=100.0)
    assert not refused.allowed and refused.retry_after_s == pytest.approx(10.0)  # one request per 10 s
    assert "6 requests per minute" in refused.reason
    assert dict(refused.headers)[b"x-ratelimit-remaining-requests"] == b"0"
    assert limits.admit("k", now=110.0).allowed
    assert limits.admit("other", now=100.0).allowed  # per key


def test_headers_on_admission() -> None:
    decision = limiter(rpm=60, tpm=1000).admit("k", now=0.0)
    headers = dict(decision.headers)
    assert headers[b"x-ratelimit-limit-requests"] == b"60"
    assert headers[b"x-ratelimit-remaining-requests"] == b"59"
    assert headers[b"x-ratelimit-reset-requests"] == b"1s"
    assert headers[b"x-ratelimit-limit-tokens"] == b"1000"


def test_tokens_per_minute_are_charged_after_the_reply() -> None:
    limits = limiter(tpm=600)
    assert limits.admit("k", now=0.0).allowed
    limits.charge("k", 900, now=0.0)  # one big reply may overdraw
    limits.release("k")
    refused = limits.admit("k", now=1.0)
    assert not refused.allowed
    assert refused.retry_after_s == pytest.approx(29.0)  # 290 tokens short at 10 tokens/s
    assert limits.admit("k", now=31.0).allowed


def test_concurrent_requests() -> None:
    limits = limiter(concurrent=2)
    assert limits.admit("k").allowed and limits.admit("k").allowed
    assert not limits.admit("k").allowed
    limits.release("k")
    assert limits.admit("k").allowed


def test_failed_authentications_block_the_client_for_a_while() -> None:
    limits = limiter(failures=3)
    for _ in range(3):
        assert limits.auth_blocked("1.2.3.4", now=0.0) == 0
        limits.auth_failed("1.2.3.4", now=0.0)
    assert limits.auth_blocked("1.2.3.4", now=0.0) == pytest.approx(20.0)
    assert limits.auth_blocked("5.6.7.8", now=0.0) == 0
    assert limits.auth_blocked("1.2.3.4", now=20.0) == 0


def test_failed_authentication_memory_is_bounded() -> None:
    limits = limiter(failures=1)
    for i in range(25_000):
        limits.auth_failed(f"2001:db8::{i:x}", now=0.0)
    assert len(limits._failures) <= 10_000


def scope(peer: str, forwarded: str | None = None) -> dict[str, object]:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded is not None else []
    return {"client": (peer, 5555), "headers": headers}


def test_forwarded_for_is_ignored_from_an_untrusted_peer() -> None:
    assert client_address(scope("10.0.0.5", "203.0.113.9"), []) == "10.0.0.5"
    assert client_address(scope("10.0.0.5", "203.0.113.9"), parse_networks(["192.168.0.0/16"])) == "10.0.0.5"


def test_forwarded_for_from_a_trusted_proxy_takes_the_rightmost_untrusted_hop() -> None:
    trusted = parse_networks(["10.0.0.0/8"])
    # The client wrote a fake first hop; the proxies appended the real one.
    assert client_address(scope("10.0.0.5", "1.1.1.1, 203.0.113.9, 10.0.0.7"), trusted) == "203.0.113.9"
    assert client_address(scope("10.0.0.5", "garbage"), trusted) == "10.0.0.5"
    assert client_address(scope("10.0.0.5"), trusted) == "10.0.0.5"
    with pytest.raises(ValueError, match="not an IP"):
        parse_networks(["not-a-net"])


def test_json_depth() -> None:
    assert not json_too_deep(json.dumps({"messages": [{"content": [{"type": "text"}]}]}).encode(), 5)
    assert json_too_deep(json.dumps({"a": {"b": {"c": {"d": {"e": 1}}}}}).encode(), 4)
    assert not json_too_deep(b'{"text": "[[[[[[[[[[[[[[[[[[[["}', 4)  # brackets in strings do not count
    assert json_too_deep(b"[" * 100_000 + b"]" * 100_000, 64)  # past the parser's recursion limit
    assert not json_too_deep(b"[" * 100 + b"not json", 64)  # not JSON: the route says so
