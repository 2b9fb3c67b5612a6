"""The official openai SDK against the running gateway and a fake provider on 127.0.0.1."""

from __future__ import annotations

import json
import time
import uuid
from decimal import Decimal

import httpx
import openai
import pytest

from dynoyard.domain.money import MILLION
from tests.conftest import UPSTREAM_SECRET

PRICE_IN, PRICE_OUT = Decimal("1.00"), Decimal("2.00")


def cost(prompt: int, completion: int) -> Decimal:
    return (prompt * PRICE_IN + completion * PRICE_OUT) / MILLION


def test_given_a_funded_key_when_chatting_then_the_answer_is_relayed_and_charged_exactly(
    gateway, make_account, tables
):
    account = make_account("10")
    raw = gateway.client(account.key).chat.completions.with_raw_response.create(
        model="test-chat", messages=[{"role": "user", "content": "hello there friend"}]
    )
    completion = raw.parse()
    assert "COMPLETION-CANARY-" in completion.choices[0].message.content
    request_id = raw.headers["x-request-id"]
    assert request_id.startswith("req_")
    assert raw.headers["server-timing"].startswith("gateway;dur=")
    assert ", upstream;dur=" in raw.headers["server-timing"]

    usage = completion.usage
    record = tables.usage_item(request_id)
    assert record["status"]["N"] == "200"
    assert int(record["prompt_tokens"]["N"]) == usage.prompt_tokens
    assert int(record["completion_tokens"]["N"]) == usage.completion_tokens
    assert Decimal(record["cost_usd"]["N"]) == cost(usage.prompt_tokens, usage.completion_tokens)
    assert account.balance() == Decimal("10") - cost(usage.prompt_tokens, usage.completion_tokens)
    assert int(record["expires_at"]["N"]) - time.time() > 89 * 86400
    assert record["client_ip"]["S"] == "127.0.0.1"


def test_given_every_openai_field_when_sent_then_the_upstream_gets_it_untouched(
    gateway, make_account, fake_provider
):
    provider, _ = fake_provider
    account = make_account()
    marker = f"marker-{uuid.uuid4().hex}"
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    gateway.client(account.key).chat.completions.create(
        model="test-chat",
        messages=[{"role": "user", "content": "pass me through"}],
        tools=tools,
        tool_choice="auto",
        response_format={"type": "json_object"},
        n=2,
        stop=["END"],
        seed=7,
        logprobs=True,
        top_logprobs=2,
        temperature=0.3,
        extra_body={"provider_specific": {"x": 1}},
        user=marker,
    )
    [seen] = provider.requests_for(marker)
    body = seen["payload"]
    assert body["model"] == "ok"  # the catalog's upstream name
    assert body["tools"] == tools and body["tool_choice"] == "auto"
    assert body["response_format"] == {"type": "json_object"}
    assert (body["n"], body["stop"], body["seed"], body["logprobs"], body["top_logprobs"]) == (
        2,
        ["END"],
        7,
        True,
        2,
    )
    assert body["provider_specific"] == {"x": 1} and body["user"] == marker
    # The provider sees the gateway's own key, never the client's.
    assert seen["auth"] == f"Bearer {UPSTREAM_SECRET}"


def test_given_a_stream_when_the_client_did_not_ask_for_usage_then_it_is_charged_but_not_shown(
    gateway, make_account, fake_provider, tables
):
    provider, _ = fake_provider
    account = make_account()
    marker = f"marker-{uuid.uuid4().hex}"
    with gateway.client(account.key).chat.completions.with_streaming_response.create(
        model="test-chat",
        messages=[{"role": "user", "content": "stream to me"}],
        stream=True,
        user=marker,
    ) as response:
        request_id = response.headers["x-request-id"]
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "COMPLETION-CANARY-" in text
    assert all(c.usage is None for c in chunks)
    [seen] = provider.requests_for(marker)
    assert seen["payload"]["stream_options"] == {"include_usage": True}
    record = tables.usage_item(request_id)
    assert record["status"]["N"] == "200" and record["usage_estimated"]["BOOL"] is False
    assert record["stream"]["BOOL"] is True
    assert int(record["completion_tokens"]["N"]) > 0


