"""DynamoStore against DynamoDB Local: holds, settles, replays and TTL."""

from __future__ import annotations

import concurrent.futures
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from dynoyard.domain.ports import InsufficientBalance
from dynoyard.domain.usage import UsageRecord


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


def test_given_a_rate_limit_when_many_hold_at_once_then_exactly_the_limit_passes(
    make_account, tables
):
    from dynoyard.domain.ports import RateLimited

    account = make_account("10")
    tables.store.update_org_settings(account.org_id, rate_limit_rpm=5)
    if time.time() % 60 > 55:
        time.sleep(61 - time.time() % 60)

    def hold(_: int) -> str:
        try:
            tables.store.hold(account.org_id, Decimal("0.01"))
            return "held"
        except RateLimited:
            return "limited"

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(hold, range(12)))
    assert outcomes.count("held") == 5 and outcomes.count("limited") == 7
    assert account.balance() == Decimal("10") - 5 * Decimal("0.01")
