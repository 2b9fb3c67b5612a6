"""The retry policy and the circuit breaker on a fake clock (domain/resilience.py), and how
the upstream adapter reads an upstream's retry-after."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from dynoyard.adapters.upstream import retry_after_of
from dynoyard.domain.resilience import (
    BreakerState,
    CircuitBreaker,
    Resilience,
    RetryPolicy,
    Verdict,
    verdict_for,
)


class FakeClock:
    """Monotonic seconds that move only when told to (or when a fake sleep waits)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def breaker(clock: FakeClock, failures: int = 5) -> CircuitBreaker:
    return CircuitBreaker(clock, failures=failures, window=60.0, open_seconds=30.0)


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.failed()


# -- what an outcome means --------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.SERVED),
        (None, Verdict.TRANSIENT),  # timeout, connect error, reset
        (429, Verdict.TRANSIENT),
        (500, Verdict.TRANSIENT),
        (503, Verdict.TRANSIENT),
        (401, Verdict.REFUSED_KEY),
        (403, Verdict.REFUSED_KEY),
        (400, Verdict.REQUEST_FAULT),
        (404, Verdict.REQUEST_FAULT),
        (422, Verdict.REQUEST_FAULT),
    ],
)
def test_given_an_upstream_outcome_when_judged_then_only_transient_failures_are_retried(
    status, verdict
):
    assert verdict_for(status) is verdict


# -- the retry policy -------------------------------------------------------------------


def test_given_retries_left_when_delayed_then_the_backoff_doubles_within_its_jitter():
    policy = RetryPolicy(retries=2, backoff_base=0.2)
    assert policy.delay(1, None, 25.0, jitter=0.0) == pytest.approx(0.1)
    assert policy.delay(1, None, 25.0, jitter=0.999) == pytest.approx(0.2, abs=1e-3)
    assert policy.delay(2, None, 25.0, jitter=0.0) == pytest.approx(0.2)
    assert policy.delay(2, None, 25.0, jitter=0.999) == pytest.approx(0.4, abs=1e-3)


def test_given_retries_used_up_when_delayed_then_the_route_moves_on():
    policy = RetryPolicy(retries=2)
    assert policy.delay(3, None, 25.0, jitter=0.5) is None
    assert RetryPolicy(retries=0).delay(1, None, 25.0, jitter=0.5) is None


def test_given_a_big_base_when_delayed_then_the_backoff_is_capped():
    policy = RetryPolicy(retries=5, backoff_base=1.0, backoff_cap=2.0)
    assert policy.delay(5, None, 25.0, jitter=0.999) == pytest.approx(2.0, abs=1e-2)


def test_given_a_short_retry_after_when_delayed_then_it_is_waited_for():
    policy = RetryPolicy()
    assert policy.delay(1, 1.5, 25.0, jitter=0.5) == 1.5
    # Never shorter than the backoff: a retry-after of 0 still backs off.
    assert policy.delay(1, 0.0, 25.0, jitter=0.0) == pytest.approx(0.1)


def test_given_a_long_retry_after_when_delayed_then_there_is_no_wait_but_a_fallback():
    assert RetryPolicy(max_retry_after=2.0).delay(1, 2.01, 25.0, jitter=0.5) is None
    assert RetryPolicy(max_retry_after=2.0).delay(1, 30.0, 25.0, jitter=0.5) is None


def test_given_a_deadline_close_when_delayed_then_no_wait_runs_past_it():
    policy = RetryPolicy(backoff_base=0.2, min_attempt=0.25)
    assert policy.delay(1, None, 0.36, jitter=0.0) == pytest.approx(0.1)  # 0.1 + 0.25 fits
    assert policy.delay(1, None, 0.34, jitter=0.0) is None  # no time for an attempt after it
    assert policy.delay(1, 1.5, 1.6, jitter=0.0) is None  # the retry-after reaches past it


# -- the circuit breaker ----------------------------------------------------------------


