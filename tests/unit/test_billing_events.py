"""domain/billing.py's pure parts: money from cents, the checkout bounds, and the movements
each verified Stripe event makes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from dynoyard.domain.billing import (
    MAX_TOPUP_USD,
    MIN_TOPUP_USD,
    Charge,
    EventFailure,
    InvalidTopup,
    cents_to_usd,
    dispute_movements,
    refund_movement,
    topup_cents,
)


def test_cents_are_exact_usd() -> None:
    assert cents_to_usd(1) == Decimal("0.01") and cents_to_usd(1_000_000_01) == Decimal(
        "1000000.01"
    )
    assert sum(cents_to_usd(1) for _ in range(100)) == Decimal(1)
    for wrong in (True, 1.0, "1"):
        with pytest.raises(TypeError):
            cents_to_usd(wrong)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("amount", "cents"),
    [
        (MIN_TOPUP_USD, 500),
        (Decimal("5.01"), 501),
        (MAX_TOPUP_USD, 1_000_000),
        (Decimal("42.5"), 4250),
    ],
)
def test_top_ups_within_the_bounds_are_whole_cents(amount: Decimal, cents: int) -> None:
    assert topup_cents(amount) == cents


@pytest.mark.parametrize(
    "amount", ["4.99", "0", "-5", "10000.01", "1e9", "5.001", "NaN", "Infinity", "-Infinity"]
)
def test_top_ups_outside_the_bounds_or_not_whole_cents_are_refused(amount: str) -> None:
    with pytest.raises(InvalidTopup):
        topup_cents(Decimal(amount))


def charge(**changes: Any) -> dict[str, Any]:
    return {
        "id": "ch_1",
        "amount": 5000,
        "amount_refunded": 2000,
        "currency": "usd",
        "payment_intent": "pi_1",
        "metadata": {"org_id": "org_a"},
        "payment_method_details": {"card": {"brand": "visa", "last4": "4242"}},
        **changes,
    }


def test_a_refund_takes_back_only_the_new_part_of_the_cumulative_amount() -> None:
    known = Charge("ch_1", "org_a", 5000, refunded_cents=500)
    movement = refund_movement("evt_1", charge(), known, "2026-01-01T00:00:00.000+00:00")
    assert movement is not None
    assert (movement.movement_id, movement.amount_usd) == ("refund:ch_1:2000", Decimal("-15"))
    assert movement.refund is not None and movement.refund.read_cents == 500
    assert (movement.card_brand, movement.card_last4) == ("visa", "4242")
    for seen in (2000, 2500):  # a replay, or an older cumulative after a newer one
        done = Charge("ch_1", "org_a", 5000, refunded_cents=seen)
        assert refund_movement("evt_1", charge(), done, "t") is None


def test_a_refund_of_an_unknown_charge_uses_the_charge_metadata_or_fails() -> None:
    movement = refund_movement("evt_1", charge(), None, "t")
    assert movement is not None and movement.org_id == "org_a"
    assert movement.amount_usd == Decimal("-20")
    with pytest.raises(EventFailure) as failed:
        refund_movement("evt_1", charge(metadata={}), None, "t")
    assert failed.value.code == "unknown_org"


@pytest.mark.parametrize(
    ("closed", "status", "kinds"),
    [
        (False, "needs_response", [("dispute_hold", "-12.34")]),
        (True, "won", [("dispute_hold", "-12.34"), ("dispute_release", "12.34")]),
        (True, "warning_closed", [("dispute_hold", "-12.34"), ("dispute_release", "12.34")]),
        (True, "lost", [("dispute_hold", "-12.34")]),
    ],
)
def test_disputes_hold_and_release(closed: bool, status: str, kinds: list[tuple[str, str]]) -> None:
    dispute = {"id": "dp_1", "amount": 1234, "currency": "usd", "charge": "ch_1", "status": status}
    movements = dispute_movements("evt_1", dispute, "org_a", closed, "t")
    assert [(m.kind, str(m.amount_usd)) for m in movements] == kinds
    assert [m.movement_id for m in movements] == [
        f"{k.split('_')[0]}_{k.split('_')[1]}:dp_1" for k, _ in kinds
    ]


def test_a_closed_dispute_of_an_unknown_status_is_malformed() -> None:
    dispute = {"id": "dp_1", "amount": 1, "currency": "usd", "status": "under_review"}
    with pytest.raises(EventFailure) as failed:
        dispute_movements("evt_1", dispute, "org_a", True, "t")
    assert failed.value.code == "malformed_event"