def test_given_a_stream_with_include_usage_when_read_then_the_client_sees_the_usage(
    gateway, make_account
):
    account = make_account()
    chunks = list(
        gateway.client(account.key).chat.completions.create(
            model="test-chat",
            messages=[{"role": "user", "content": "count for me"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 3


def test_given_legacy_completions_and_embeddings_when_called_then_both_work(gateway, make_account):
    client = gateway.client(make_account().key)
    completion = client.completions.create(model="test-chat", prompt="Say this", max_tokens=5)
    assert "COMPLETION-CANARY-" in completion.choices[0].text
    vectors = client.embeddings.create(model="test-embed", input=["one", "two words"])
    assert len(vectors.data) == 2 and vectors.usage.prompt_tokens == 3


def test_given_models_when_listed_then_only_offered_and_allowed_ones_show(gateway, make_account):
    everything = {m.id for m in gateway.client(make_account().key).models.list()}
    assert {"test-chat", "test-embed"} <= everything
    assert "test-hidden" not in everything  # its provider has no key
    limited = make_account(models=frozenset({"test-chat"}))
    client = gateway.client(limited.key)
    assert [m.id for m in client.models.list()] == ["test-chat"]
    assert client.models.retrieve("test-chat").owned_by == "fake"
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.chat.completions.create(
            model="test-embed", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.code == "model_not_allowed"


@pytest.mark.parametrize("key_state", ["garbage", "unknown", "revoked", "expired"])
def test_given_an_unusable_key_when_used_then_401_invalid_api_key(
    gateway, make_account, tables, key_state
):
    account = make_account(expires_at=int(time.time()) - 1 if key_state == "expired" else None)
    key = {"garbage": "not-a-key", "unknown": "sk-dy-" + "x" * 43}.get(key_state, account.key)
    if key_state == "revoked":
        tables.store.revoke_key(account.key_id)
    with pytest.raises(openai.AuthenticationError) as info:
        gateway.client(key).models.list()
    assert info.value.status_code == 401 and info.value.code == "invalid_api_key"
    assert info.value.body["type"] == "invalid_request_error"


def test_given_an_unknown_model_when_requested_then_404_model_not_found(gateway, make_account):
    client = gateway.client(make_account().key)
    for model in ("no-such-model", "test-hidden"):
        with pytest.raises(openai.NotFoundError) as info:
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
        assert info.value.code == "model_not_found" and info.value.param == "model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_given_an_empty_balance_when_requesting_then_429_insufficient_quota_and_a_record(
    gateway, make_account, tables
):
    account = make_account("0")
    with pytest.raises(openai.RateLimitError) as info:
        gateway.client(account.key).chat.completions.create(
            model="test-chat", messages=[{"role": "user", "content": "x"}]
        )
    assert (
        info.value.code == "insufficient_quota" and info.value.body["type"] == "insufficient_quota"
    )
    record = tables.usage_item(info.value.response.headers["x-request-id"])
    assert record["status"]["N"] == "429" and Decimal(record["cost_usd"]["N"]) == 0
    assert account.balance() == 0


@pytest.mark.parametrize(
    ("model", "error", "status", "code"),
    [
        ("test-500", openai.InternalServerError, 502, "upstream_error"),
        ("test-reset", openai.InternalServerError, 502, "upstream_error"),
        ("test-refused", openai.InternalServerError, 502, "upstream_error"),
        ("test-slow", openai.InternalServerError, 504, "upstream_timeout"),
    ],
)
def test_given_a_failing_upstream_when_called_then_502_or_504_and_nothing_is_charged(
    gateway, make_account, tables, model, error, status, code, stream=False
):
    account = make_account("5")
    for stream in (False, True):
        with pytest.raises(error) as info:
            gateway.client(account.key).chat.completions.create(
                model=model, messages=[{"role": "user", "content": "x"}], stream=stream
            )
        assert info.value.status_code == status and info.value.code == code
        assert info.value.body["type"] == "api_error"
        record = tables.usage_item(info.value.response.headers["x-request-id"])
        assert record["status"]["N"] == str(status) and Decimal(record["cost_usd"]["N"]) == 0
    assert account.balance() == Decimal("5")


def test_given_upstream_4xx_when_called_then_its_status_and_message_reach_the_client(
    gateway, make_account, tables
):
    account = make_account("5")
    client = gateway.client(account.key)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="test-400", messages=[{"role": "user", "content": "x"}]
        )
    assert "temperature" in info.value.message and info.value.param == "temperature"
    assert info.value.code == "invalid_value"
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(
            model="test-429", messages=[{"role": "user", "content": "x"}]
        )
    assert limited.value.status_code == 429
    assert account.balance() == Decimal("5")
    head = tables.usage_item(info.value.response.headers["x-request-id"])["error_head"]["S"]
    assert "temperature" in head


def test_given_a_failing_model_with_a_fallback_when_called_then_the_fallback_answers(
    gateway, make_account, tables, fake_provider
):
    provider, _ = fake_provider
    account = make_account()
    marker = f"marker-{uuid.uuid4().hex}"
    raw = gateway.client(account.key).chat.completions.with_raw_response.create(
        model="test-fallback", messages=[{"role": "user", "content": "x"}], user=marker
    )
    assert "COMPLETION-CANARY-" in raw.parse().choices[0].message.content
    assert [r["payload"]["model"] for r in provider.requests_for(marker)] == ["fail-500", "ok"]
    record = tables.usage_item(raw.headers["x-request-id"])
    assert record["model"]["S"] == "test-chat" and record["status"]["N"] == "200"


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        (b"{not json", 400, None, None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', 400, "model", None),
        (b'{"model": "test-chat", "messages": "x"}', 400, "messages", None),
        (
            b'{"model": "test-chat", "messages": [{"role": "user"}], "max_tokens": 100000}',
            400,
            "max_tokens",
            None,
        ),
        (
            b'{"model": "test-embed", "messages": [{"role": "user"}]}',
            400,
            "model",
            "model_not_supported",
        ),
        (
            b'{"model": "test-chat", "messages": [{"role": "user", "content": "'
            + b"x" * 70000
            + b'"}]}',
            413,
            None,
            "request_too_large",
        ),
    ],
)
def test_given_bad_input_when_posted_then_openai_shaped_errors_and_no_charge(
    gateway, make_account, tables, body, status, param, code
):
    account = make_account("1")
    response = httpx.post(
        gateway.base_url + "/v1/chat/completions",
        content=body,
        headers={"authorization": f"Bearer {account.key}", "content-type": "application/json"},
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert "Traceback" not in response.text and response.headers["x-request-id"]
    assert account.balance() == Decimal("1")
    record = tables.usage_item(response.headers["x-request-id"])  # recorded all the same
    assert record["status"]["N"] == str(status) and Decimal(record["cost_usd"]["N"]) == 0


def test_given_no_key_or_unknown_path_when_called_then_openai_shaped_errors(gateway):
    response = httpx.post(gateway.base_url + "/v1/chat/completions", json={})
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    response = httpx.get(gateway.base_url + "/v1/nothing-here")
    assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_url"
    assert response.headers["x-request-id"].startswith("req_")
    assert json.loads(httpx.get(gateway.base_url + "/healthz").text)["status"] == "ok"


def test_given_a_client_that_gives_up_when_the_upstream_is_slow_then_the_gateway_still_records(
    gateway, make_account, tables
):
    account = make_account("5")
    client = gateway.client(account.key, timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(
            model="test-slow", messages=[{"role": "user", "content": "x"}]
        )
    deadline = time.monotonic() + 10
    while True:
        records = tables.usage_records(account.org_id)
        if records or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(records) == 1 and records[0]["status"]["N"] == "504"
    assert account.balance() == Decimal("5")  # nothing was produced, nothing is charged


def test_given_an_org_rate_limit_when_exceeded_then_429_with_retry_after_and_no_charge(
    gateway, make_account, tables
):
    account = make_account("5")
    tables.store.update_org_settings(account.org_id, rate_limit_rpm=2)
    if time.time() % 60 > 50:  # keep the three requests inside one minute's window
        time.sleep(61 - time.time() % 60)
    client = gateway.client(account.key)
    for _ in range(2):
        client.chat.completions.create(
            model="test-chat", messages=[{"role": "user", "content": "x"}]
        )
    balance = account.balance()
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(
            model="test-chat", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.code == "rate_limit_exceeded" and info.value.body["type"] == "requests"
    assert 1 <= int(info.value.response.headers["retry-after"]) <= 60
    assert account.balance() == balance
    record = tables.usage_item(info.value.response.headers["x-request-id"])
    assert record["status"]["N"] == "429" and record["error_code"]["S"] == "rate_limit_exceeded"
    # An empty balance is still reported as such, not as a rate limit.
    broke = make_account("0")
    tables.store.update_org_settings(broke.org_id, rate_limit_rpm=1)
    with pytest.raises(openai.RateLimitError) as quota:
        gateway.client(broke.key).chat.completions.create(
            model="test-chat", messages=[{"role": "user", "content": "x"}]
        )
    assert quota.value.code == "insufficient_quota"
