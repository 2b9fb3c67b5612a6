"""The ledger of money movements (adapters/dynamo/billing_store.py) on DynamoDB Local: each
movement once, whatever the replays or concurrency; the charge item's refunds; history pages
confined to the organization; grants in the same shape."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

import pytest

from dynoyard.adapters.dynamo.billing_store import BillingStore
from dynoyard.adapters.dynamo.client import DynamoClient
from dynoyard.domain.accounts import UnknownOrg
from dynoyard.domain.billing import (
    Charge,
    InvalidLedgerQuery,
    Movement,
    RefundRaced,
    RefundStep,
    UnknownOrgForMovement,
    iso_now,
)
from tests.conftest import Tables, ddb_endpoint

T = TypeVar("T")


def run(tables: Tables, job: Callable[[BillingStore], Awaitable[T]]) -> T:
    async def go() -> T:
        client = DynamoClient(ddb_endpoint(), "us-east-1")
        try:
            return await job(BillingStore(client, tables.accounts))
        finally:
            await client.aclose()

    return asyncio.run(go())


def new_org(tables: Tables) -> str:
    return str(tables.store.create_org(f"Billing {uuid.uuid4().hex[:6]}", "b@example.com"))


def balance(tables: Tables, org: str) -> Decimal:
    return Decimal(tables.store.get_org(org).balance_usd)


def topup(org: str, cents: int = 2500, session: str | None = None) -> Movement:
    session = session or f"cs_{uuid.uuid4().hex}"
    charge = f"ch_{session}"
    return Movement(
        movement_id=f"topup:{session}",
        org_id=org,
        kind="topup",
        amount_usd=Decimal(cents) / 100,
        at=iso_now(),
        stripe_checkout_session=session,
        stripe_charge=charge,
        card_brand="visa",
        card_last4="4242",
        charge=Charge(charge, org, cents, card_brand="visa", card_last4="4242"),
    )


def refund(org: str, charge: str, read: int | None, cumulative: int) -> Movement:
    return Movement(
        movement_id=f"refund:{charge}:{cumulative}",
        org_id=org,
        kind="refund",
        amount_usd=-Decimal(cumulative - (read or 0)) / 100,
        at=iso_now(),
        stripe_charge=charge,
        refund=RefundStep(charge, read, cumulative),
    )


def guards(tables: Tables, movement_id: str) -> list[dict[str, Any]]:
    return [
        item
        for item in tables.scan_table(tables.accounts)
        if item["pk"]["S"] == f"MOVEMENT#{movement_id}"
    ]


def test_a_movement_applies_once_whatever_the_replays(tables: Tables) -> None:
    org = new_org(tables)
    movement = topup(org, 2500)
    results = [run(tables, lambda store: store.apply(movement)) for _ in range(10)]
    assert results == [True] + [False] * 9
    assert balance(tables, org) == Decimal("25")
    entries, cursor = run(tables, lambda store: store.history(org, None, 50))
    assert cursor is None
    assert [(e.kind, e.amount_usd, e.card_brand, e.card_last4) for e in entries] == [
        ("topup", Decimal("25"), "visa", "4242")
    ]
    assert entries[0].movement_id == movement.movement_id
    charge = run(tables, lambda store: store.charge(str(movement.stripe_charge)))
    assert charge == Charge(str(movement.stripe_charge), org, 2500, 0, "visa", "4242")


def test_concurrent_applies_of_one_movement_count_once(tables: Tables) -> None:
    org = new_org(tables)
    movement = topup(org, 1000)

    async def sixteen(store: BillingStore) -> list[bool]:
        return list(await asyncio.gather(*(store.apply(movement) for _ in range(16))))

    results = run(tables, sixteen)
    assert sorted(results) == [False] * 15 + [True]
    assert balance(tables, org) == Decimal("10")
    assert len(guards(tables, movement.movement_id)) == 1


def test_an_unknown_org_gets_nothing_written(tables: Tables) -> None:
    movement = topup("org_doesnotexist", 1000)
    with pytest.raises(UnknownOrgForMovement):
        run(tables, lambda store: store.apply(movement))
    assert guards(tables, movement.movement_id) == []
    assert run(tables, lambda store: store.charge(str(movement.stripe_charge))) is None


def test_refunds_move_the_charge_from_the_value_read(tables: Tables) -> None:
    org = new_org(tables)
    paid = topup(org, 5000)
    charge = str(paid.stripe_charge)
    assert run(tables, lambda store: store.apply(paid))
    assert run(tables, lambda store: store.apply(refund(org, charge, 0, 1000)))
    # A second partial refund computed from a stale read is refused, nothing written.
    with pytest.raises(RefundRaced):
        run(tables, lambda store: store.apply(refund(org, charge, 0, 3000)))
    assert run(tables, lambda store: store.apply(refund(org, charge, 1000, 3000)))
    assert balance(tables, org) == Decimal("20")
    known = run(tables, lambda store: store.charge(charge))
    assert known is not None and known.refunded_cents == 3000 and known.amount_cents == 5000
    # record_refund reads the charge itself.
    late = refund(org, charge, None, 5000)
    assert run(tables, lambda store: store.record_refund(charge, org, 5000, late))
    assert not run(tables, lambda store: store.record_refund(charge, org, 4000, late))
    assert balance(tables, org) == Decimal("0")
    entries, _ = run(tables, lambda store: store.history(org, None, 10))
    assert sum(e.amount_usd for e in entries) == balance(tables, org)


def test_a_refund_before_its_top_up_keeps_the_refunded_amount(tables: Tables) -> None:
    org = new_org(tables)
    paid = topup(org, 4000)
    charge = str(paid.stripe_charge)
    assert run(tables, lambda store: store.apply(refund(org, charge, None, 1500)))
    assert run(tables, lambda store: store.apply(paid))
    known = run(tables, lambda store: store.charge(charge))
    assert known is not None
    assert (known.amount_cents, known.refunded_cents, known.org_id) == (4000, 1500, org)
    assert balance(tables, org) == Decimal("25")


def test_history_pages_newest_first_within_the_org(tables: Tables) -> None:
    org, other = new_org(tables), new_org(tables)
    tables.store.grant_credits(org, Decimal("3.5"), "welcome")
    for cents in (500, 600, 700):
        run(tables, lambda store, c=cents: store.apply(topup(org, c)))  # type: ignore[misc]
    run(tables, lambda store: store.apply(topup(other, 900)))
    seen: list[Any] = []
    cursor: str | None = None
    while True:
        page, cursor = run(tables, lambda store, at=cursor: store.history(org, at, 2))  # type: ignore[misc]
        seen.extend(page)
        if cursor is None:
            break
    assert [e.amount_usd for e in seen] == [Decimal(x) for x in ("7", "6", "5", "3.5")]
    assert [e.at for e in seen] == sorted((e.at for e in seen), reverse=True)
    grant = seen[-1]
    assert (grant.kind, grant.reason, grant.currency) == ("grant", "welcome", "usd")
    assert len(grant.movement_id) == 16
    # A cursor of this org used on the other one reads only the other one's partition.
    _, first_cursor = run(tables, lambda store: store.history(org, None, 1))
    assert first_cursor is not None
    theirs, _ = run(tables, lambda store: store.history(other, first_cursor, 50))
    assert all(e.org_id == other for e in theirs)
    assert {e.amount_usd for e in theirs} <= {Decimal("9")}
    everything = run(tables, lambda store: _all(store, org))
    assert [e.amount_usd for e in everything] == [Decimal(x) for x in ("3.5", "5", "6", "7")]
    assert sum(e.amount_usd for e in everything) == balance(tables, org)


async def _all(store: BillingStore, org: str) -> list[Any]:
    return [entry async for entry in store.entries(org)]


@pytest.mark.parametrize(
    ("before", "limit", "param"),
    [
        ("not-a-cursor", 10, "before"),
        ("eyJzayI6IkFVRElUIzIwMjYtMDEtMDFUMDA6MDA6MDAuMDAwKzAwOjAwI2FiIn0", 10, "before"),
        ("", 10, "before"),
        ("x" * 1000, 10, "before"),
        (None, 0, "limit"),
        (None, 201, "limit"),
        (None, -1, "limit"),
        (None, True, "limit"),
    ],
)
def test_hostile_history_queries_are_refused(
    tables: Tables, before: str | None, limit: int, param: str
) -> None:
    org = new_org(tables)
    with pytest.raises(InvalidLedgerQuery) as refused:
        run(tables, lambda store: store.history(org, before, limit))
    assert refused.value.param == param


def test_the_stripe_customer_is_set_once(tables: Tables) -> None:
    org = new_org(tables)

    async def race(store: BillingStore) -> list[str]:
        names = [f"cus_{i}" for i in range(8)]
        return list(await asyncio.gather(*(store.set_customer(org, n) for n in names)))

    winners = run(tables, race)
    assert len(set(winners)) == 1
    assert run(tables, lambda store: store.customer(org)) == winners[0]
    assert run(tables, lambda store: store.set_customer(org, "cus_late")) == winners[0]
    with pytest.raises(UnknownOrg):
        run(tables, lambda store: store.set_customer("org_nope", "cus_x"))
