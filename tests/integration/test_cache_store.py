"""The response cache's table against DynamoDB Local: entries written by the settle, read
back, never served once expired (before DynamoDB's TTL removes them), and deleted per
organization when its cache is turned off."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from dynoyard.adapters.dynamo.client import DynamoClient
from dynoyard.adapters.dynamo.store import BlockingStore, DynamoStore
from dynoyard.adapters.upstream import AiohttpUpstream
from dynoyard.domain.accounts import InvalidSetting
from dynoyard.domain.catalog import parse_catalog
from dynoyard.domain.gateway import Gateway
from dynoyard.domain.ports import CacheEntry
from dynoyard.domain.usage import UsageRecord
from tests.conftest import ddb_endpoint


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tables, clock) -> BlockingStore:
    """The tables' store, on a clock the test moves."""
    return BlockingStore(
        DynamoStore(
            DynamoClient(ddb_endpoint(), "us-east-1"),
            tables.accounts,
            tables.usage,
            clock=clock,
            cache_table=tables.names["CACHE_TABLE"],
        )
    )


def settle_with_entry(store: BlockingStore, org_id: str, entry: CacheEntry) -> None:
    """An entry written as the gateway writes it: in the settle of a request."""
    record = UsageRecord(
        request_id=f"req_{uuid.uuid4().hex}",
        started_at=datetime.now(UTC),
        org_id=org_id,
        key_id="key_x",
        endpoint="chat/completions",
        model="m",
        status=200,
        cost_usd=Decimal("0.000002"),
    )
    store.hold(org_id, Decimal("0.000010"))
    store.settle(record, Decimal("0.000010"), None, entry)


def entries_of(tables, org_id: str) -> list[dict]:
    return [
        item
        for item in tables.scan_table(tables.names["CACHE_TABLE"])
        if item["pk"]["S"] == f"ORG#{org_id}"
    ]


def test_given_an_entry_settled_when_looked_up_then_its_answer_comes_back_byte_for_byte(
    make_account, store, clock
):
    account = make_account("1")
    answer = b'{"id":"chatcmpl-1","choices":[{"index":0}],"note":"\xc3\xa9 \x00 raw"}'
    entry = CacheEntry(account.org_id, "a" * 64, answer, int(clock.now) + 600)
    settle_with_entry(store, account.org_id, entry)
    assert store.cached_answer(account.org_id, "a" * 64) == answer
    assert store.cached_answer(account.org_id, "b" * 64) is None
    assert account.balance() == Decimal("1") - Decimal("0.000002")  # the settle moved money


def test_given_an_entry_when_its_expiry_passes_then_it_is_not_served_though_still_stored(
    make_account, store, clock, tables
):
    account = make_account("1")
    entry = CacheEntry(account.org_id, "c" * 64, b'{"choices":[]}', int(clock.now) + 60)
    settle_with_entry(store, account.org_id, entry)
    clock.now += 59
    assert store.cached_answer(account.org_id, "c" * 64) is not None
    clock.now += 1  # expires_at reached
    assert store.cached_answer(account.org_id, "c" * 64) is None
    assert len(entries_of(tables, account.org_id)) == 1  # DynamoDB's TTL has not run yet


def test_given_the_same_hash_for_two_orgs_when_looked_up_then_each_sees_only_its_own(
    make_account, store, clock
):
    first, second = make_account("1"), make_account("1")
    settle_with_entry(
        store, first.org_id, CacheEntry(first.org_id, "d" * 64, b"first", int(clock.now) + 600)
    )
    assert store.cached_answer(first.org_id, "d" * 64) == b"first"
    assert store.cached_answer(second.org_id, "d" * 64) is None


def test_given_many_large_entries_when_cleared_then_all_of_that_org_go_and_no_other_org_s(
    make_account, store, clock, tables
):
    account, other = make_account("1"), make_account("1")
    # 30 entries of 60 KB: more than one Query page (1 MB) and one BatchWriteItem (25).
    for index in range(30):
        answer = f"{index:02d}".encode() * 30_000
        entry = CacheEntry(account.org_id, f"{index:064d}", answer, int(clock.now) + 600)
        settle_with_entry(store, account.org_id, entry)
    kept = CacheEntry(other.org_id, "e" * 64, b"other", int(clock.now) + 600)
    settle_with_entry(store, other.org_id, kept)
    assert len(entries_of(tables, account.org_id)) == 30

    assert store.clear_cache(account.org_id) == 30
    assert entries_of(tables, account.org_id) == []
    assert store.cached_answer(other.org_id, "e" * 64) == b"other"
    assert store.clear_cache(account.org_id) == 0  # safe to run again


def test_given_a_cache_turned_off_when_set_then_its_entries_are_deleted(
    make_account, store, clock, tables
):
    account = make_account("1")
    store.update_org_settings(account.org_id, cache_enabled=True)
    for index in range(3):
        entry = CacheEntry(account.org_id, f"{index:064d}", b"x", int(clock.now) + 600)
        settle_with_entry(store, account.org_id, entry)
    store.update_org_settings(account.org_id, cache_ttl_seconds=600)  # other settings: kept
    assert len(entries_of(tables, account.org_id)) == 3
    store.update_org_settings(account.org_id, cache_enabled=True)  # on again while on: kept
    assert len(entries_of(tables, account.org_id)) == 3

    org = store.update_org_settings(account.org_id, cache_enabled=False)
    assert org.cache_enabled is False
    assert entries_of(tables, account.org_id) == []


