"""Retries, fallbacks and circuit breaking through a running gateway with the production
policy (2 retries, breaker after 5 failures), faults injected by the fake provider: bursts
of 5xx, 429 with a short or a long retry-after, a slow first byte, resets, a stall and
garbage mid-stream, an upstream that stays down and one that recovers. Each request carries
`user=<marker>`, so the fake tells exactly which upstream calls it caused, and when.

The breakers live in the gateway process, one per (provider, upstream model), and tests
share that process: each test uses upstream names no other test here can open."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayProcess, running_gateway
from tests.fakes.upstream import GARBAGE_EVENTS

CREDITS = Decimal("10")
OPEN_SECONDS = 1.5  # the breaker's open time in these gateways (30 s by default)
READ_TIMEOUT = 0.5
DEADLINE = 1.2


@pytest.fixture(scope="module")
def resilient(tables, catalog_path, tmp_path_factory) -> Iterator[GatewayProcess]:
    """A gateway with the default retries and breaker threshold, a short breaker open time
    and a short read timeout."""
    overrides: dict[str, str | None] = {
        "DYNOYARD_UPSTREAM_RETRIES": None,  # unset: the defaults
        "DYNOYARD_BREAKER_FAILURES": None,
        "DYNOYARD_BREAKER_OPEN_SECONDS": str(OPEN_SECONDS),
        "DYNOYARD_UPSTREAM_READ_TIMEOUT": str(READ_TIMEOUT),
    }
    log_dir = tmp_path_factory.mktemp("resilient")
    with running_gateway(tables, catalog_path, log_dir, overrides) as process:
        yield process


def new_marker() -> str:
    return f"marker-{uuid.uuid4().hex}"


def calls(fake_provider, marker: str) -> list[dict[str, Any]]:
    provider, _ = fake_provider
    return provider.requests_for(marker)


def upstreams_called(fake_provider, marker: str) -> list[str]:
    return [r["payload"]["model"] for r in calls(fake_provider, marker)]


def gaps(fake_provider, marker: str) -> list[float]:
    """Seconds between the fake's consecutive requests for `marker`."""
    times = [r["at"] for r in calls(fake_provider, marker)]
    return [later - earlier for earlier, later in itertools.pairwise(times)]


def chat(
    gateway: GatewayProcess, key: str, model: str, marker: str, stream: bool = False
) -> httpx.Response:
    """One chat request, its body read to the end (a stream too)."""
    payload: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "resilience please"}],
        "user": marker,
    }
    if stream:
        payload |= {"stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream(
        "POST",
        gateway.base_url + "/v1/chat/completions",
        json=payload,
        headers={"authorization": f"Bearer {key}"},
        timeout=20,
    ) as response:
        response.read()
    return response


def record_of(tables, response: httpx.Response) -> dict[str, Any]:
    return tables.usage_item(response.headers["x-request-id"])


def attempts(record: dict[str, Any]) -> int:
    return int(record["attempts"]["N"])


def assert_answered(response: httpx.Response, stream: bool) -> None:
    assert response.status_code == 200, response.text
    if stream:
        assert response.text.rstrip().endswith("data: [DONE]")
        assert '"error"' not in response.text
    else:
        assert "COMPLETION-CANARY-" in response.json()["choices"][0]["message"]["content"]


def assert_charged_once(account, record: dict[str, Any]) -> None:
    cost = Decimal(record["cost_usd"]["N"])
    assert cost > 0 and account.balance() == CREDITS - cost


# -- retried, then served by the same upstream --------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "stream"])
def test_given_a_burst_of_5xx_when_called_then_the_same_upstream_is_retried_with_backoff_and_serves(
    resilient, make_account, tables, fake_provider, stream
):
    account = make_account(str(CREDITS))
    marker = new_marker()
    response = chat(resilient, account.key, "test-flaky-500", marker, stream)
    assert_answered(response, stream)
    assert response.headers["x-dynoyard-provider"] == "fake"
    assert upstreams_called(fake_provider, marker) == ["flaky-500-2"] * 3
    first, second = gaps(fake_provider, marker)
    assert first >= 0.1 and second >= 0.2  # 0.2 s doubled, each with a jitter of 0.5..1
    record = record_of(tables, response)
    assert record["status"]["N"] == "200" and attempts(record) == 3
    assert record["model"]["S"] == "test-flaky-500" and record["provider"]["S"] == "fake"
    assert_charged_once(account, record)


def test_given_a_429_with_a_short_retry_after_when_called_then_it_is_waited_for_and_retried(
    resilient, make_account, tables, fake_provider
):
    account = make_account(str(CREDITS))
    marker = new_marker()
    response = chat(resilient, account.key, "test-flaky-429", marker)
    assert_answered(response, stream=False)
    assert upstreams_called(fake_provider, marker) == ["flaky-429-1"] * 2
    [gap] = gaps(fake_provider, marker)
    assert gap >= 1.0  # the fake's retry-after, longer than any backoff of a first retry
    assert attempts(record_of(tables, response)) == 2


