"""Failure paths through the running gateway: fallbacks (and where they must not happen),
an upstream that stalls mid-stream, DynamoDB out of reach, answers and bodies over the
limits, the stored error head, the default key cache, and what a fallback route holds and
charges. Each request carries `user=<marker>` so the fake provider tells exactly which
upstream calls it caused."""

from __future__ import annotations

import json
import threading
import time
import uuid
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from dynoyard.domain.money import MILLION
from tests.conftest import free_port, model_price, running_gateway

CREDITS = Decimal("10")


def new_marker() -> str:
    return f"marker-{uuid.uuid4().hex}"


def upstreams_called(fake_provider, marker: str) -> list[str]:
    """The upstream model names the fake provider was asked for on behalf of `marker`."""
    provider, _ = fake_provider
    return [r["payload"]["model"] for r in provider.requests_for(marker)]


def cost_at(model_id: str, prompt_tokens: int, completion_tokens: int) -> Decimal:
    price = model_price(model_id)
    return (
        prompt_tokens * Decimal(price["input_per_mtok"])
        + completion_tokens * Decimal(price["output_per_mtok"])
    ) / MILLION


def charged(record: dict[str, Any]) -> Decimal:
    return Decimal(record["cost_usd"]["N"])


def assert_openai_error(body: dict[str, Any], status_code: str | None = None) -> dict[str, Any]:
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if status_code is not None:
        assert error["code"] == status_code
    return error


def post(base_url: str, key: str, payload: dict[str, Any], path: str = "/v1/chat/completions"):
    return httpx.post(
        base_url + path, json=payload, headers={"authorization": f"Bearer {key}"}, timeout=20
    )


# -- fallbacks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "upstream_calls"),
    [
        ("test-429-fallback", ["fail-429", "ok"]),
        ("test-slow-fallback", ["slow", "ok"]),  # the gateway's read timeout is 1.5 s
        ("test-reset-fallback", ["ok"]),  # the first provider resets: only the fallback is here
    ],
    ids=["429", "timeout", "reset"],
)
def test_given_a_first_model_that_fails_with_429_timeout_or_reset_when_called_then_the_fallback_answers(  # noqa: E501
    gateway, make_account, tables, fake_provider, model, upstream_calls
):
    account = make_account(str(CREDITS))
    client = gateway.client(account.key)
    for stream in (False, True):
        marker = new_marker()
        with client.chat.completions.with_streaming_response.create(
            model=model,
            messages=[{"role": "user", "content": "fall back please"}],
            stream=stream,
            user=marker,
        ) as response:
            assert response.status_code == 200
            request_id = response.headers["x-request-id"]
            parsed = response.parse()
            if stream:
                text = "".join(c.choices[0].delta.content or "" for c in parsed if c.choices)
            else:
                text = parsed.choices[0].message.content
        assert "COMPLETION-CANARY-" in text  # the working fallback's answer
        assert upstreams_called(fake_provider, marker) == upstream_calls
        record = tables.usage_item(request_id)
        assert record["status"]["N"] == "200"
        assert record["model"]["S"] == "test-chat" and record["provider"]["S"] == "fake"
        assert charged(record) > 0


def test_given_a_first_model_that_answers_400_when_called_then_no_fallback_is_tried(
    gateway, make_account, tables, fake_provider
):
    account = make_account(str(CREDITS))
    marker = new_marker()
    with pytest.raises(openai.BadRequestError) as info:
        gateway.client(account.key).chat.completions.create(
            model="test-400-fallback",
            messages=[{"role": "user", "content": "x"}],
            user=marker,
        )
    assert info.value.status_code == 400 and info.value.param == "temperature"
    # The request itself is wrong: its fallback (upstream "ok") never heard of it.
    assert upstreams_called(fake_provider, marker) == ["fail-400"]
    record = tables.usage_item(info.value.response.headers["x-request-id"])
    assert record["status"]["N"] == "400" and charged(record) == 0
    assert account.balance() == CREDITS


# -- an upstream that stalls mid-stream --------------------------------------------------


def test_given_an_upstream_that_stalls_mid_stream_when_relayed_then_an_error_event_ends_it_and_what_was_sent_is_charged(  # noqa: E501
    gateway, make_account, tables
):
    account = make_account(str(CREDITS))
    began = time.monotonic()
    with httpx.stream(
        "POST",
        gateway.base_url + "/v1/chat/completions",
        json={
            "model": "test-stall",
            "messages": [{"role": "user", "content": "stall after three"}],
            "stream": True,
        },
        headers={"authorization": f"Bearer {account.key}"},
        timeout=20,
    ) as response:
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        events = [
            line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")
        ]
    ended_after = time.monotonic() - began
    assert ended_after < 8  # ended by the gateway's 1.5 s read timeout, not the 10 s stall
    payloads = [json.loads(e) for e in events if e != "[DONE]"]
    content = [
        p
        for p in payloads
        if "choices" in p and p["choices"] and p["choices"][0]["delta"].get("content")
    ]
    assert len(content) == 3  # what the upstream sent before it stalled went out
    error = assert_openai_error(payloads[-1], "upstream_timeout")
    assert error["type"] == "api_error"
    record = tables.usage_item(request_id)
    assert record["status"]["N"] == "504" and record["error_code"]["S"] == "upstream_timeout"
    assert record["usage_estimated"]["BOOL"] is True
    prompt, completion = int(record["prompt_tokens"]["N"]), int(record["completion_tokens"]["N"])
    assert completion >= 3  # at least one token per content chunk streamed
    assert charged(record) == cost_at("test-stall", prompt, completion) > 0
    assert account.balance() == CREDITS - charged(record)


