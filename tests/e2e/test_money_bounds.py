"""Money that can not be gamed, end to end: hostile numbers never reach a hold, the output
limit travels upstream, an upstream that ignores it is charged and alarmed, everything
generated is output, every hold is settled whatever the upstream sends, and a busy
organization's balance reconciles to the unit with its records."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from decimal import Decimal

import httpx
import pytest

from dynoyard.domain.money import MILLION
from tests.conftest import (
    UPSTREAM_SECRET,
    ThreadedServer,
    ddb_endpoint,
    model_price,
    running_gateway,
)
from tests.fakes.conflict_proxy import ConflictProxy

ENDPOINT_BODIES = {
    "chat/completions": {"model": "test-chat", "messages": [{"role": "user", "content": "hi"}]},
    "completions": {"model": "test-chat", "prompt": "hi"},
    "embeddings": {"model": "test-embed", "input": "hi"},
}


def post(gateway, key, path, body, **kwargs):
    return httpx.post(
        f"{gateway.base_url}/v1/{path}",
        json=body,
        headers={"authorization": f"Bearer {key}"},
        timeout=kwargs.pop("timeout", 20),
        **kwargs,
    )


def price_of(model_id: str, prompt: int, completion: int) -> Decimal:
    price = model_price(model_id)
    return (
        prompt * Decimal(price["input_per_mtok"]) + completion * Decimal(price["output_per_mtok"])
    ) / MILLION


# -- hostile numbers never reach a hold ----------------------------------------------------


@pytest.mark.parametrize("path", list(ENDPOINT_BODIES))
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_completion_tokens", -100_000_000),
        ("max_tokens", -1),
        ("max_tokens", 0),
        ("n", -3),
        ("n", 10**40),
        ("best_of", 10**40),
        ("max_completion_tokens", "12"),
        ("stream_options", "yes"),
    ],
)
def test_given_an_empty_balance_and_a_hostile_number_when_sent_then_400_nothing_served_or_moved(
    gateway, make_account, tables, fake_provider, path, field, value
):
    provider, _ = fake_provider
    account = make_account("0")
    marker = uuid.uuid4().hex
    body = {**ENDPOINT_BODIES[path], field: value, "user": marker}
    answers = [post(gateway, account.key, path, body) for _ in range(3)]
    if field == "best_of" and path != "completions":
        # best_of multiplies nothing there: the request is just one the balance can not cover
        assert {a.status_code for a in answers} == {429}
    else:
        assert {a.status_code for a in answers} == {400}
        assert answers[0].json()["error"]["param"] == field
    assert provider.requests_for(marker) == []
    assert account.balance() == Decimal(0)
    assert len(tables.usage_records(account.org_id)) == 3  # each refusal is recorded


@pytest.mark.parametrize("path", list(ENDPOINT_BODIES))
def test_given_an_empty_balance_when_a_valid_request_comes_then_it_is_never_served(
    gateway, make_account, fake_provider, path
):
    provider, _ = fake_provider
    account = make_account("0")
    marker = uuid.uuid4().hex
    answer = post(gateway, account.key, path, {**ENDPOINT_BODIES[path], "user": marker})
    assert answer.status_code == 429 and answer.json()["error"]["code"] == "insufficient_quota"
    assert provider.requests_for(marker) == [] and account.balance() == Decimal(0)


# -- the bound travels upstream, and is enforced even when the upstream ignores it ------------


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ({}, 1000),  # the model's cap, which the hold assumed
        ({"max_completion_tokens": 50}, 50),  # moved to the field this upstream reads
        ({"max_tokens": 30, "max_completion_tokens": 60}, 30),
    ],
)
def test_given_a_chat_request_when_forwarded_then_the_upstream_gets_the_output_limit(
    gateway, make_account, fake_provider, sent, expected
):
    provider, _ = fake_provider
    account = make_account("1")
    marker = uuid.uuid4().hex
    body = {**ENDPOINT_BODIES["chat/completions"], "user": marker, **sent}
    assert post(gateway, account.key, "chat/completions", body).status_code == 200
    (seen,) = provider.requests_for(marker)
    assert seen["payload"]["max_tokens"] == expected


def test_given_an_upstream_that_ignores_the_limit_when_it_overspends_then_charged_and_alarmed(
    gateway, make_account, tables
):
    account = make_account("1")
    body = {"model": "test-ignores-limit", "messages": [{"role": "user", "content": "hi"}]}
    answer = post(gateway, account.key, "chat/completions", {**body, "max_tokens": 10})
    assert answer.status_code == 200
    request_id = answer.headers["x-request-id"]
    record = tables.usage_item(request_id)
    cost = Decimal(record["cost_usd"]["N"])
    assert int(record["completion_tokens"]["N"]) == 1_000_000
    assert cost == price_of("test-ignores-limit", int(record["prompt_tokens"]["N"]), 1_000_000)
    # Below zero by exactly the excess, and never silently:
    assert account.balance() == Decimal(1) - cost < 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [json.loads(x) for x in gateway.logs().splitlines() if request_id in x]
        warned = [x for x in lines if x.get("message", "").startswith("hold exceeded")]
        if warned:
            break
        time.sleep(0.05)
    assert warned, "no 'hold exceeded' line for the request"
    assert Decimal(warned[0]["cost_usd"]) == cost > Decimal(warned[0]["held_usd"])


# -- everything generated is output -------------------------------------------------------


def test_given_a_reasoning_stream_when_read_to_the_end_then_reasoning_is_charged_exactly(
    gateway, make_account, tables
):
    account = make_account("1")
    client = gateway.client(account.key)
    stream = client.chat.completions.create(
        model="test-reasoning",
        messages=[{"role": "user", "content": "think"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [chunk.usage for chunk in stream if chunk.usage][-1]
    assert usage.completion_tokens == 45
    tables.usage_item(stream.response.headers["x-request-id"])  # settled as the stream closed
    assert account.balance() == Decimal(1) - price_of(
        "test-reasoning", usage.prompt_tokens, usage.completion_tokens
    )


def test_given_a_client_that_leaves_while_the_model_reasons_when_settled_then_reasoning_is_charged(
    gateway, make_account, tables, fake_provider
):
    provider, _ = fake_provider
    account = make_account("1")
    marker = uuid.uuid4().hex
    body = {
        "model": "test-long",  # 200 reasoning chunks before any content
        "messages": [{"role": "user", "content": "x"}],
        "stream": True,
        "user": marker,
    }
    with httpx.stream(
        "POST",
        f"{gateway.base_url}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {account.key}"},
        timeout=10,
    ) as response:
        request_id = response.headers["x-request-id"]
        for line in response.iter_lines():
            if line.startswith("data: {"):
                delta = json.loads(line[6:])["choices"][0]["delta"]
                assert not delta.get("content")  # no content token yet
                if delta.get("reasoning_content"):
                    break
    record = tables.usage_item(request_id, timeout=10)
    assert record["status"]["N"] == "499" and record["usage_estimated"]["BOOL"] is True
    assert 1 <= int(record["completion_tokens"]["N"]) < 200, record
    assert provider.wait_finished(marker) == "disconnected"  # generation was stopped
    assert Decimal(record["cost_usd"]["N"]) > 0
    assert account.balance() == Decimal(1) - Decimal(record["cost_usd"]["N"])


# -- the provider refusing the gateway's own key ------------------------------------------


@pytest.mark.parametrize(("model", "status"), [("test-auth-401", 401), ("test-auth-403", 403)])
def test_given_the_provider_refuses_the_gateways_key_when_asked_then_502_without_its_text(
    gateway, make_account, tables, model, status
):
    account = make_account("1")
    answer = post(
        gateway,
        account.key,
        "chat/completions",
        {"model": model, "messages": [{"role": "user", "content": "x"}]},
    )
    assert answer.status_code == 502
    error = answer.json()["error"]
    assert (error["type"], error["code"]) == ("api_error", "upstream_error")
    assert "provider credentials" in error["message"] and "not of your API key" in error["message"]
    assert "Incorrect API key" not in answer.text and UPSTREAM_SECRET[-6:] not in answer.text
    record = tables.usage_item(answer.headers["x-request-id"])
    assert record["upstream_error_status"]["N"] == str(status)
    assert "error_head" not in record  # the provider's text may quote the provider key
    assert UPSTREAM_SECRET[-6:] not in gateway.logs()
    assert account.balance() == Decimal(1)


# -- fallbacks only to what the key may use ------------------------------------------------


def test_given_a_key_limited_to_one_model_when_it_fails_then_no_fallback_serves_another(
    gateway, make_account, fake_provider
):
    provider, _ = fake_provider
    limited = make_account("1", models=frozenset({"test-fallback"}))
    marker = uuid.uuid4().hex
    body = {
        "model": "test-fallback",
        "messages": [{"role": "user", "content": "x"}],
        "user": marker,
    }
    assert post(gateway, limited.key, "chat/completions", body).status_code == 502
    assert [r["payload"]["model"] for r in provider.requests_for(marker)] == ["fail-500"]
    assert limited.balance() == Decimal(1)
    both = make_account("1", models=frozenset({"test-fallback", "test-chat"}))
    assert post(gateway, both.key, "chat/completions", body).status_code == 200


# -- whatever the upstream sends, the hold is settled -------------------------------------


@pytest.mark.parametrize(
    ("model", "stream", "status"),
    [
        ("test-bad-choices", False, 200),  # JSON, odd inside: relayed, estimated
        ("test-bad-choices", True, 200),
        ("test-deep-nest", False, 502),  # no client could parse it: the upstream failed
        ("test-deep-nest", True, 200),  # one odd event in a stream passes through
    ],
)
def test_given_an_upstream_answer_the_gateway_can_not_read_when_relayed_then_it_is_settled(
    gateway, make_account, tables, model, stream, status
):
    account = make_account("1")
    body = {"model": model, "messages": [{"role": "user", "content": "x" * 40}], "stream": stream}
    answer = post(gateway, account.key, "chat/completions", body)
    assert answer.status_code == status
    record = tables.usage_item(answer.headers["x-request-id"])
    assert record["status"]["N"] == str(status)
    if status == 502:
        assert answer.json()["error"]["code"] == "upstream_error"
        assert "cost_usd" not in record or Decimal(record["cost_usd"]["N"]) == 0
    # Charged at most what could be estimated (the prompt), and the rest of the hold returned.
    assert account.balance() == Decimal(1) - Decimal(record["cost_usd"]["N"])
    assert Decimal(record["cost_usd"]["N"]) < Decimal("0.001")


# -- compressed answers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("chat/completions", {"messages": [{"role": "user", "content": "one two three"}]}),
        ("completions", {"prompt": "one two three"}),
        ("embeddings", {"input": "one two three"}),
    ],
)
def test_given_a_gzip_upstream_when_answered_then_decoded_and_charged_exactly(
    gateway, make_account, tables, path, body
):
    account = make_account("1")
    answer = post(gateway, account.key, path, {"model": "test-gzip", **body})
    assert answer.status_code == 200
    usage = answer.json()["usage"]  # plain JSON reached the client
    record = tables.usage_item(answer.headers["x-request-id"])
    assert record["usage_estimated"]["BOOL"] is False
    completion = usage.get("completion_tokens", 0)
    assert int(record["prompt_tokens"]["N"]) == usage["prompt_tokens"] > 0
    cost = price_of("test-gzip", usage["prompt_tokens"], completion)
    assert Decimal(record["cost_usd"]["N"]) == cost
    assert account.balance() == Decimal(1) - cost


def test_given_a_gzip_stream_when_relayed_then_the_client_reads_plain_events(gateway, make_account):
    account = make_account("1")
    stream = gateway.client(account.key).chat.completions.create(
        model="test-gzip",
        messages=[{"role": "user", "content": "x"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_given_a_catalog_entry_with_only_the_contract_keys_when_embedding_then_it_serves(
    gateway, make_account
):
    account = make_account("1")
    result = gateway.client(account.key).embeddings.create(
        model="test-contract-embed", input=["a b", "c"]
    )
    assert len(result.data) == 2


# -- a busy organization ------------------------------------------------------------------


async def burst(gateway, key: str, count: int) -> list[httpx.Response]:
    body = {"model": "test-chat", "messages": [{"role": "user", "content": "hello there"}]}
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        return await asyncio.gather(
            *(
                client.post(
                    f"{gateway.base_url}/v1/chat/completions",
                    json=body,
                    headers={"authorization": f"Bearer {key}"},
                )
                for _ in range(count)
            )
        )


def assert_reconciles(tables, account, start: Decimal, answers: list[httpx.Response]) -> None:
    """Every answer has its record (503s included), and the balance is the start less the
    records' costs, to the unit."""
    records = {r["request_id"]["S"]: r for r in tables.usage_records(account.org_id)}
    for answer in answers:
        assert answer.headers["x-request-id"] in records
        assert records[answer.headers["x-request-id"]]["status"]["N"] == str(answer.status_code)
    spent = sum(Decimal(r["cost_usd"]["N"]) for r in records.values())
    assert spent > 0 and account.balance() == start - spent


