"""The alerts' rules (domain/alerts.py): when a settled request changes an alert's state,
and what auto-recharge's settings accept."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from dynoyard.domain.alert_states import alert_change
from dynoyard.domain.alerts import (
    AutoRecharge,
    InvalidAutoRecharge,
    NoSavedCard,
    auto_recharge_settings,
)

D = Decimal


@pytest.mark.parametrize(
    ("balance", "threshold", "state", "change"),
    [
        (D("4.99"), D(5), None, "due"),  # never alerted yet
        (D("4.99"), D(5), "armed", "due"),
        (D("-1"), D(0), "armed", "due"),  # below zero after a refund
        (D("4.99"), D(5), "due", None),  # already marked: no second write
        (D("4.99"), D(5), "sent", None),  # already sent: not again until a credit
        (D("4.99"), D(5), "failed", None),
        (D(5), D(5), "armed", None),  # at the threshold is not below it
        (D(5), D(5), "sent", "rearm"),  # a credit lifted it back
        (D(9), D(5), "failed", "rearm"),
        (D(9), D(5), "due", None),  # the sender decides about a due one
        (D(9), None, "sent", "rearm"),  # the threshold removed
        (D(-9), None, None, None),  # no threshold: never
        (D(-9), None, "armed", None),
    ],
)
def test_given_a_settled_balance_when_checked_then_the_change_is(
    balance: Decimal, threshold: Decimal | None, state: str | None, change: str | None
) -> None:
    assert alert_change(balance, threshold, state) == change


def settings(saved: AutoRecharge | None = None, card: str | None = "pm_1", **given: Any) -> Any:
    body: dict[str, Any] = {
        "enabled": True,
        "threshold_usd": "10",
        "amount_usd": "20.50",
        "monthly_cap_usd": "100",
    } | given
    return auto_recharge_settings(
        body["enabled"],
        body["threshold_usd"],
        body["amount_usd"],
        body["monthly_cap_usd"],
        saved,
        card,
        "usr_0123456789abcdef",
        1_764_000_000,
    )


def test_given_an_owner_turning_it_on_then_the_consent_is_recorded() -> None:
    made = settings()
    assert (made.threshold_usd, made.amount_usd, made.monthly_cap_usd) == (
        D(10),
        D("20.50"),
        D(100),
    )
    assert made.enabled and made.payment_method == "pm_1"
    assert made.consent_by == "usr_0123456789abcdef"
    assert made.consent_at == "2025-11-24T16:00:00+00:00"


def test_given_it_turned_off_then_the_earlier_consent_stays() -> None:
    on = settings()
    off = settings(saved=on, enabled=False, card=None)
    assert not off.enabled and (off.consent_at, off.consent_by) == (on.consent_at, on.consent_by)


def test_given_no_saved_card_when_turned_on_then_refused() -> None:
    with pytest.raises(NoSavedCard):
        settings(card=None)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount_usd", "4.99"),
        ("amount_usd", "10000.01"),
        ("amount_usd", "20.001"),
        ("amount_usd", "-20"),
        ("amount_usd", "+20"),
        ("amount_usd", "2e1"),
        ("amount_usd", "NaN"),
        ("amount_usd", " 20"),
        ("amount_usd", 20),
        ("amount_usd", D(20)),
        ("threshold_usd", "1000000.01"),
        ("threshold_usd", "-0.01"),
        ("monthly_cap_usd", "20.49"),  # below one recharge
        ("monthly_cap_usd", "100000.01"),
    ],
)
def test_given_a_hostile_amount_then_refused_naming_it(field: str, value: Any) -> None:
    with pytest.raises(InvalidAutoRecharge) as refused:
        settings(**{field: value})
    assert refused.value.param == field
