"""Limits per client IP, before authentication: the privacy policy's "IP address for rate
limiting and fraud prevention".

- Failed key attempts: counted in DynamoDB (one write per failure, none for a valid key),
  so the limit holds across every instance. Past it, the IP is refused with 429 until the
  minute ends: at once by the instance that saw the failure, and by any other instance at
  its first failure from that IP.
- Requests: counted in memory per warm instance (a write per request for every customer
  would cost every request a round trip); the bound across N instances is N times the
  limit. Per-key and per-organization limits, which live in DynamoDB, bound the traffic of
  authenticated clients exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from dynoyard.domain.ports import LimitState, RateLimited

MAX_TRACKED_IPS = 10_000  # the in-memory tables are cleared past this


class FailureCounter(Protocol):
    async def count_failure(self, ip: str, now: float) -> int:
        """Counts one failed key attempt from `ip` in the current minute; the count so far."""


class IpGuard:
    def __init__(
        self,
        counter: FailureCounter,
        requests_per_minute: int,
        failures_per_minute: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._counter = counter
        self._requests_per_minute = requests_per_minute
        self._failures_per_minute = failures_per_minute
        self._clock = clock
        self._requests: dict[str, tuple[int, int]] = {}  # ip -> (minute, count)
        self._blocked: dict[str, int] = {}  # ip -> the minute it is blocked in

    def admit(self, ip: str) -> None:
        """Counts a request from `ip`; RateLimited if the IP is over either limit."""
        if not ip:
            return
        now = self._clock()
        minute = int(now // 60)
        if self._blocked.get(ip) == minute:
            raise _refused(self._failures_per_minute, now, "failed API key attempts")
        seen_minute, count = self._requests.get(ip, (minute, 0))
        count = count + 1 if seen_minute == minute else 1
        if len(self._requests) >= MAX_TRACKED_IPS:
            self._requests.clear()
        self._requests[ip] = (minute, count)
        if count > self._requests_per_minute:
            raise _refused(self._requests_per_minute, now, "requests")

    async def failed(self, ip: str) -> None:
        """Counts a failed key attempt; RateLimited once the IP is past the limit."""
        if not ip:
            return
        now = self._clock()
        if await self._counter.count_failure(ip, now) > self._failures_per_minute:
            if len(self._blocked) >= MAX_TRACKED_IPS:
                self._blocked.clear()
            self._blocked[ip] = int(now // 60)
            raise _refused(self._failures_per_minute, now, "failed API key attempts")


def _refused(limit: int, now: float, what: str) -> RateLimited:
    reset = 60 - int(now % 60)
    return RateLimited(
        reset,
        LimitState("requests", limit, 0, reset),
        f"Too many {what} from your IP address (at most {limit} per minute).",
    )
