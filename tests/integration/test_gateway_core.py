"""The Gateway use case with its real adapters (DynamoDB Local, the fake provider over
aiohttp), for behaviour the HTTP tests can not reach: the key cache's revocation bound and
a settle that keeps failing."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal

import pytest

from dynoyard.adapters.dynamo.client import DynamoClient
from dynoyard.adapters.dynamo.store import DynamoStore
from dynoyard.adapters.upstream import AiohttpUpstream
from dynoyard.domain.catalog import parse_catalog
from dynoyard.domain.errors import GatewayError
from dynoyard.domain.gateway import Gateway
from dynoyard.domain.usage import UsageRecord
from tests.conftest import ddb_endpoint


class RecordingObserver:
    def __init__(self) -> None:
        self.finished: list[UsageRecord] = []
        self.failed: list[tuple[UsageRecord, Exception]] = []
        self.exceeded: list[tuple[UsageRecord, Decimal]] = []

    def request_finished(self, record: UsageRecord) -> None:
        self.finished.append(record)

    def settle_failed(self, record: UsageRecord, error: Exception) -> None:
        self.failed.append((record, error))

    def hold_exceeded(self, record: UsageRecord, held: Decimal) -> None:
        self.exceeded.append((record, held))


def gateway_for(tables, fake_provider, usage_table: str, key_cache_seconds: float):
    _, port = fake_provider
    catalog = parse_catalog(
        {
            "providers": {"fake": {"base_url": f"http://127.0.0.1:{port}/v1"}},
            "models": [
                {"id": "m", "provider": "fake", "upstream": "ok", "price": {"input_per_mtok": "1"}}
            ],
        },
        environ={},
    )
    store = DynamoStore(DynamoClient(ddb_endpoint(), "us-east-1"), tables.accounts, usage_table)
    upstream = AiohttpUpstream(lambda name: None)
    observer = RecordingObserver()
    gateway = Gateway(
        catalog,
        keys=store,
        ledger=store,
        upstream=upstream,
        observer=observer,
        key_cache_seconds=key_cache_seconds,
    )

    async def close() -> None:
        await store.aclose()
        await upstream.aclose()

    return gateway, observer, close


def test_given_a_cached_key_when_revoked_then_it_is_refused_within_the_cache_bound(
    tables, fake_provider, make_account
):
    account = make_account("1")
    gateway, _, close = gateway_for(tables, fake_provider, tables.usage, key_cache_seconds=0.5)

    async def scenario() -> None:
        header = f"Bearer {account.key}"
        assert (await gateway.authenticate(header)).org_id == account.org_id
        await asyncio.to_thread(tables.store.revoke_key, account.key_id)
        assert (await gateway.authenticate(header)).org_id == account.org_id  # still cached
        await asyncio.sleep(0.6)
        with pytest.raises(GatewayError) as info:
            await gateway.authenticate(header)
        assert info.value.status == 401
        await close()

    asyncio.run(scenario())


def test_given_a_settle_that_keeps_failing_when_answering_then_the_answer_goes_out_and_is_reported(
    tables, fake_provider, make_account
):
    account = make_account("1")
    gateway, observer, close = gateway_for(tables, fake_provider, "no-such-usage-table", 0)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()

    async def scenario() -> bytes:
        key = await gateway.authenticate(f"Bearer {account.key}")
        call = await gateway.start(key, "chat/completions", body, "127.0.0.1", "req_settlefail")
        response = await gateway.open_upstream(call)
        try:
            return await gateway.complete(call, response)
        finally:
            await close()

    started = time.monotonic()
    answer = json.loads(asyncio.run(scenario()))
    assert answer["choices"][0]["message"]["content"]
    assert len(observer.failed) == 1 and observer.failed[0][0].request_id == "req_settlefail"
    assert observer.finished[-1].status == 200
    # The hold stays taken: the operator reconciles it from the 'settle failed' log line.
    assert account.balance() < Decimal("1")
    assert time.monotonic() - started < 10


def test_given_an_unreachable_store_when_authenticating_then_503_not_a_crash(make_account):
    from dynoyard.domain.ports import StoreUnavailable
    from tests.conftest import free_port

    account = make_account("1")
    dead = DynamoClient(f"http://127.0.0.1:{free_port()}", "us-east-1")
    store = DynamoStore(dead, "accounts", "usage")
    gateway = Gateway(
        parse_catalog(
            {
                "providers": {"p": {"base_url": "http://127.0.0.1:1/v1"}},
                "models": [
                    {"id": "m", "provider": "p", "upstream": "u", "price": {"input_per_mtok": "1"}}
                ],
            },
            environ={},
        ),
        keys=store,
        ledger=store,
        upstream=AiohttpUpstream(lambda name: None),
        observer=RecordingObserver(),
    )

    async def scenario() -> None:
        with pytest.raises(GatewayError) as info:
            await gateway.authenticate(f"Bearer {account.key}")
        assert info.value.status == 503 and info.value.headers["retry-after"] == "1"
        with pytest.raises(StoreUnavailable):  # a hold is not retried blindly either
            await store.hold("org_x", Decimal("0.01"))
        await store.aclose()

    asyncio.run(scenario())


def test_given_a_hold_taken_when_an_unexpected_error_escapes_then_abandon_returns_it(
    tables, fake_provider, make_account
):
    account = make_account("1")
    gateway, observer, close = gateway_for(tables, fake_provider, tables.usage, 0)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()

    async def scenario() -> None:
        key = await gateway.authenticate(f"Bearer {account.key}")
        call = await gateway.start(key, "chat/completions", body, "127.0.0.1", "req_abandon")
        assert await asyncio.to_thread(account.balance) < Decimal("1")  # held
        await gateway.open_upstream(call)
        await gateway.abandon(call)  # e.g. a bug between the upstream's answer and ours
        await gateway.abandon(call)  # and again: settled once
        await close()

    asyncio.run(scenario())
    assert account.balance() == Decimal("1")
    assert [r.status for r in observer.finished] == [500]
    assert observer.finished[0].error_code == "internal_error"


def test_given_a_stream_whose_relay_never_starts_when_closed_then_it_is_settled_as_client_closed(
    tables, fake_provider, make_account
):
    from dynoyard.domain.errors import client_closed

    account = make_account("1")
    gateway, observer, close = gateway_for(tables, fake_provider, tables.usage, 0)
    body = json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    ).encode()

    async def scenario() -> None:
        key = await gateway.authenticate(f"Bearer {account.key}")
        call = await gateway.start(key, "chat/completions", body, "127.0.0.1", "req_unstarted")
        response = await gateway.open_upstream(call)
        relay = gateway.relay(call, response)
        await relay.aclose()  # closing a generator that never ran runs none of its code
        assert not call.settled
        await gateway.abandon(call, client_closed())
        await close()

    asyncio.run(scenario())
    assert account.balance() == Decimal("1")
    assert [(r.status, r.error_code) for r in observer.finished] == [(499, "client_closed")]
