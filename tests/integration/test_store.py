"""DynamoStore against DynamoDB Local: holds, settles, replays and TTL."""

from __future__ import annotations

import concurrent.futures
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from dynoyard.adapters.dynamo.client import DynamoClient
from dynoyard.adapters.dynamo.store import BlockingStore, DynamoStore
from dynoyard.domain.ports import InsufficientBalance, RateLimited
from dynoyard.domain.usage import UsageRecord
from tests.conftest import ddb_endpoint


def usage(org_id: str, request_id: str, cost: str, when: datetime | None = None) -> UsageRecord:
    return UsageRecord(
        request_id=request_id,
        started_at=when or datetime.now(UTC),
        org_id=org_id,
        key_id="key_x",
        endpoint="chat/completions",
        model="m",
        status=200,
        cost_usd=Decimal(cost),
    )


def test_given_a_settle_replayed_when_applied_twice_then_money_moves_once(make_account, tables):
    account = make_account("1")
    store = tables.store
    store.hold(account.org_id, Decimal("0.3"))
    record = usage(account.org_id, "req_replay", "0.1")
    store.settle(record, Decimal("0.3"))
    store.settle(record, Decimal("0.3"))  # the same request id: a lost answer, retried
    assert account.balance() == Decimal("0.9")
    stored = [r for r in store.usage_records(account.org_id) if r.request_id == "req_replay"]
    assert len(stored) == 1


def test_given_many_threads_when_holding_then_the_balance_never_goes_below_zero(
    make_account, tables
):
    account = make_account("1")

    def hold(_: int) -> bool:
        try:
            tables.store.hold(account.org_id, Decimal("0.07"))
            return True
        except InsufficientBalance:
            return False

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        admitted = sum(pool.map(hold, range(40)))
    assert admitted == 14  # floor(1 / 0.07)
    assert account.balance() == Decimal("1") - 14 * Decimal("0.07")


def test_given_an_expired_usage_record_when_read_then_it_is_skipped(make_account, tables):
    account = make_account("1")
    old = usage(account.org_id, "req_expired", "0", datetime.now(UTC) - timedelta(days=91))
    tables.store.settle(old, Decimal(0))
    fresh = usage(account.org_id, "req_fresh", "0")
    tables.store.settle(fresh, Decimal(0))
    ids = [r.request_id for r in tables.store.usage_records(account.org_id)]
    assert ids == ["req_fresh"]  # DynamoDB deletes late; reads do not wait for it
    assert old.expires_at < time.time()


def test_given_an_unknown_org_when_holding_then_it_is_refused(tables):
    with pytest.raises(InsufficientBalance):
        tables.store.hold("org_missing", Decimal("0.01"))


class FakeClock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock_store(tables):
    """A store on the test tables whose hold reads a fake clock, starting at a minute's
    first second."""
    clock = FakeClock(60 * 29_000_000.0)
    client = DynamoClient(ddb_endpoint(), "us-east-1")
    store = BlockingStore(DynamoStore(client, tables.accounts, tables.usage, clock=clock))
    return store, clock


def org_attributes(tables, org_id: str) -> dict:
    key = {"pk": {"S": f"ORG#{org_id}"}, "sk": {"S": "META"}}
    return tables.client.get_item(TableName=tables.accounts, Key=key, ConsistentRead=True)["Item"]


def test_given_a_rate_limit_when_many_hold_at_once_then_exactly_the_limit_passes(
    make_account, tables, clock_store
):
    store, clock = clock_store
    account = make_account("10")
    store.update_org_settings(account.org_id, rate_limit_rpm=5)
    clock.now += 20  # mid-minute: the whole burst falls in one window, whatever the wall time

    def hold(_: int) -> str:
        try:
            store.hold(account.org_id, Decimal("0.01"))
            return "held"
        except RateLimited as limited:
            assert limited.retry_after_seconds == 40
            return "limited"

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(hold, range(12)))
    assert outcomes.count("held") == 5 and outcomes.count("limited") == 7
    assert account.balance() == Decimal("10") - 5 * Decimal("0.01")
    clock.now += 40  # the next minute opens a new window
    store.hold(account.org_id, Decimal("0.01"))


def test_given_an_org_used_over_many_minutes_with_pauses_then_its_item_stays_the_same_size(
    make_account, tables, clock_store
):
    store, clock = clock_store
    account = make_account("10")
    store.update_org_settings(account.org_id, rate_limit_rpm=2)
    store.hold(account.org_id, Decimal("0.001"))
    shape = set(org_attributes(tables, account.org_id))
    for pause_minutes in [1, 2, 3, 5, 60, 1, 7, 2, 1440, 3] * 4:
        clock.now += 60 * pause_minutes
        store.hold(account.org_id, Decimal("0.001"))
        store.hold(account.org_id, Decimal("0.001"))
        with pytest.raises(RateLimited):
            store.hold(account.org_id, Decimal("0.001"))  # the limit holds in every window
    assert set(org_attributes(tables, account.org_id)) == shape
    assert {"rpm_minute", "rpm_count"} <= shape
    assert account.balance() == Decimal("10") - 81 * Decimal("0.001")


def test_given_an_org_without_a_limit_when_holding_over_minutes_then_no_window_attributes_pile_up(
    make_account, tables, clock_store
):
    store, clock = clock_store
    account = make_account("10")
    store.hold(account.org_id, Decimal("0.001"))
    shape = set(org_attributes(tables, account.org_id))
    for _ in range(30):
        clock.now += 150
        store.hold(account.org_id, Decimal("0.001"))
    assert set(org_attributes(tables, account.org_id)) == shape


@pytest.mark.parametrize("amount", ["0", "-0.5"])
def test_given_a_hold_that_is_not_positive_when_taken_then_it_is_refused_and_nothing_moves(
    make_account, tables, amount
):
    account = make_account("1")
    with pytest.raises(ValueError):
        tables.store.hold(account.org_id, Decimal(amount))
    assert account.balance() == Decimal("1")