def test_given_five_consecutive_failures_when_counted_then_the_breaker_opens():
    clock = FakeClock()
    subject = breaker(clock)
    fail(subject, 4)
    assert subject.state is BreakerState.CLOSED and subject.allow()
    subject.failed()
    assert subject.state is BreakerState.OPEN
    assert not subject.allow()
    assert subject.retry_in() == 30.0


def test_given_a_success_between_failures_when_counted_then_the_breaker_stays_closed():
    clock = FakeClock()
    subject = breaker(clock)
    fail(subject, 4)
    subject.succeeded()
    fail(subject, 4)
    assert subject.state is BreakerState.CLOSED


def test_given_failures_spread_wider_than_the_window_when_counted_then_the_count_restarts():
    clock = FakeClock()
    subject = breaker(clock)
    fail(subject, 4)
    clock.advance(61)
    subject.failed()  # the first of a new run: the four before are too old
    fail(subject, 3)
    assert subject.state is BreakerState.CLOSED
    subject.failed()
    assert subject.state is BreakerState.OPEN


def test_given_an_open_breaker_when_its_open_time_passes_then_one_trial_may_close_it():
    clock = FakeClock()
    subject = breaker(clock)
    fail(subject, 5)
    clock.advance(29.9)
    assert not subject.allow()
    clock.advance(0.1)
    assert subject.state is BreakerState.HALF_OPEN
    assert subject.allow()  # the trial
    assert not subject.allow()  # one at a time
    subject.succeeded()
    assert subject.state is BreakerState.CLOSED
    assert subject.allow() and subject.allow()


def test_given_a_half_open_breaker_when_its_trial_fails_then_it_opens_for_another_period():
    clock = FakeClock()
    subject = breaker(clock)
    fail(subject, 5)
    clock.advance(30)
    assert subject.allow()
    subject.failed()
    assert subject.state is BreakerState.OPEN and not subject.allow()
    clock.advance(29)
    assert not subject.allow()
    clock.advance(1)
    assert subject.allow()


def test_given_a_trial_that_says_nothing_when_released_then_another_request_may_try():
    clock = FakeClock()
    subject = breaker(clock)
    fail(subject, 5)
    clock.advance(30)
    assert subject.allow()
    subject.released()  # e.g. the provider refused the gateway's key, or a cancellation
    assert subject.state is BreakerState.HALF_OPEN
    assert subject.allow()


def test_given_a_trial_that_never_reports_when_the_open_time_passes_again_then_it_is_given_up():
    clock = FakeClock()
    subject = breaker(clock)
    fail(subject, 5)
    clock.advance(30)
    assert subject.allow()
    clock.advance(29)
    assert not subject.allow()
    clock.advance(1)
    assert subject.allow()


def test_given_an_open_breaker_when_a_late_success_arrives_then_it_stays_open():
    clock = FakeClock()
    subject = breaker(clock)
    fail(subject, 5)
    subject.succeeded()  # an attempt that went out before the breaker opened
    assert subject.state is BreakerState.OPEN


def test_given_a_threshold_of_zero_when_failing_forever_then_the_breaker_never_opens():
    subject = breaker(FakeClock(), failures=0)
    fail(subject, 100)
    assert subject.state is BreakerState.CLOSED and subject.allow()


def test_given_two_upstreams_when_one_fails_then_only_its_breaker_opens():
    clock = FakeClock()
    resilience = Resilience(clock=clock, sleep=clock.sleep, breaker_open_seconds=30)
    fail(resilience.breaker("p", "model-a"), 5)
    assert resilience.breaker("p", "model-a").state is BreakerState.OPEN
    assert resilience.breaker("p", "model-b").state is BreakerState.CLOSED
    assert resilience.breaker("q", "model-a").state is BreakerState.CLOSED


# -- one request's tries at one upstream --------------------------------------------------


