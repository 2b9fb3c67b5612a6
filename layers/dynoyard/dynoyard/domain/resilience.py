"""Retries, fallbacks and circuit breaking: the one policy for calling upstreams.

`Gateway.open_upstream` walks a request's route (the model, then the catalog fallbacks the
key may use) and asks this module, upstream by upstream, whether to try, retry, wait or move
on. Everything here happens before a response is handed back: once a stream's first byte
may have reached the client, nothing is retried.

What an attempt's outcome means (`verdict_for`):

- below 400: served.
- a timeout, a connect error, a reset, 429 or 5xx: transient. The same upstream is retried
  (`RETRIES` times at most) after a jittered exponential backoff, or after the upstream's own
  `retry-after` when that is at most `MAX_RETRY_AFTER_SECONDS`; a longer `retry-after`, or
  a wait that would not leave `MIN_ATTEMPT_SECONDS` before the request's deadline, moves on
  to the next model of the route at once.
- 401/403: the provider refused the gateway's own key. Not retried, not counted by the
  breaker; the route moves on.
- any other 4xx: the request's own fault, answered as it is (another provider would refuse
  it too). It shows the upstream is alive.

A circuit breaker per warm instance (in memory, nothing shared between instances) per
upstream: provider name and upstream model name, so one overloaded model does not take its
provider's other models down with it (a provider that is down altogether opens each of its
models' breakers in turn). Every failed attempt counts, retries included. After
`BREAKER_FAILURES` consecutive failures, the first no more than `BREAKER_WINDOW_SECONDS`
before the last, the breaker opens: for `BREAKER_OPEN_SECONDS` that upstream is skipped and
the route goes straight to its next model (with none left, the answer is 502
`upstream_error` saying the provider is temporarily skipped, with `retry-after`). Then it
is half-open: one request at a time may try it (without retries); an answer closes the
breaker, a failure opens it again for another `BREAKER_OPEN_SECONDS`. A stream that breaks
after its first byte does not count: it was already served. The clock, the wait and the
jitter are injectable for tests.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

import anyio

from dynoyard.domain import errors
from dynoyard.domain.errors import GatewayError

RETRIES = 2  # per upstream, after its first attempt
BACKOFF_BASE_SECONDS = 0.2  # before retry n: base * 2**(n-1), times a jitter of 0.5..1
BACKOFF_CAP_SECONDS = 2.0
MAX_RETRY_AFTER_SECONDS = 2.0  # an upstream's retry-after honoured; longer: move on
MIN_ATTEMPT_SECONDS = 0.25  # a retry must leave at least this much of the deadline
BREAKER_FAILURES = 5
BREAKER_WINDOW_SECONDS = 60.0
BREAKER_OPEN_SECONDS = 30.0

Clock = Callable[[], float]  # monotonic seconds
Sleep = Callable[[float], Awaitable[None]]
Jitter = Callable[[], float]  # uniform in [0, 1)


class Verdict(Enum):
    SERVED = "served"  # relay the answer
    TRANSIENT = "transient"  # retry the same upstream, then fall back
    REFUSED_KEY = "refused_key"  # fall back at once, not retried, not counted
    REQUEST_FAULT = "request_fault"  # answer it as it is: no retry, no fallback


def verdict_for(status: int | None) -> Verdict:
    """What an attempt's outcome means; `status` None: a timeout, a connect error or a
    reset (no answer at all)."""
    if status is None or status == 429 or status >= 500:
        return Verdict.TRANSIENT
    if status < 400:
        return Verdict.SERVED
    if status in (401, 403):
        return Verdict.REFUSED_KEY
    return Verdict.REQUEST_FAULT


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retries: int = RETRIES
    backoff_base: float = BACKOFF_BASE_SECONDS
    backoff_cap: float = BACKOFF_CAP_SECONDS
    max_retry_after: float = MAX_RETRY_AFTER_SECONDS
    min_attempt: float = MIN_ATTEMPT_SECONDS

    def delay(
        self, retry: int, retry_after: float | None, remaining: float, jitter: float
    ) -> float | None:
        """Seconds to wait before retry number `retry` (1: the first retry) of an upstream
        that failed transiently, or None when the route moves on instead: retries used up,
        a `retry-after` over `max_retry_after`, or no time left for the wait and an attempt
        before the deadline (`remaining` seconds away). `jitter` is uniform in [0, 1)."""
        if retry > self.retries:
            return None
        if retry_after is not None and retry_after > self.max_retry_after:
            return None
        backoff = min(self.backoff_cap, self.backoff_base * 2.0 ** (retry - 1))
        wait = max(backoff * (0.5 + jitter / 2), retry_after or 0.0)
        if wait + self.min_attempt > remaining:
            return None
        return wait


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """One upstream's breaker (see the module's docstring). `failures` 0: never opens."""

    def __init__(
        self,
        clock: Clock,
        failures: int = BREAKER_FAILURES,
        window: float = BREAKER_WINDOW_SECONDS,
        open_seconds: float = BREAKER_OPEN_SECONDS,
    ) -> None:
        self._clock = clock
        self._threshold = failures
        self._window = window
        self._open_seconds = open_seconds
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._first_failure = 0.0
        self._opened_at = 0.0
        self._trial_since: float | None = None  # half-open: when the trial went out

    @property
    def state(self) -> BreakerState:
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self._open_seconds
        ):
            return BreakerState.HALF_OPEN
        return self._state

    def allow(self) -> bool:
        """May an attempt go to this upstream now? Closed: yes. Open: no. Half-open: yes
        for one trial at a time, which this call takes (a trial that never reports is
        given up after `open_seconds`)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        now = self._clock()
        self._state = BreakerState.HALF_OPEN
        if self._trial_since is not None and now - self._trial_since < self._open_seconds:
            return False
        self._trial_since = now
        return True

    def succeeded(self) -> None:
        """The upstream answered (below 400, or the request's own 4xx). Closes a half-open
        breaker; a success that comes while it is open (from an attempt that went out
        before it opened) changes nothing."""
        if self._state is BreakerState.OPEN and self.state is BreakerState.OPEN:
            return
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._trial_since = None

    def failed(self) -> None:
        """A transient failure: counted; opens the breaker at the threshold, and at once
        when half-open."""
        if self._threshold <= 0:
            return
        now = self._clock()
        state = self.state
        if state is BreakerState.OPEN:
            return
        if state is BreakerState.HALF_OPEN:
            self._open(now)
            return
        if self._failures == 0 or now - self._first_failure > self._window:
            self._failures, self._first_failure = 0, now
        self._failures += 1
        if self._failures >= self._threshold:
            self._open(now)

    def released(self) -> None:
        """An attempt ended without saying anything about the upstream's health (a refused
        provider key, a cancelled request): a trial it held may go to another request."""
        if self._state is BreakerState.HALF_OPEN:
            self._trial_since = None

    def retry_in(self) -> float:
        """Seconds until an attempt may go through (0 when one may now)."""
        now = self._clock()
        if self._state is BreakerState.OPEN:
            return max(0.0, self._opened_at + self._open_seconds - now)
        if self._state is BreakerState.HALF_OPEN and self._trial_since is not None:
            return max(0.0, self._trial_since + self._open_seconds - now)
        return 0.0

    def _open(self, now: float) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = now
        self._failures = 0
        self._trial_since = None