# -- DynamoDB out of reach --------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway_without_dynamodb(tables, catalog_path, tmp_path_factory):
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    overrides = {"AWS_ENDPOINT_URL_DYNAMODB": closed}
    with running_gateway(
        tables, catalog_path, tmp_path_factory.mktemp("no-dynamodb"), overrides
    ) as process:
        yield process


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}),
        (
            "POST",
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "stream": True},
        ),
        ("POST", "/v1/completions", {"prompt": "x"}),
        ("POST", "/v1/embeddings", {"input": "x"}),
        ("GET", "/v1/models", None),
    ],
    ids=["chat", "stream", "completions", "embeddings", "models"],
)
def test_given_dynamodb_unreachable_when_requests_come_then_503_with_retry_after_never_500(
    gateway_without_dynamodb, make_account, method, path, payload
):
    account = make_account("1")  # a real key, in tables this gateway can not reach
    body = None
    if payload is not None:
        model = "test-embed" if path.endswith("embeddings") else "test-chat"
        body = {"model": model, **payload}
    response = httpx.request(
        method,
        gateway_without_dynamodb.base_url + path,
        json=body,
        headers={"authorization": f"Bearer {account.key}"},
        timeout=30,
    )
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["content-type"].startswith("application/json")
    error = assert_openai_error(response.json(), "service_unavailable")
    assert error["type"] == "api_error"
    assert "Traceback" not in response.text and response.headers["x-request-id"]
    assert account.balance() == Decimal("1")


# -- limits -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited_gateway(tables, catalog_path, tmp_path_factory):
    """A gateway with the default key cache (DYNOYARD_KEY_CACHE_SECONDS unset) and a small
    buffered-response limit."""
    overrides = {"DYNOYARD_KEY_CACHE_SECONDS": None, "DYNOYARD_MAX_RESPONSE_BYTES": "2048"}
    with running_gateway(
        tables, catalog_path, tmp_path_factory.mktemp("limited"), overrides
    ) as process:
        yield process


def test_given_a_buffered_answer_over_the_size_limit_when_relayed_then_502_and_the_hold_returns(
    limited_gateway, make_account, tables
):
    account = make_account(str(CREDITS))
    client = limited_gateway.client(account.key)
    small = client.chat.completions.create(
        model="test-chat", messages=[{"role": "user", "content": "a small answer"}]
    )
    assert small.choices[0].message.content  # answers under 2,048 bytes pass
    balance = account.balance()
    assert balance < CREDITS
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(
            model="test-big", messages=[{"role": "user", "content": "a big answer"}]
        )  # the fake's answer is about 17 KB
    assert info.value.status_code == 502 and info.value.code == "upstream_error"
    assert_openai_error(info.value.response.json())
    record = tables.usage_item(info.value.response.headers["x-request-id"])
    assert record["status"]["N"] == "502" and charged(record) == 0
    assert account.balance() == balance  # the hold was returned, nothing charged


def test_given_a_chunked_body_without_content_length_over_the_limit_when_posted_then_413_and_recorded(  # noqa: E501
    gateway, make_account, tables
):
    account = make_account("1")
    piece = b"x" * 8192
    sent: list[int] = []

    def body():
        yield b'{"model": "test-chat", "messages": [{"role": "user", "content": "'
        for _ in range(10):  # 80 KiB against the test gateway's 64 KiB limit
            sent.append(len(piece))
            yield piece
        yield b'"}]}'

    with httpx.Client(timeout=20) as client:
        request = client.build_request(
            "POST",
            gateway.base_url + "/v1/chat/completions",
            content=body(),
            headers={"authorization": f"Bearer {account.key}", "content-type": "application/json"},
        )
        assert "content-length" not in request.headers
        assert request.headers["transfer-encoding"] == "chunked"
        response = client.send(request)
    assert response.status_code == 413
    assert_openai_error(response.json(), "request_too_large")
    record = tables.usage_item(response.headers["x-request-id"])
    assert record["status"]["N"] == "413" and charged(record) == 0
    assert account.balance() == Decimal("1")