def test_given_64_concurrent_requests_on_one_org_then_no_5xx_but_recorded_503s_and_it_reconciles(
    gateway, make_account, tables
):
    start = Decimal("5")
    account = make_account(str(start))
    answers = asyncio.run(burst(gateway, account.key, 64))
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 32
    assert_reconciles(tables, account, start, answers)


# -- the deadline ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hurried_gateway(tables, catalog_path, tmp_path_factory):
    """Upstreams may take 10 s per read, but a request only 2 s in all."""
    overrides = {
        "DYNOYARD_REQUEST_DEADLINE_SECONDS": "2",
        "DYNOYARD_UPSTREAM_READ_TIMEOUT": "10",
    }
    with running_gateway(
        tables, catalog_path, tmp_path_factory.mktemp("hurried"), overrides
    ) as process:
        yield process


@pytest.mark.parametrize("stream", [False, True])
def test_given_a_request_that_can_not_finish_in_time_when_the_deadline_passes_then_settled_504(
    hurried_gateway, make_account, tables, stream
):
    account = make_account("1")
    began = time.monotonic()
    answer = post(
        hurried_gateway,
        account.key,
        "chat/completions",
        {
            "model": "test-slow-fallback",
            "messages": [{"role": "user", "content": "x"}],
            "stream": stream,
        },
    )
    took = time.monotonic() - began
    assert answer.status_code == 504 and 1.5 < took < 4.5
    assert answer.json()["error"]["code"] == "upstream_timeout"
    record = tables.usage_item(answer.headers["x-request-id"])
    assert record["status"]["N"] == "504"
    assert account.balance() == Decimal(1)