def test_given_a_slow_first_byte_when_called_then_the_read_timeout_is_retried_and_served(
    resilient, make_account, tables, fake_provider
):
    account = make_account(str(CREDITS))
    marker = new_marker()
    began = time.monotonic()
    response = chat(resilient, account.key, "test-flaky-slow", marker)
    assert_answered(response, stream=False)
    assert time.monotonic() - began < 3  # the first attempt gave up after the read timeout
    assert upstreams_called(fake_provider, marker) == ["flaky-slow-1"] * 2
    assert attempts(record_of(tables, response)) == 2


# -- moving on along the route ---------------------------------------------------------------


def test_given_a_429_with_a_long_retry_after_when_called_then_the_fallback_answers_without_waiting(
    resilient, make_account, tables, fake_provider
):
    account = make_account(str(CREDITS))
    marker = new_marker()
    began = time.monotonic()
    response = chat(resilient, account.key, "test-429-long", marker)
    assert_answered(response, stream=False)
    assert time.monotonic() - began < 1.0
    assert upstreams_called(fake_provider, marker) == ["fail-429-long", "ok"]
    record = record_of(tables, response)
    assert record["model"]["S"] == "test-chat" and attempts(record) == 2
    assert_charged_once(account, record)


def test_given_an_upstream_that_resets_when_called_then_it_is_retried_then_the_fallback_serves(
    resilient, make_account, tables, fake_provider
):
    account = make_account(str(CREDITS))
    marker = new_marker()
    response = chat(resilient, account.key, "test-reset-fallback", marker)
    assert_answered(response, stream=False)
    # Three connections reset by the `resetting` provider, then the fake answered.
    assert response.headers["x-dynoyard-provider"] == "fake"
    assert upstreams_called(fake_provider, marker) == ["ok"]
    record = record_of(tables, response)
    assert attempts(record) == 4 and record["provider"]["S"] == "fake"


def test_given_an_upstream_that_resets_and_no_fallback_when_called_then_502_after_its_retries(
    resilient, make_account, tables
):
    account = make_account(str(CREDITS))
    response = chat(resilient, account.key, "test-reset-alone", new_marker())
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert "x-dynoyard-provider" not in response.headers
    record = record_of(tables, response)
    assert attempts(record) == 3 and record["provider"]["S"] == "resetting"
    assert account.balance() == CREDITS


def test_given_a_4xx_of_the_request_when_called_then_it_is_neither_retried_nor_falls_back(
    resilient, make_account, tables, fake_provider
):
    account = make_account(str(CREDITS))
    marker = new_marker()
    response = chat(resilient, account.key, "test-400-fallback", marker)
    assert response.status_code == 400
    assert upstreams_called(fake_provider, marker) == ["fail-400"]
    assert attempts(record_of(tables, response)) == 1


def test_given_a_provider_refusing_the_gateway_key_when_called_then_it_falls_back_unretried(
    resilient, make_account, tables, fake_provider
):
    account = make_account(str(CREDITS))
    marker = new_marker()
    response = chat(resilient, account.key, "test-auth-fallback", marker)
    assert_answered(response, stream=False)
    assert upstreams_called(fake_provider, marker) == ["auth-401", "ok"]
    assert attempts(record_of(tables, response)) == 2


# -- never retried once streaming ------------------------------------------------------------


def test_given_a_stream_that_stalls_after_its_first_bytes_when_relayed_then_it_ends_in_an_error_event_unretried(  # noqa: E501
    resilient, make_account, tables, fake_provider
):
    account = make_account(str(CREDITS))
    marker = new_marker()
    response = chat(resilient, account.key, "test-stall", marker, stream=True)
    assert response.status_code == 200
    events = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert "upstream_timeout" in events[-1]
    assert upstreams_called(fake_provider, marker) == ["stall"]
    record = record_of(tables, response)
    assert record["status"]["N"] == "504" and attempts(record) == 1
    assert Decimal(record["cost_usd"]["N"]) > 0  # what was streamed is paid for


def test_given_garbage_events_in_a_stream_when_relayed_then_they_pass_through_and_usage_is_exact(
    resilient, make_account, tables, fake_provider
):
    account = make_account(str(CREDITS))
    marker = new_marker()
    response = chat(resilient, account.key, "test-garbage-sse", marker, stream=True)
    assert response.status_code == 200
    for garbage in GARBAGE_EVENTS:
        assert response.content.count(garbage) == 2
    assert response.content.endswith(b"data: [DONE]\n\n")
    usage = next(
        json.loads(line[6:])["usage"]
        for line in response.text.splitlines()
        if line.startswith('data: {"id"') and '"usage":{' in line
    )
    record = record_of(tables, response)
    assert record["status"]["N"] == "200"
    assert record["usage_estimated"]["BOOL"] is False
    assert int(record["prompt_tokens"]["N"]) == usage["prompt_tokens"]
    assert int(record["completion_tokens"]["N"]) == usage["completion_tokens"]
    assert_charged_once(account, record)