def test_given_an_upstream_error_body_over_1_kb_when_recorded_then_its_first_1024_bytes_are_kept(
    gateway, make_account, tables
):
    account = make_account("1")
    prompt = "an ascii prompt " + uuid.uuid4().hex
    with pytest.raises(openai.InternalServerError) as info:
        gateway.client(account.key).chat.completions.create(
            model="test-500", messages=[{"role": "user", "content": prompt}]
        )
    record = tables.usage_item(info.value.response.headers["x-request-id"])
    head = record["error_head"]["S"]
    assert len(head.encode()) == 1024  # the upstream's body is over 3,000 bytes
    assert head.startswith('{"error":{"message":"upstream exploded while reading: ' + prompt)
    assert head.endswith("x" * 100)  # cut inside the padding, not at the end of the body
    assert record["upstream_error_status"]["N"] == "500"


# -- the default key cache --------------------------------------------------------------


def test_given_the_default_key_cache_when_a_key_is_revoked_then_it_works_until_about_5_s_then_401(
    limited_gateway, make_account, tables
):
    account = make_account("1")
    client = httpx.Client(
        base_url=limited_gateway.base_url, headers={"authorization": f"Bearer {account.key}"}
    )
    with client:
        looked_up = time.monotonic()  # the key is looked up (and cached) after this instant
        assert client.get("/v1/models").status_code == 200
        tables.store.revoke_key(account.key_id)
        assert client.get("/v1/models").status_code == 200  # still cached
        refused_at = None
        while time.monotonic() - looked_up < 8:
            status = client.get("/v1/models").status_code
            if status == 401:
                refused_at = time.monotonic()
                break
            assert status == 200
            time.sleep(0.1)
    assert refused_at is not None, "the revoked key was still accepted after 8 s"
    assert 4.9 <= refused_at - looked_up <= 6.5


# -- hold at the dearest model of the route, charge at the model that answered ----------


def test_given_a_cheap_model_with_a_dear_fallback_when_called_then_it_holds_at_the_dear_price_and_charges_the_dear_one(  # noqa: E501
    gateway, make_account, tables, fake_provider
):
    account = make_account(str(CREDITS))
    marker = new_marker()
    max_tokens = 500
    outcome: dict[str, Any] = {}

    def call() -> None:
        client = gateway.client(account.key, timeout=20)
        outcome["raw"] = client.chat.completions.with_raw_response.create(
            model="test-slow-to-dear",  # times out (1.5 s), then test-dear answers
            messages=[{"role": "user", "content": "hold me"}],
            max_tokens=max_tokens,
            user=marker,
        )

    worker = threading.Thread(target=call)
    worker.start()
    lowest = CREDITS
    while worker.is_alive():
        lowest = min(lowest, account.balance())
        time.sleep(0.05)
    worker.join()
    held = CREDITS - lowest
    dear_out = Decimal(model_price("test-dear")["output_per_mtok"])
    # At the cheap model's own price the whole 500 tokens would hold 10x less than this.
    assert held >= max_tokens * dear_out / MILLION
    raw = outcome["raw"]
    usage = raw.parse().usage
    assert upstreams_called(fake_provider, marker) == ["slow", "ok"]
    record = tables.usage_item(raw.headers["x-request-id"])
    assert record["model"]["S"] == "test-dear"
    assert charged(record) == cost_at("test-dear", usage.prompt_tokens, usage.completion_tokens)
    assert charged(record) < held
    assert account.balance() == CREDITS - charged(record)


@pytest.mark.parametrize(
    ("model", "answered_by"),
    [("test-cheap-fallback", "test-dear"), ("test-dear-fallback", "test-chat")],
    ids=["cheap-to-dear", "dear-to-cheap"],
)
def test_given_a_route_with_differently_priced_models_when_the_fallback_answers_then_its_own_price_is_charged(  # noqa: E501
    gateway, make_account, tables, fake_provider, model, answered_by
):
    account = make_account(str(CREDITS))
    marker = new_marker()
    raw = gateway.client(account.key).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "who answers"}], user=marker
    )
    usage = raw.parse().usage
    assert upstreams_called(fake_provider, marker) == ["fail-500", "ok"]
    record = tables.usage_item(raw.headers["x-request-id"])
    assert record["model"]["S"] == answered_by
    expected = cost_at(answered_by, usage.prompt_tokens, usage.completion_tokens)
    assert expected != cost_at(model, usage.prompt_tokens, usage.completion_tokens)
    assert charged(record) == expected
    assert account.balance() == CREDITS - expected


def test_given_a_client_that_leaves_while_sending_its_body_then_499_recorded_and_no_error_logged(
    gateway, make_account, tables
):
    import socket

    account = make_account("1")
    port = int(gateway.base_url.rsplit(":", 1)[1])
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {account.key}\r\nContent-Type: application/json\r\n"
        "Content-Length: 5000\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(head.encode() + b'{"model": "test-chat", "messages": [')
        time.sleep(0.3)  # the gateway is reading the body when the client goes
    deadline = time.monotonic() + 5
    records: list[dict] = []
    while time.monotonic() < deadline and not records:
        records = tables.usage_records(account.org_id)
        time.sleep(0.05)
    assert [r["status"]["N"] for r in records] == ["499"]
    assert records[0]["error_code"]["S"] == "client_closed"
    assert "unhandled error" not in gateway.logs()
    assert account.balance() == Decimal("1")
