"""The opt-in response cache end to end: the gateway process, DynamoDB Local, the fake
provider and the official openai SDK.

The fake records each request under its `user` field, which is not part of the cache key:
a test sends the same marker twice and counts how often the upstream was really called."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from dynoyard.domain.money import MILLION
from tests.conftest import ROOT

PRICE_IN, PRICE_OUT = Decimal("1.00"), Decimal("2.00")


def cost(prompt: int, completion: int) -> Decimal:
    return (prompt * PRICE_IN + completion * PRICE_OUT) / MILLION


def new_marker() -> str:
    return f"cache-{uuid.uuid4().hex}"


def question() -> list[dict[str, str]]:
    """A prompt no other test sends."""
    return [{"role": "user", "content": f"What is {uuid.uuid4().hex}?"}]


def cached_org(make_account, tables, credits: str = "10"):
    account = make_account(credits)
    tables.store.update_org_settings(account.org_id, cache_enabled=True)
    return account


def chat(gateway, account, messages, marker, **fields: Any):
    """A buffered chat request: (the SDK's answer, the raw response)."""
    raw = gateway.client(account.key).chat.completions.with_raw_response.create(
        model=fields.pop("model", "test-chat"), messages=messages, user=marker, **fields
    )
    return raw.parse(), raw


def chat_stream(gateway, account, messages, marker, **fields: Any):
    """A streamed chat request read to its end: (the chunks, the raw response)."""
    raw = gateway.client(account.key).chat.completions.with_raw_response.create(
        model=fields.pop("model", "test-chat"),
        messages=messages,
        user=marker,
        stream=True,
        **fields,
    )
    return list(raw.parse()), raw


def streamed_text(chunks) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def cache_entries(tables, org_id: str) -> list[dict[str, Any]]:
    return [
        item
        for item in tables.scan_table(tables.names["CACHE_TABLE"])
        if item["pk"]["S"] == f"ORG#{org_id}"
    ]


def record_of(tables, raw) -> dict[str, Any]:
    return tables.usage_item(raw.headers["x-request-id"])


def dynoyard_cli(gateway, *argv: str) -> dict[str, Any]:
    """The operator CLI as an operator runs it, against the same tables."""
    done = subprocess.run(
        [sys.executable, "-m", "dynoyard", "--json", *argv],
        env={**os.environ, **gateway.env},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


# -- off by default -------------------------------------------------------------------------


def test_given_an_org_that_never_opted_in_when_asking_twice_then_both_go_upstream_and_say_bypass(
    gateway, make_account, fake_provider, tables
):
    provider, _ = fake_provider
    account = make_account("10")
    marker, messages = new_marker(), question()
    first, first_raw = chat(gateway, account, messages, marker)
    second, second_raw = chat(gateway, account, messages, marker)
    assert first_raw.headers["x-dynoyard-cache"] == "bypass"
    assert second_raw.headers["x-dynoyard-cache"] == "bypass"
    assert len(provider.requests_for(marker)) == 2
    assert first.id != second.id
    assert cache_entries(tables, account.org_id) == []
    assert record_of(tables, second_raw)["cached"] == {"BOOL": False}


@pytest.mark.parametrize("endpoint", ["completions", "embeddings"])
def test_given_an_org_that_never_opted_in_when_using_other_endpoints_then_they_say_bypass(
    gateway, make_account, endpoint
):
    account = make_account("10")
    client = gateway.client(account.key)
    if endpoint == "completions":
        raw = client.completions.with_raw_response.create(model="test-chat", prompt="hi")
    else:
        raw = client.embeddings.with_raw_response.create(model="test-embed", input="hi")
    assert raw.headers["x-dynoyard-cache"] == "bypass"


def test_given_the_cli_when_the_cache_is_turned_on_then_it_serves_hits(
    gateway, make_account, fake_provider
):
    provider, _ = fake_provider
    account = make_account("10")
    shown = dynoyard_cli(gateway, "org", "set", account.org_id, "--cache", "on")
    assert shown["settings"]["cache_enabled"] is True
    assert shown["settings"]["cache_ttl_seconds"] == 1800
    marker, messages = new_marker(), question()
    _, first = chat(gateway, account, messages, marker)
    _, second = chat(gateway, account, messages, marker)
    assert (first.headers["x-dynoyard-cache"], second.headers["x-dynoyard-cache"]) == (
        "miss",
        "hit",
    )
    assert len(provider.requests_for(marker)) == 1


# -- hits and misses -----------------------------------------------------------------------


def test_given_an_answer_cached_when_asked_again_then_no_upstream_call_and_a_free_cached_record(
    gateway, make_account, fake_provider, tables
):
    provider, _ = fake_provider
    account = cached_org(make_account, tables)
    marker, messages = new_marker(), question()
    first, first_raw = chat(gateway, account, messages, marker)
    second, second_raw = chat(gateway, account, messages, marker)

    assert first_raw.headers["x-dynoyard-cache"] == "miss"
    assert second_raw.headers["x-dynoyard-cache"] == "hit"
    assert len(provider.requests_for(marker)) == 1  # the hit never reached the upstream
    assert second.model_dump() == first.model_dump()  # the same answer, byte for byte
    assert "COMPLETION-CANARY-" in second.choices[0].message.content

    missed, hit = record_of(tables, first_raw), record_of(tables, second_raw)
    charged = cost(first.usage.prompt_tokens, first.usage.completion_tokens)
    assert missed["cached"] == {"BOOL": False}
    assert Decimal(missed["cost_usd"]["N"]) == charged
    # The pricing policy: a hit costs nothing and counts no tokens.
    assert hit["cached"] == {"BOOL": True}
    assert hit["status"]["N"] == "200"
    assert Decimal(hit["cost_usd"]["N"]) == 0
    assert (hit["prompt_tokens"]["N"], hit["completion_tokens"]["N"]) == ("0", "0")
    assert hit["model"]["S"] == "test-chat"
    assert account.balance() == Decimal("10") - charged  # the hold of the hit came back
    assert len(cache_entries(tables, account.org_id)) == 1


def test_given_another_key_of_the_same_org_when_asking_the_same_then_it_is_a_hit(
    gateway, make_account, fake_provider, tables
):
    """The API key is not part of the cache key: the organization is."""
    provider, _ = fake_provider
    account = cached_org(make_account, tables)
    other_key = tables.store.create_key(account.org_id, "second").secret
    marker, messages = new_marker(), question()
    chat(gateway, account, messages, marker)
    raw = gateway.client(other_key).chat.completions.with_raw_response.create(
        model="test-chat", messages=messages, user=marker
    )
    assert raw.headers["x-dynoyard-cache"] == "hit"
    assert len(provider.requests_for(marker)) == 1


def test_given_a_changed_parameter_when_asked_then_it_is_a_miss(
    gateway, make_account, fake_provider, tables
):
    provider, _ = fake_provider
    account = cached_org(make_account, tables)
    marker, messages = new_marker(), question()
    chat(gateway, account, messages, marker)
    _, raw = chat(gateway, account, messages, marker, temperature=0.2)
    assert raw.headers["x-dynoyard-cache"] == "miss"
    _, raw = chat(gateway, account, messages, marker, model="test-dear")
    assert raw.headers["x-dynoyard-cache"] == "miss"
    assert len(provider.requests_for(marker)) == 3


def test_given_a_buffered_miss_when_the_client_streams_the_same_then_the_answer_replays_as_sse(
    gateway, make_account, fake_provider, tables
):
    provider, _ = fake_provider
    account = cached_org(make_account, tables)
    marker, messages = new_marker(), question()
    first, _ = chat(gateway, account, messages, marker)
    chunks, raw = chat_stream(
        gateway, account, messages, marker, stream_options={"include_usage": True}
    )
    assert raw.headers["x-dynoyard-cache"] == "hit"
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert len(provider.requests_for(marker)) == 1
    assert streamed_text(chunks) == first.choices[0].message.content
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == first.usage.total_tokens
    record = record_of(tables, raw)
    assert record["cached"] == {"BOOL": True} and record["stream"] == {"BOOL": True}


def test_given_a_streamed_miss_when_asked_buffered_then_the_assembled_answer_is_served(
    gateway, make_account, fake_provider, tables
):
    provider, _ = fake_provider
    account = cached_org(make_account, tables)
    marker, messages = new_marker(), question()
    chunks, first_raw = chat_stream(
        gateway, account, messages, marker, stream_options={"include_usage": True}
    )
    assert first_raw.headers["x-dynoyard-cache"] == "miss"
    answer, raw = chat(gateway, account, messages, marker)
    assert raw.headers["x-dynoyard-cache"] == "hit"
    assert len(provider.requests_for(marker)) == 1
    assert answer.object == "chat.completion"
    assert answer.id == chunks[0].id
    assert answer.choices[0].message.content == streamed_text(chunks)
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.total_tokens == chunks[-1].usage.total_tokens
    # And streamed again, without usage this time: none is sent.
    again, raw = chat_stream(gateway, account, messages, marker)
    assert raw.headers["x-dynoyard-cache"] == "hit"
    assert streamed_text(again) == streamed_text(chunks)
    assert all(c.usage is None for c in again)
    assert len(provider.requests_for(marker)) == 1


def test_given_legacy_completions_and_embeddings_when_repeated_then_they_are_hits(
    gateway, make_account, fake_provider, tables
):
    provider, _ = fake_provider
    account = cached_org(make_account, tables)
    client = gateway.client(account.key)
    marker, prompt = new_marker(), f"Complete {uuid.uuid4().hex}"
    first = client.completions.with_raw_response.create(
        model="test-chat", prompt=prompt, user=marker
    )
    second = client.completions.with_raw_response.create(
        model="test-chat", prompt=prompt, user=marker
    )
    streamed = client.completions.with_raw_response.create(
        model="test-chat", prompt=prompt, user=marker, stream=True
    )
    text = "".join(c.choices[0].text for c in streamed.parse() if c.choices)
    assert [r.headers["x-dynoyard-cache"] for r in (first, second, streamed)] == [
        "miss",
        "hit",
        "hit",
    ]
    assert second.parse().choices[0].text == first.parse().choices[0].text == text

    embed_marker = new_marker()
    vectors = [
        client.embeddings.with_raw_response.create(
            model="test-embed", input=prompt, user=embed_marker
        )
        for _ in range(2)
    ]
    assert [r.headers["x-dynoyard-cache"] for r in vectors] == ["miss", "hit"]
    assert vectors[0].parse().data[0].embedding == vectors[1].parse().data[0].embedding
    assert len(provider.requests_for(marker)) == 1
    assert len(provider.requests_for(embed_marker)) == 1


# -- bypass and the never-cached rules -------------------------------------------------------


@pytest.mark.parametrize("headers", [{"x-dynoyard-cache": "bypass"}, {"Cache-Control": "no-cache"}])
def test_given_a_bypass_request_when_sent_then_the_cache_is_neither_read_nor_written(
    gateway, make_account, fake_provider, tables, headers
):
    provider, _ = fake_provider
    account = cached_org(make_account, tables)
    marker, messages = new_marker(), question()
    _, raw = chat(gateway, account, messages, marker, extra_headers=headers)
    assert raw.headers["x-dynoyard-cache"] == "bypass"
    assert cache_entries(tables, account.org_id) == []  # not written
    _, raw = chat(gateway, account, messages, marker)
    assert raw.headers["x-dynoyard-cache"] == "miss"  # so the next one misses
    _, raw = chat(gateway, account, messages, marker, extra_headers=headers)
    assert raw.headers["x-dynoyard-cache"] == "bypass"  # and a stored one is not read
    assert len(provider.requests_for(marker)) == 3


@pytest.mark.parametrize(
    "fields",
    [
        {"n": 2},  # variety: temperature absent is 1 upstream
        {"n": 2, "temperature": 0.8},
        {"tools": [{"type": "function", "function": {"name": "now", "parameters": {}}}]},
    ],
)
def test_given_a_request_the_cache_never_keeps_when_repeated_then_each_goes_upstream(
    gateway, make_account, fake_provider, tables, fields
):
    provider, _ = fake_provider
    account = cached_org(make_account, tables)
    marker, messages = new_marker(), question()
    for _ in range(2):
        _, raw = chat(gateway, account, messages, marker, **fields)
        assert raw.headers["x-dynoyard-cache"] == "bypass"
    assert len(provider.requests_for(marker)) == 2
    assert cache_entries(tables, account.org_id) == []


def test_given_n_choices_at_temperature_zero_when_repeated_then_it_is_cached(
    gateway, make_account, fake_provider, tables
):
    provider, _ = fake_provider
    account = cached_org(make_account, tables)
    marker, messages = new_marker(), question()
    statuses = [
        chat(gateway, account, messages, marker, n=2, temperature=0)[1].headers["x-dynoyard-cache"]
        for _ in range(2)
    ]
    assert statuses == ["miss", "hit"]
    assert len(provider.requests_for(marker)) == 1


@pytest.mark.parametrize(("model", "status"), [("test-500", 502), ("test-400", 400)])
def test_given_an_upstream_error_when_repeated_then_it_is_never_cached(
    gateway, make_account, fake_provider, tables, model, status
):
    provider, _ = fake_provider
    account = cached_org(make_account, tables)
    marker, messages = new_marker(), question()
    for _ in range(2):
        with pytest.raises(openai.APIStatusError) as caught:
            chat(gateway, account, messages, marker, model=model)
        assert caught.value.status_code == status
        assert caught.value.response.headers["x-dynoyard-cache"] == "miss"
    assert len(provider.requests_for(marker)) >= 2
    assert cache_entries(tables, account.org_id) == []


@pytest.mark.parametrize("model", ["test-break", "test-error-event", "test-no-usage"])
def test_given_a_stream_that_broke_or_was_estimated_when_repeated_then_it_is_never_cached(
    gateway, make_account, fake_provider, tables, model
):
    provider, _ = fake_provider
    account = cached_org(make_account, tables)
    marker, messages = new_marker(), question()
    for _ in range(2):
        # An error event ends some of these streams: that is the point.
        with contextlib.suppress(openai.APIError):
            chat_stream(gateway, account, messages, marker, model=model)
    assert len(provider.requests_for(marker)) == 2
    assert cache_entries(tables, account.org_id) == []


def test_given_a_client_that_leaves_mid_stream_when_settled_then_nothing_is_cached(
    gateway, make_account, fake_provider, tables
):
    provider, _ = fake_provider
    account = cached_org(make_account, tables)
    marker = new_marker()
    with httpx.stream(
        "POST",
        gateway.base_url + "/v1/chat/completions",
        json={"model": "test-long", "messages": question(), "stream": True, "user": marker},
        headers={"authorization": f"Bearer {account.key}"},
        timeout=10,
    ) as response:
        assert response.headers["x-dynoyard-cache"] == "miss"
        request_id = response.headers["x-request-id"]
        for line in response.iter_lines():
            if "reasoning_content" in line:
                break
    assert provider.wait_finished(marker) == "disconnected"
    assert tables.usage_item(request_id)["status"]["N"] == "499"
    assert cache_entries(tables, account.org_id) == []


# -- isolation, opting out, expiry -------------------------------------------------------------


def test_given_two_orgs_with_the_cache_on_when_one_asks_what_the_other_did_then_it_is_a_miss(
    gateway, make_account, fake_provider, tables
):
    provider, _ = fake_provider
    first, second = cached_org(make_account, tables), cached_org(make_account, tables)
    marker, messages = new_marker(), question()
    answer, _ = chat(gateway, first, messages, marker)
    other, raw = chat(gateway, second, messages, marker)
    assert raw.headers["x-dynoyard-cache"] == "miss"
    assert other.id != answer.id
    assert len(provider.requests_for(marker)) == 2
    assert len(cache_entries(tables, first.org_id)) == len(cache_entries(tables, second.org_id))


def test_given_the_cache_turned_off_with_the_cli_when_asked_again_then_entries_are_gone(
    gateway, make_account, fake_provider, tables
):
    provider, _ = fake_provider
    account = cached_org(make_account, tables)
    marker, messages = new_marker(), question()
    chat(gateway, account, messages, marker)
    assert len(cache_entries(tables, account.org_id)) == 1
    shown = dynoyard_cli(gateway, "org", "set", account.org_id, "--cache", "off")
    assert shown["settings"]["cache_enabled"] is False
    assert cache_entries(tables, account.org_id) == []
    _, raw = chat(gateway, account, messages, marker)
    assert raw.headers["x-dynoyard-cache"] == "bypass"
    tables.store.update_org_settings(account.org_id, cache_enabled=True)
    _, raw = chat(gateway, account, messages, marker)
    assert raw.headers["x-dynoyard-cache"] == "miss"  # nothing of before came back
    assert len(provider.requests_for(marker)) == 3


def test_given_an_expired_entry_not_yet_removed_by_ttl_when_asked_then_it_is_a_miss(
    gateway, make_account, fake_provider, tables
):
    provider, _ = fake_provider
    account = cached_org(make_account, tables)
    marker, messages = new_marker(), question()
    first, _ = chat(gateway, account, messages, marker)
    [entry] = cache_entries(tables, account.org_id)
    # What an entry looks like between its expiry and DynamoDB's TTL deleting it.
    tables.client.update_item(
        TableName=tables.names["CACHE_TABLE"],
        Key={"pk": entry["pk"], "sk": entry["sk"]},
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": {"N": str(int(time.time()) - 1)}},
    )
    second, raw = chat(gateway, account, messages, marker)
    assert raw.headers["x-dynoyard-cache"] == "miss"
    assert second.id != first.id
    assert len(provider.requests_for(marker)) == 2
    [renewed] = cache_entries(tables, account.org_id)  # the fresh answer took its place
    assert int(renewed["expires_at"]["N"]) > time.time() + 1700


def test_given_a_ttl_when_set_then_new_entries_expire_after_it(
    gateway, make_account, fake_provider, tables
):
    account = cached_org(make_account, tables)
    dynoyard_cli(gateway, "org", "set", account.org_id, "--cache-ttl", "120")
    before = time.time()
    chat(gateway, account, question(), new_marker())
    [entry] = cache_entries(tables, account.org_id)
    assert before + 119 <= int(entry["expires_at"]["N"]) <= time.time() + 120


# -- the header on every /v1 answer, and the money -------------------------------------------


def test_given_answers_before_any_lookup_when_returned_then_they_say_bypass(
    gateway, make_account, tables
):
    account = cached_org(make_account, tables)
    headers = {"authorization": f"Bearer {account.key}"}
    cases = [
        httpx.post(gateway.base_url + "/v1/chat/completions", json={"model": "x"}),  # no key
        httpx.post(
            gateway.base_url + "/v1/chat/completions",
            json={"model": "no-such-model", "messages": question()},
            headers=headers,
        ),
        httpx.post(gateway.base_url + "/v1/chat/completions", content=b"{", headers=headers),
        httpx.get(gateway.base_url + "/v1/models", headers=headers),
        httpx.get(gateway.base_url + "/v1/no-such-route", headers=headers),
    ]
    assert [r.status_code for r in cases] == [401, 404, 400, 200, 404]
    assert [r.headers.get("x-dynoyard-cache") for r in cases] == ["bypass"] * 5


def test_given_a_hit_for_an_org_that_can_not_cover_the_hold_when_asked_then_it_is_refused(
    gateway, make_account, fake_provider, tables
):
    """The hold comes first on a hit too: it is where the cache settings are read."""
    account = cached_org(make_account, tables, credits="0.01")
    marker, messages = new_marker(), question()
    chat(gateway, account, messages, marker)
    tables.store.grant_credits(account.org_id, -account.balance(), "drained")
    with pytest.raises(openai.RateLimitError) as caught:
        chat(gateway, account, messages, marker)
    assert caught.value.response.headers["x-dynoyard-cache"] == "bypass"


def test_given_many_hits_and_misses_when_reconciled_then_the_balance_equals_the_records(
    gateway, make_account, tables
):
    account = cached_org(make_account, tables)
    marker = new_marker()
    prompts = [question() for _ in range(3)]
    request_ids = []
    for _ in range(3):
        for messages in prompts:
            _, raw = chat(gateway, account, messages, marker)
            request_ids.append(raw.headers["x-request-id"])
        _, raw = chat_stream(gateway, account, prompts[0], marker)
        request_ids.append(raw.headers["x-request-id"])
    records = [tables.usage_item(r) for r in request_ids]
    cached = [r for r in records if r["cached"]["BOOL"]]
    assert len(cached) == len(records) - 3  # each prompt missed once
    assert all(Decimal(r["cost_usd"]["N"]) == 0 for r in cached)
    spent = sum(Decimal(r["cost_usd"]["N"]) for r in records)
    assert spent > 0
    assert account.balance() == Decimal("10") - spent
