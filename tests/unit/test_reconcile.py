"""The reconciliation's arithmetic (domain/reconcile.py), with nothing running."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from dynoyard.domain.billing import Entry
from dynoyard.domain.reconcile import OrgMoney, Spent, ledger_total, reconcile, usage_day


def entry(kind: str, amount: str, date: str | None = None) -> Entry:
    return Entry(f"{kind}:{amount}:{date}", "org_x", kind, Decimal(amount), "2026-11-25", date=date)


def test_given_entries_and_records_when_totalled_then_every_unit_counts():
    entries = [entry("grant", "10"), entry("topup", "25.5"), entry("refund", "-5.25")]
    spent = [Spent("2026-11-24", Decimal("0.000001")), Spent("2026-11-25", Decimal("1.1"))]
    assert ledger_total(entries, spent) == Decimal("29.149999")


def test_given_a_rolled_up_day_when_totalled_then_its_entry_replaces_its_records_only():
    records = [
        Spent("2026-11-23", Decimal("0.5")),
        Spent("2026-11-24", Decimal("0.25")),
        Spent("2026-11-24", Decimal("0.75")),
        Spent("2026-11-25", Decimal("2")),
    ]
    rolled = [entry("grant", "10"), entry("usage_daily", "-1", date="2026-11-24")]
    # 10 - 1 (the 24th's entry) - 0.5 (the 23rd's record) - 2 (today's record)
    assert ledger_total(rolled, records) == Decimal("6.5")
    assert ledger_total(rolled[:1], records) == Decimal("6.5")  # the same money either way


def test_given_a_hold_in_flight_when_reconciled_then_balance_plus_held_meets_the_ledger():
    found = reconcile(
        "org_x",
        OrgMoney(Decimal("8.3"), Decimal("0.7")),
        [entry("grant", "10")],
        [Spent("2026-11-25", Decimal("1"))],
    )
    assert found.difference_usd == 0
    assert found.show() == {
        "org_id": "org_x",
        "balance_usd": "8.300000",
        "held_usd": "0.700000",
        "ledger_usd": "9.000000",
        "difference_usd": "0.000000",
    }
    short = reconcile("org_x", OrgMoney(Decimal("8.3"), Decimal(0)), [entry("grant", "10")], [])
    assert short.show()["difference_usd"] == "-1.700000"


def test_given_a_start_time_near_midnight_when_dated_then_the_utc_day():
    east = timezone(timedelta(hours=8))
    assert usage_day(datetime(2026, 11, 25, 7, 59, tzinfo=east)) == "2026-11-24"
    assert usage_day(datetime(2026, 11, 24, 23, 59, 59, 999000, tzinfo=UTC)) == "2026-11-24"
