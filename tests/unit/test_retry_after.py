"""How the client reads Retry-After (RFC 9110: seconds or an HTTP date) and decides to
wait for it, within its policy's bounds. Pure functions of a response."""

from __future__ import annotations

import time
from email.utils import formatdate

import httpx

from counterweight_client import RetryPolicy
from counterweight_client._core import retry_after


def answer(status: int, retry: str | None = None) -> httpx.Response:
    return httpx.Response(status, headers={"Retry-After": retry} if retry is not None else {})


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after(answer(503, "7")) == 7.0
    in_a_minute = formatdate(time.time() + 60, usegmt=True)
    assert 55 <= (retry_after(answer(503, in_a_minute)) or 0) <= 61
    assert retry_after(answer(503, formatdate(time.time() - 60, usegmt=True))) == 0.0
    for unusable in (None, "", "soon", "-3", "1.5"):
        assert retry_after(answer(503, unusable)) is None


def test_the_policy_waits_what_the_server_says_within_its_total_wait() -> None:
    policy = RetryPolicy(backoff=0.01, max_wait=10)
    told = policy.wait_for(answer(503, "4"), attempt=1, waited=0)
    assert told is not None and 4 <= told <= 4.4  # plus at most 10% jitter
    assert policy.wait_for(answer(503, "4"), attempt=3, waited=6.5) is None  # past max_wait
    backoff = policy.wait_for(answer(503), attempt=1, waited=0)  # no Retry-After: backoff
    assert backoff is not None and backoff < 0.02
    assert policy.wait_for(answer(429), attempt=1, waited=0) is None  # a 429 says when
    assert policy.wait_for(answer(429, "2"), attempt=1, waited=0) is not None
