"""A key's own limits against DynamoDB Local, on a fake clock: requests and tokens per
minute, spend per day and per month; exact under concurrency, bounded in size, and no
extra round trip for a key without limits."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from dynoyard.adapters.dynamo.client import DynamoClient
from dynoyard.adapters.dynamo.store import BlockingStore, DynamoStore
from dynoyard.domain.limits import InvalidLimit, key_limits, seconds_to_reset
from dynoyard.domain.ports import InsufficientBalance, RateLimited, SpendCapReached
from dynoyard.domain.usage import UsageRecord
from tests.conftest import ddb_endpoint

START = datetime(2026, 11, 30, 23, 59, 10, tzinfo=UTC).timestamp()  # near a month's end


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class CountingClient(DynamoClient):
    """Counts the calls the store makes, by operation."""

    def __init__(self) -> None:
        super().__init__(ddb_endpoint(), "us-east-1")
        self.calls: Counter[str] = Counter()

    async def call(self, operation, params, idempotent=True):  # type: ignore[no-untyped-def]
        self.calls[operation] += 1
        return await super().call(operation, params, idempotent)


@pytest.fixture
def limited(tables, make_account):
    """(store on a fake clock, clock, client, make_key(credits, **limits))."""
    clock = FakeClock(START)
    client = CountingClient()
    store = BlockingStore(DynamoStore(client, tables.accounts, tables.usage, clock=clock))

    def make_key(credits: str = "10", **limits):
        account = make_account(credits)
        new = tables.store.create_key(account.org_id, "limited", limits=key_limits(**limits))
        key = tables.store.find_key(new.key_hash)
        return account, key

    return store, clock, client, make_key


def record(key, request_id: str, cost: str, tokens: int) -> UsageRecord:
    return UsageRecord(
        request_id=request_id,
        started_at=datetime.now(UTC),
        org_id=key.org_id,
        key_id=key.key_id,
        endpoint="chat/completions",
        model="m",
        status=200,
        prompt_tokens=tokens,
        cost_usd=Decimal(cost),
    )


def test_given_a_key_rpm_when_exceeded_then_refused_with_its_state_until_the_next_minute(limited):
    store, clock, _, make_key = limited
    account, key = make_key(rpm=3)
    holds = [store.hold(account.org_id, Decimal("0.01"), key, 10) for _ in range(3)]
    assert [h.limits[0].remaining for h in holds] == [2, 1, 0]
    with pytest.raises(RateLimited) as info:
        store.hold(account.org_id, Decimal("0.01"), key, 10)
    state = info.value.state
    assert (state.kind, state.limit, state.remaining) == ("requests", 3, 0)
    assert info.value.retry_after_seconds == 50  # 23:59:10 -> the next minute
    assert account.balance() == Decimal("10") - 3 * Decimal("0.01")  # the refusal took nothing
    clock.now += 50
    assert store.hold(account.org_id, Decimal("0.01"), key, 10).limits[0].remaining == 2


def test_given_a_key_tpm_when_settled_then_unused_tokens_come_back(limited):
    store, _, _, make_key = limited
    account, key = make_key(tpm=1000)
    first = store.hold(account.org_id, Decimal("0.01"), key, 400)
    store.hold(account.org_id, Decimal("0.01"), key, 400)
    with pytest.raises(RateLimited) as info:
        store.hold(account.org_id, Decimal("0.01"), key, 400)  # 200 left
    assert info.value.state.kind == "tokens"
    store.settle(record(key, "req_tpm", "0.001", 100), Decimal("0.01"), first.key_charge)
    third = store.hold(account.org_id, Decimal("0.01"), key, 400)  # 200 + 300 given back
    assert third.limits[0].remaining == 100


def test_given_a_request_larger_than_a_cap_when_held_then_refused_without_any_write(limited):
    store, _, client, make_key = limited
    account, key = make_key(tpm=100, daily_usd="0.05")
    client.calls.clear()
    with pytest.raises(RateLimited):
        store.hold(account.org_id, Decimal("0.01"), key, 101)
    with pytest.raises(SpendCapReached):
        store.hold(account.org_id, Decimal("0.06"), key, 10)
    assert sum(client.calls.values()) == 0


def test_given_a_daily_cap_when_64_hold_at_once_then_exactly_what_it_covers_passes(limited):
    store, _, _, make_key = limited
    account, key = make_key("100", daily_usd="0.10")

    def hold(_: int) -> str:
        try:
            store.hold(account.org_id, Decimal("0.01"), key, 10)
            return "held"
        except SpendCapReached:
            return "capped"

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = Counter(pool.map(hold, range(64)))
    assert outcomes == {"held": 10, "capped": 54}
    assert account.balance() == Decimal("100") - 10 * Decimal("0.01")


def test_given_a_spend_cap_when_requests_settle_below_their_hold_then_the_rest_is_spendable(
    limited,
):
    store, _, _, make_key = limited
    account, key = make_key("100", daily_usd="1", monthly_usd="0.12")
    holds = [store.hold(account.org_id, Decimal("0.05"), key, 10) for _ in range(2)]
    with pytest.raises(SpendCapReached):
        store.hold(account.org_id, Decimal("0.05"), key, 10)  # 0.02 of the month left
    for i, taken in enumerate(holds):
        store.settle(record(key, f"req_cap{i}", "0.02", 10), Decimal("0.05"), taken.key_charge)
    # Spent 0.04 of the month's 0.12: 0.08 left, so one more 0.05 hold, not two.
    store.hold(account.org_id, Decimal("0.05"), key, 10)
    with pytest.raises(SpendCapReached) as info:
        store.hold(account.org_id, Decimal("0.05"), key, 10)
    assert info.value.cap == "monthly_usd"
    assert info.value.retry_after_seconds == seconds_to_reset("monthly_usd", START)


def test_given_a_new_day_and_month_when_holding_then_the_caps_start_afresh(limited):
    store, clock, _, make_key = limited
    account, key = make_key("100", daily_usd="0.05", monthly_usd="0.05")
    store.hold(account.org_id, Decimal("0.05"), key, 10)
    with pytest.raises(SpendCapReached):
        store.hold(account.org_id, Decimal("0.01"), key, 10)
    clock.now += 60  # 2026-12-01 00:00:10 UTC: a new day and a new month
    store.hold(account.org_id, Decimal("0.05"), key, 10)


def test_given_an_org_that_refuses_when_the_key_counted_then_the_counts_go_back(limited):
    store, _, _, make_key = limited
    account, key = make_key("0", rpm=1, daily_usd="1")
    with pytest.raises(InsufficientBalance):
        store.hold(account.org_id, Decimal("0.5"), key, 10)
    account.store.grant_credits(account.org_id, Decimal("5"), "test")
    # Neither the request nor its 0.5 stayed counted: a full-size hold still fits.
    store.hold(account.org_id, Decimal("1"), key, 10)


def test_given_a_limited_key_over_many_windows_then_its_item_keeps_its_size(limited, tables):
    store, clock, _, make_key = limited
    account, key = make_key("100", rpm=5, tpm=10_000, daily_usd="1", monthly_usd="5")
    store.hold(account.org_id, Decimal("0.001"), key, 10)
    item_key = {"pk": {"S": f"KEY#{key.key_hash}"}, "sk": {"S": "KEY"}}

    def attributes() -> set[str]:
        return set(tables.client.get_item(TableName=tables.accounts, Key=item_key)["Item"])

    clock.now += 60
    store.hold(account.org_id, Decimal("0.001"), key, 10)
    shape = attributes()
    for pause in [60, 120, 3600, 86_400, 60, 40 * 86_400, 60] * 3:
        clock.now += pause
        store.hold(account.org_id, Decimal("0.001"), key, 10)
    assert attributes() == shape
    assert len([a for a in shape if a.startswith("lim_")]) == 16  # 4 limits x 2 slots x 2


def test_given_a_key_without_limits_when_holding_then_one_write_only(limited):
    store, _, client, make_key = limited
    account, key = make_key()
    client.calls.clear()
    taken = store.hold(account.org_id, Decimal("0.01"), key, 10)
    assert client.calls == {"UpdateItem": 1}
    # Nothing counted against the key; only its "last used" hour, for the settle to set.
    assert taken.key_charge is not None and taken.key_charge.kinds == frozenset()
    assert taken.key_charge.mark_used == key.key_hash
    store.settle(record(key, "req_plain", "0.001", 5), Decimal("0.01"), taken.key_charge)
    assert client.calls["TransactWriteItems"] == 1  # refund, record and the hour: one call
    again = store.hold(account.org_id, Decimal("0.01"), key, 10)
    assert again.key_charge is None  # marked this hour already: nothing for the key at all


@pytest.mark.parametrize(
    "limits",
    [
        {"rpm": 0},
        {"tpm": -1},
        {"rpm": True},
        {"rpm": 10**9},
        {"daily_usd": "0"},
        {"daily_usd": "-1"},
        {"monthly_usd": "abc"},
        {"monthly_usd": 0.5},
        {"daily_usd": "1e9"},
    ],
)
def test_given_a_hostile_limit_when_set_then_it_is_refused(limits):
    with pytest.raises(InvalidLimit):
        key_limits(**limits)


def test_given_a_limited_key_in_concurrent_async_holds_then_the_rpm_is_exact(limited, tables):
    _, clock, _, make_key = limited
    account, key = make_key("100", rpm=7)
    store = DynamoStore(
        DynamoClient(ddb_endpoint(), "us-east-1"), tables.accounts, tables.usage, clock=clock
    )

    async def burst() -> list[object]:
        results = await asyncio.gather(
            *(store.hold(account.org_id, Decimal("0.001"), key, 1) for _ in range(64)),
            return_exceptions=True,
        )
        await store.aclose()
        return results

    results = asyncio.run(burst())
    assert sum(not isinstance(r, Exception) for r in results) == 7
    assert all(isinstance(r, RateLimited) for r in results if isinstance(r, Exception))
