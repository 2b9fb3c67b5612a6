"""Streams are charged for what was generated, however they end: never the whole hold,
never nothing."""

from __future__ import annotations

import json
import time
import uuid
from decimal import Decimal

import httpx
import openai
import pytest

from dynoyard.domain.money import MILLION


def stream_request(gateway, key, model, content="tell me a long story", **extra):
    return httpx.stream(
        "POST",
        gateway.base_url + "/v1/chat/completions",
        json={
            "model": model,
            "messages": [{"role": "user", "content": content}],
            "stream": True,
            **extra,
        },
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )


def charged(record) -> Decimal:
    return Decimal(record["cost_usd"]["N"])


def test_given_a_client_that_leaves_mid_stream_when_settled_then_it_pays_for_what_was_streamed(
    gateway, make_account, tables
):
    account = make_account("10")
    with stream_request(gateway, account.key, "test-slow-chunks") as response:
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        seen = 0
        for line in response.iter_lines():
            if '"content":" tok' in line:
                seen += 1
            if seen == 5:
                break
    record = tables.usage_item(request_id, timeout=10)
    assert record["status"]["N"] == "499" and record["usage_estimated"]["BOOL"] is True
    streamed = int(record["completion_tokens"]["N"])
    assert 5 <= streamed < 200  # what went out, not the 200 the upstream would have sent
    prompt = int(record["prompt_tokens"]["N"])
    assert prompt == 5  # 'tell me a long story': 20 characters, four to a token
    assert charged(record) == (prompt * Decimal(1) + streamed * Decimal(2)) / MILLION
    assert account.balance() == Decimal(10) - charged(record)


def test_given_a_client_that_leaves_mid_stream_when_the_upstream_is_still_generating_then_its_call_is_cancelled(  # noqa: E501
    gateway, make_account, tables, fake_provider
):
    provider, _ = fake_provider
    account = make_account("10")
    marker = f"marker-{uuid.uuid4().hex}"
    # test-long streams 400 chunks 0.02 s apart: 8 s if read to the end.
    with stream_request(gateway, account.key, "test-long", user=marker) as response:
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        seen = 0
        for line in response.iter_lines():
            seen += line.startswith("data: ")
            if seen == 10:
                break
    left = time.monotonic()
    assert provider.wait_finished(marker) == "disconnected"
    assert time.monotonic() - left < 4  # closed when the client left, not at the end
    assert len(provider.requests_for(marker)) == 1
    record = tables.usage_item(request_id, timeout=10)
    assert record["status"]["N"] == "499" and record["usage_estimated"]["BOOL"] is True
    assert 1 <= int(record["completion_tokens"]["N"]) < 400
    assert account.balance() == Decimal(10) - charged(record)


def test_given_an_upstream_that_breaks_mid_stream_when_relayed_then_an_error_event_ends_it(
    gateway, make_account, tables
):
    account = make_account("10")
    client = gateway.client(account.key)
    received = []
    with (
        pytest.raises(openai.APIError) as info,
        client.chat.completions.with_streaming_response.create(
            model="test-break", messages=[{"role": "user", "content": "x"}], stream=True
        ) as response,
    ):
        request_id = response.headers["x-request-id"]
        for chunk in response.parse():
            received.append(chunk)
    assert "broke off" in info.value.message
    assert received  # the first bytes went out before the break
    record = tables.usage_item(request_id)
    assert record["status"]["N"] == "502" and record["usage_estimated"]["BOOL"] is True
    assert int(record["completion_tokens"]["N"]) >= 1 and charged(record) > 0
    assert account.balance() == Decimal(10) - charged(record)


def test_given_an_error_event_from_the_upstream_when_relayed_then_the_client_sees_it(
    gateway, make_account, tables
):
    account = make_account("10")
    with stream_request(gateway, account.key, "test-error-event") as response:
        request_id = response.headers["x-request-id"]
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert "overloaded mid-stream" in events[-1]
    record = tables.usage_item(request_id)
    assert record["status"]["N"] == "502" and charged(record) > 0


def test_given_a_stream_without_usage_when_finished_then_the_estimate_is_charged_and_marked(
    gateway, make_account, tables
):
    account = make_account("10")
    with stream_request(gateway, account.key, "test-no-usage") as response:
        request_id = response.headers["x-request-id"]
        body = response.read().decode()
    assert body.rstrip().endswith("data: [DONE]") and '"usage"' not in body
    record = tables.usage_item(request_id)
    assert record["status"]["N"] == "200" and record["usage_estimated"]["BOOL"] is True
    assert int(record["completion_tokens"]["N"]) >= 5 and charged(record) > 0


def test_given_an_upstream_error_before_the_first_byte_when_streaming_then_a_real_http_error(
    gateway, make_account
):
    account = make_account("10")
    with stream_request(gateway, account.key, "test-400") as response:
        assert response.status_code == 400
        assert response.headers["content-type"].startswith("application/json")
        assert json.loads(response.read())["error"]["param"] == "temperature"


def test_given_concurrent_requests_when_the_balance_covers_few_then_none_overspends(
    gateway, make_account, tables
):
    import concurrent.futures

    body = json.dumps(
        {"model": "test-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000}
    ).encode()
    hold = (len(body) * Decimal(1) + 1000 * Decimal(2)) / MILLION
    covered = 4
    credits = hold * covered + hold / 2
    account = make_account(str(credits))

    def post(_: int) -> int:
        return httpx.post(
            gateway.base_url + "/v1/chat/completions",
            content=body,
            headers={"authorization": f"Bearer {account.key}", "content-type": "application/json"},
            timeout=10,
        ).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(post, range(24)))
    assert set(statuses) <= {200, 429} and statuses.count(429) > 0
    records = tables.usage_records(account.org_id)
    assert len(records) == 24  # one record per request, whatever its outcome
    spent = sum((charged(r) for r in records), Decimal(0))
    assert account.balance() == credits - spent  # reconciles to the unit
    assert account.balance() >= 0