# -- the circuit breaker ---------------------------------------------------------------------


def test_given_an_upstream_that_stays_down_when_its_breaker_opens_then_it_is_skipped_until_one_trial(  # noqa: E501
    resilient, make_account, tables, fake_provider
):
    account = make_account(str(CREDITS))
    key = account.key

    def called(model: str) -> tuple[httpx.Response, list[str]]:
        marker = new_marker()
        response = chat(resilient, key, model, marker)
        return response, upstreams_called(fake_provider, marker)

    # Five consecutive failed attempts (3, then 2) open it; the fallback serves throughout.
    response, seen = called("test-down")
    assert response.status_code == 200 and seen == ["down-a"] * 3 + ["ok"]
    response, seen = called("test-down")
    assert response.status_code == 200 and seen == ["down-a"] * 2 + ["ok"]
    opened = time.monotonic()

    # Open: skipped, straight to the fallback.
    response, seen = called("test-down")
    assert response.status_code == 200 and seen == ["ok"]
    assert response.headers["x-dynoyard-provider"] == "fake"
    assert attempts(record_of(tables, response)) == 1

    # Open, with no fallback: 502 in OpenAI's shape, saying so, and when to come back.
    response, seen = called("test-down-alone")
    assert seen == [] and response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_error" and error["type"] == "api_error"
    assert "temporarily skipped" in error["message"]
    assert 1 <= int(response.headers["retry-after"]) <= 2
    record = record_of(tables, response)
    assert attempts(record) == 0 and record["provider"]["S"] == "fake"
    assert record["error_code"]["S"] == "upstream_error"

    # Half-open after the open time: one trial, not retried; it fails, so it opens again.
    time.sleep(max(0.0, opened + OPEN_SECONDS + 0.1 - time.monotonic()))
    response, seen = called("test-down")
    assert response.status_code == 200 and seen == ["down-a", "ok"]
    response, seen = called("test-down")
    assert response.status_code == 200 and seen == ["ok"]
    assert account.balance() < CREDITS


def test_given_an_upstream_that_recovers_when_its_trial_succeeds_then_the_breaker_closes(
    resilient, make_account, tables, fake_provider
):
    account = make_account(str(CREDITS))
    marker = new_marker()  # one marker: the fake fails its first five requests, then answers

    def served_by() -> str:
        response = chat(resilient, account.key, "test-recovering", marker)
        assert_answered(response, stream=False)
        return str(record_of(tables, response)["model"]["S"])

    assert served_by() == "test-chat"  # 3 failed attempts
    assert served_by() == "test-chat"  # 2 more: open
    opened = time.monotonic()
    assert served_by() == "test-chat"  # skipped
    time.sleep(max(0.0, opened + OPEN_SECONDS + 0.1 - time.monotonic()))
    assert served_by() == "test-recovering"  # the trial answers: closed
    assert served_by() == "test-recovering"
    flaky, ok = "flaky-503-5", "ok"
    assert upstreams_called(fake_provider, marker) == (
        [flaky] * 3 + [ok] + [flaky] * 2 + [ok] + [ok] + [flaky] + [flaky]
    )


# -- the deadline ----------------------------------------------------------------------------


def test_given_a_short_deadline_when_an_upstream_keeps_timing_out_then_retries_stop_within_it(
    tables, catalog_path, tmp_path, make_account, fake_provider
):
    overrides: dict[str, str | None] = {
        "DYNOYARD_UPSTREAM_RETRIES": None,
        "DYNOYARD_BREAKER_FAILURES": None,
        "DYNOYARD_UPSTREAM_READ_TIMEOUT": str(READ_TIMEOUT),
        "DYNOYARD_REQUEST_DEADLINE_SECONDS": str(DEADLINE),
    }
    account = make_account(str(CREDITS))
    marker = new_marker()
    with running_gateway(tables, catalog_path, tmp_path, overrides) as short:
        began = time.monotonic()
        response = chat(short, account.key, "test-slow", marker)
        elapsed = time.monotonic() - began
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert elapsed < DEADLINE + 0.5
    # A retry went out (a read timeout is transient), but none that could not finish in time.
    assert upstreams_called(fake_provider, marker) == ["slow", "slow"]
    assert all(r["at"] - began < DEADLINE for r in calls(fake_provider, marker))
    assert attempts(record_of(tables, response)) == 2
    assert account.balance() == CREDITS