def test_given_a_stream_longer_than_the_deadline_when_it_passes_then_it_ends_with_an_error_and_is_charged(  # noqa: E501
    hurried_gateway, make_account, tables
):
    account = make_account("1")
    body = {"model": "test-long", "messages": [{"role": "user", "content": "x"}], "stream": True}
    began = time.monotonic()
    answer = post(hurried_gateway, account.key, "chat/completions", body)
    assert time.monotonic() - began < 4.5
    events = [line for line in answer.text.splitlines() if line.startswith("data: ")]
    last = json.loads(events[-1][6:])
    assert last["error"]["code"] == "upstream_timeout"
    record = tables.usage_item(answer.headers["x-request-id"])
    assert record["status"]["N"] == "504" and record["usage_estimated"]["BOOL"] is True
    cost = Decimal(record["cost_usd"]["N"])
    assert cost > 0 and account.balance() == Decimal(1) - cost


# -- write conflicts ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def conflicted_gateway(tables, catalog_path, tmp_path_factory):
    """A gateway whose DynamoDB refuses a third of the holds and settles with write
    conflicts, as a busy organization's item does on AWS."""
    proxy = ConflictProxy(ddb_endpoint(), share=0.33)
    with ThreadedServer(proxy.app) as server:
        overrides = {"AWS_ENDPOINT_URL_DYNAMODB": f"http://127.0.0.1:{server.port}"}
        with running_gateway(
            tables, catalog_path, tmp_path_factory.mktemp("conflicted"), overrides
        ) as process:
            yield process, proxy


def test_given_write_conflicts_on_a_busy_org_when_64_requests_come_at_once_then_it_reconciles(
    conflicted_gateway, make_account, tables
):
    gateway, proxy = conflicted_gateway
    start = Decimal("5")
    account = make_account(str(start))
    answers = asyncio.run(burst(gateway, account.key, 64))
    statuses = [a.status_code for a in answers]
    assert proxy.injected["UpdateItem"] > 0 and proxy.injected["TransactWriteItems"] > 0
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 48
    assert_reconciles(tables, account, start, answers)