def resilience_on(
    clock: FakeClock, breaker_failures: int = 5, breaker_open_seconds: float = 30.0
) -> Resilience:
    return Resilience(
        clock=clock,
        sleep=clock.sleep,
        jitter=lambda: 0.0,
        breaker_failures=breaker_failures,
        breaker_open_seconds=breaker_open_seconds,
    )


def test_given_a_failing_upstream_when_tried_then_it_is_retried_twice_with_growing_waits():
    clock = FakeClock()
    tries = resilience_on(clock).tries("p", "m")

    async def scenario() -> list[bool]:
        outcomes = []
        while tries.begin():
            again = await tries.failed(None, remaining=25.0)
            outcomes.append(again)
            if not again:
                break
        return outcomes

    assert asyncio.run(scenario()) == [True, True, False]
    assert tries.made == 3
    assert clock.slept == [pytest.approx(0.1), pytest.approx(0.2)]


def test_given_a_429_with_a_short_retry_after_when_tried_then_that_long_is_waited():
    clock = FakeClock()
    tries = resilience_on(clock).tries("p", "m")

    async def scenario() -> bool:
        assert tries.begin()
        return await tries.failed(1.0, remaining=25.0)

    assert asyncio.run(scenario()) is True
    assert clock.slept == [1.0]


def test_given_a_429_with_a_long_retry_after_when_tried_then_nothing_is_waited():
    clock = FakeClock()
    tries = resilience_on(clock).tries("p", "m")

    async def scenario() -> bool:
        assert tries.begin()
        return await tries.failed(30.0, remaining=25.0)

    assert asyncio.run(scenario()) is False
    assert clock.slept == []


def test_given_the_breaker_opens_during_the_retries_when_tried_then_they_stop():
    clock = FakeClock()
    resilience = resilience_on(clock, breaker_failures=2)
    tries = resilience.tries("p", "m")

    async def scenario() -> list[bool]:
        assert tries.begin()
        first = await tries.failed(None, 25.0)
        assert tries.begin()
        return [first, await tries.failed(None, 25.0)]

    assert asyncio.run(scenario()) == [True, False]
    assert resilience.breaker("p", "m").state is BreakerState.OPEN
    assert not resilience.tries("p", "m").begin()


def test_given_an_open_breaker_when_the_route_ends_there_then_the_answer_is_502_with_retry_after():
    clock = FakeClock()
    resilience = resilience_on(clock, breaker_open_seconds=30)
    fail(resilience.breaker("acme", "m"), 5)
    clock.advance(12.5)
    tries = resilience.tries("acme", "m")
    assert not tries.begin() and tries.made == 0
    error = tries.skipped()
    assert (error.status, error.code, error.type) == (502, "upstream_error", "api_error")
    assert "'acme'" in error.message and "temporarily skipped" in error.message
    assert error.headers["retry-after"] == "18"


def test_given_a_trial_whose_request_ends_without_an_outcome_when_closed_then_it_is_released():
    clock = FakeClock()
    resilience = resilience_on(clock)
    fail(resilience.breaker("p", "m"), 5)
    clock.advance(30)
    tries = resilience.tries("p", "m")
    assert tries.begin()  # the trial
    assert not resilience.tries("p", "m").begin()
    tries.close()  # e.g. the request was cancelled mid-attempt
    assert resilience.tries("p", "m").begin()


# -- retry-after as upstreams send it -----------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({}, None),
        ({"retry-after": "1"}, 1.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after": "30"}, 30.0),
        ({"retry-after-ms": "250", "retry-after": "1"}, 0.25),  # OpenAI sends both
        ({"retry-after": "Thu, 26 Nov 2026 12:00:05 GMT"}, 5.0),
        ({"retry-after": "Thu, 26 Nov 2026 11:59:00 GMT"}, 0.0),  # already past
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-3"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after-ms": "x", "retry-after": "2"}, 2.0),
    ],
)
def test_given_an_upstream_retry_after_header_when_read_then_it_is_seconds_or_none(
    headers, seconds
):
    now = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
    assert retry_after_of(headers, now=now) == seconds