class Resilience:
    """The retry policy and the breakers of one warm instance (in memory)."""

    def __init__(
        self,
        policy: RetryPolicy | None = None,
        *,
        breaker_failures: int = BREAKER_FAILURES,
        breaker_window: float = BREAKER_WINDOW_SECONDS,
        breaker_open_seconds: float = BREAKER_OPEN_SECONDS,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
        jitter: Jitter = random.random,
    ) -> None:
        self.policy = policy or RetryPolicy()
        self._breaker_failures = breaker_failures
        self._breaker_window = breaker_window
        self._breaker_open_seconds = breaker_open_seconds
        self.clock = clock
        self.sleep = sleep
        self.jitter = jitter
        # One per (provider, upstream model) of the catalog: bounded by its size.
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}

    def breaker(self, provider: str, upstream: str) -> CircuitBreaker:
        key = (provider, upstream)
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = CircuitBreaker(
                self.clock,
                self._breaker_failures,
                self._breaker_window,
                self._breaker_open_seconds,
            )
            self._breakers[key] = breaker
        return breaker

    def tries(self, provider: str, upstream: str) -> Tries:
        return Tries(self, provider, self.breaker(provider, upstream))


class Tries:
    """One request's attempts at one upstream: the breaker is asked before each, told the
    outcome of each, and the policy decides whether (and after what wait) to go again.
    `close()` when done, whatever happened."""

    def __init__(self, resilience: Resilience, provider: str, breaker: CircuitBreaker) -> None:
        self._resilience = resilience
        self._provider = provider
        self._breaker = breaker
        self._pending = False  # an attempt went out and its outcome is not reported yet
        self.made = 0

    def begin(self) -> bool:
        """True (and counted) when the next attempt may go out; False when the breaker
        refuses it."""
        if not self._breaker.allow():
            return False
        self.made += 1
        self._pending = True
        return True

    def answered(self) -> None:
        """The upstream answered: served, or refused the request itself."""
        self._pending = False
        self._breaker.succeeded()

    def refused_key(self) -> None:
        self._pending = False
        self._breaker.released()

    async def failed(self, retry_after: float | None, remaining: float) -> bool:
        """A transient failure; `retry_after`: what the upstream asked (seconds), if it did.
        True, after the wait, when the same upstream is to be tried again; False when the
        route moves on."""
        self._pending = False
        self._breaker.failed()
        if self._breaker.state is not BreakerState.CLOSED:
            return False  # opened now (or a trial failed): no retry against it
        wait = self._resilience.policy.delay(
            self.made, retry_after, remaining, self._resilience.jitter()
        )
        if wait is None:
            return False
        await self._resilience.sleep(wait)
        return True

    def skipped(self) -> GatewayError:
        """The answer when the route ends at this upstream without trying it."""
        seconds = max(1, math.ceil(self._breaker.retry_in()))
        error = errors.upstream_error(
            f"The upstream provider '{self._provider}' is temporarily skipped after repeated"
            f" failures. Retry in {seconds} s."
        )
        error.headers["retry-after"] = str(seconds)
        return error

    def close(self) -> None:
        if self._pending:
            self._pending = False
            self._breaker.released()