def test_given_an_entry_stored_after_the_opt_out_when_turned_back_on_then_it_is_deleted_first(
    make_account, store, clock, tables
):
    """A request in flight at the opt-out may still store its answer with its settle: it is
    never read while the cache is off, and turning the cache on again deletes it."""
    account = make_account("1")
    store.update_org_settings(account.org_id, cache_enabled=False)
    late = CacheEntry(account.org_id, "f" * 64, b"late", int(clock.now) + 600)
    settle_with_entry(store, account.org_id, late)
    assert len(entries_of(tables, account.org_id)) == 1
    org = store.update_org_settings(account.org_id, cache_enabled=True)
    assert org.cache_enabled is True
    assert entries_of(tables, account.org_id) == []


@pytest.mark.parametrize("seconds", [59, 86_401])
def test_given_a_ttl_out_of_range_when_set_in_the_store_then_it_is_refused_and_nothing_changes(
    make_account, store, seconds
):
    account = make_account("1")
    with pytest.raises(InvalidSetting):
        store.update_org_settings(account.org_id, cache_enabled=True, cache_ttl_seconds=seconds)
    org = store.get_org(account.org_id)
    assert (org.cache_enabled, org.cache_ttl_seconds) == (False, 1800)


def test_given_the_cache_table_when_built_from_the_template_then_it_is_keyed_by_org_and_hash(
    tables,
):
    table = tables.client.describe_table(TableName=tables.names["CACHE_TABLE"])["Table"]
    assert {(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]} == {
        ("pk", "HASH"),
        ("sk", "RANGE"),
    }
    ttl = tables.client.describe_time_to_live(TableName=tables.names["CACHE_TABLE"])
    assert ttl["TimeToLiveDescription"]["AttributeName"] == "expires_at"


# -- round trips --------------------------------------------------------------------------


class QuietObserver:
    def request_finished(self, record: UsageRecord) -> None:
        pass

    def settle_failed(self, record: UsageRecord, error: Exception) -> None:
        raise AssertionError(f"settle failed: {error!r}")

    def hold_exceeded(self, record: UsageRecord, held: Decimal) -> None:
        pass


class CountingClient(DynamoClient):
    """DynamoDB Local, each call noted with the tables it touched."""

    def __init__(self) -> None:
        super().__init__(ddb_endpoint(), "us-east-1")
        self.calls: list[tuple[str, set[str]]] = []

    async def call(
        self, operation: str, params: dict[str, Any], idempotent: bool = True
    ) -> dict[str, Any]:
        touched = {
            part["TableName"]
            for item in params.get("TransactItems", [])
            for part in item.values()
            if "TableName" in part
        } | ({params["TableName"]} if "TableName" in params else set())
        self.calls.append((operation, touched))
        return await super().call(operation, params, idempotent)


def test_given_each_kind_of_org_when_requests_are_counted_then_round_trips_are_as_documented(
    tables, fake_provider, make_account
):
    """Cache off: hold, settle. Cache on: hold, lookup, settle (a miss's entry joins the
    settle's transaction; a hit calls no upstream)."""
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
    client = CountingClient()
    store = DynamoStore(
        client, tables.accounts, tables.usage, cache_table=tables.names["CACHE_TABLE"]
    )
    upstream = AiohttpUpstream(lambda name: None)
    gateway = Gateway(
        catalog,
        keys=store,
        ledger=store,
        cache=store,
        upstream=upstream,
        observer=QuietObserver(),
        key_cache_seconds=60,
    )
    off, on = make_account("1"), make_account("1")
    tables.store.update_org_settings(on.org_id, cache_enabled=True)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "count"}]}).encode()
    cache = tables.names["CACHE_TABLE"]

    async def request(account) -> tuple[str, list[tuple[str, set[str]]]]:
        key = await gateway.authenticate(f"Bearer {account.key}")  # cached after the first
        client.calls.clear()
        call = await gateway.start(key, "chat/completions", body, "127.0.0.1", uuid.uuid4().hex)
        if call.cache_status == "hit":
            await gateway.serve_cached(call)
        else:
            await gateway.complete(call, await gateway.open_upstream(call))
        return call.cache_status, list(client.calls)

    async def scenario() -> None:
        for account in (off, on):
            await gateway.authenticate(f"Bearer {account.key}")
        status, calls = await request(off)
        assert status == "bypass"
        assert [op for op, _ in calls] == ["UpdateItem", "TransactWriteItems"]
        assert all(cache not in touched for _, touched in calls)

        status, calls = await request(on)
        assert status == "miss"
        assert [op for op, _ in calls] == ["UpdateItem", "GetItem", "TransactWriteItems"]
        assert cache in calls[2][1]  # the entry is written by the settle itself

        status, calls = await request(on)
        assert status == "hit"
        assert [op for op, _ in calls] == ["UpdateItem", "GetItem", "TransactWriteItems"]
        assert cache not in calls[2][1]
        await store.aclose()
        await upstream.aclose()

    asyncio.run(scenario())
