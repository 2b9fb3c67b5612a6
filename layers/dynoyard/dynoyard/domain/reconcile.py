"""Reconciling an organization's balance with its ledger (`dynoyard billing reconcile`).

Every credit added or taken is a ledger entry (grants, top-ups, refunds, disputes,
recharges), and every request's cost is its usage record; the hold of a request in flight
sits in the org item's `held_usd` until its settle. So, to the unit:

    ledger_usd     = Σ ledger entries - Σ cost of the usage records not rolled up yet
    difference_usd = balance_usd + held_usd - ledger_usd          (0 when all is right)

Usage records are rolled up into one `usage_daily` entry per organization and UTC day (the
scheduled job, issue 10). The boundary is the day: a `usage_daily` entry for a date replaces
every record of that date, whose costs then no longer count one by one. The day of a record
is the UTC date of its start (`usage_day`, the one `daily_totals` groups by), so the job
must roll a day up only once no request started on it can still be settling (after the
longest deadline past midnight), and before the records' 90-day TTL removes them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from dynoyard.domain.billing import Entry, LedgerStore
from dynoyard.domain.money import ZERO, format_usd

# Reads of the org item around the reads of the ledger and the records, until both agree
# (nothing moved meanwhile); past this, the last reading is reported as it is.
STABLE_READ_ATTEMPTS = 5


@dataclass(frozen=True)
class OrgMoney:
    """What the org item says: the balance, and the holds in flight."""

    balance_usd: Decimal
    held_usd: Decimal


@dataclass(frozen=True)
class Spent:
    """A usage record as reconciling needs it: its UTC day and its cost."""

    day: str  # YYYY-MM-DD
    cost_usd: Decimal


@dataclass(frozen=True)
class Reconciliation:
    org_id: str
    balance_usd: Decimal
    held_usd: Decimal
    ledger_usd: Decimal
    stable: bool = True  # False: the org's money moved during every reading

    @property
    def difference_usd(self) -> Decimal:
        return self.balance_usd + self.held_usd - self.ledger_usd

    def show(self) -> dict[str, str]:
        """The CONTRACT's line (and the holds in flight), money as decimal strings."""
        return {
            "org_id": self.org_id,
            "balance_usd": format_usd(self.balance_usd),
            "held_usd": format_usd(self.held_usd),
            "ledger_usd": format_usd(self.ledger_usd),
            "difference_usd": format_usd(self.difference_usd),
        }


def usage_day(started_at: datetime) -> str:
    """The day a usage record counts in: the UTC date of its start."""
    return started_at.astimezone(UTC).date().isoformat()


def ledger_total(entries: Iterable[Entry], spent: Iterable[Spent]) -> Decimal:
    """Σ entries - Σ costs of the records whose day has no `usage_daily` entry yet."""
    entries = list(entries)
    rolled_up = {e.date for e in entries if e.kind == "usage_daily" and e.date}
    total = sum((e.amount_usd for e in entries), ZERO)
    return total - sum((s.cost_usd for s in spent if s.day not in rolled_up), ZERO)


def reconcile(
    org_id: str, money: OrgMoney, entries: Iterable[Entry], spent: Iterable[Spent]
) -> Reconciliation:
    return Reconciliation(org_id, money.balance_usd, money.held_usd, ledger_total(entries, spent))


class ReconcileReads(Protocol):
    async def org_money(self, org_id: str) -> OrgMoney:
        """The org item's balance and holds, read consistently (UnknownOrg if none)."""
        ...

    async def spent(self, org_id: str) -> list[Spent]:
        """Every usage record of the organization still stored, read consistently."""
        ...

    def org_ids(self) -> AsyncIterator[str]:
        """Every organization, a page at a time."""
        ...


async def reconcile_org(reads: ReconcileReads, ledger: LedgerStore, org_id: str) -> Reconciliation:
    """Reads the org item, the ledger and the records, then the org item again: every money
    movement writes the org item, so when both readings agree nothing moved in between
    and the figures belong together (else it reads again, up to STABLE_READ_ATTEMPTS)."""
    before = await reads.org_money(org_id)
    for attempt in range(1, STABLE_READ_ATTEMPTS + 1):
        entries = [entry async for entry in ledger.entries(org_id)]
        spent = await reads.spent(org_id)
        after = await reads.org_money(org_id)
        if after == before or attempt == STABLE_READ_ATTEMPTS:
            found = reconcile(org_id, after, entries, spent)
            return found if after == before else replace(found, stable=False)
        before = after
    raise AssertionError("unreachable")
