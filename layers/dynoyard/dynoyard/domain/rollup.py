"""Daily roll-ups of usage records: per organization, per key and per model, one UTC day at
a time (the cleanup job's roll-up step writes them; `dynoyard usage daily` and the console's
`/usage/daily` read them for the days rolled up and total the records for the others).

A day is rolled up once it is closed: CLOSE_AFTER past its end, when no request started on
it can still be settling (the stream deadline, 870 s, plus the settle's retries, fit well
inside). An aggregate holds counts, tokens, cost (exact Decimal) and latency percentiles:
no IP address, no error text, nothing a client sent but the model's name. Aggregates are
kept KEEP_DAYS (DynamoDB TTL), long past the records' 90 days.

Latency p50/p95 are exact (nearest rank: the ceil(p/100 * n)-th smallest latency) over the
day's records of the organization, which the step holds in memory one organization-day at
a time: about 100 bytes a record, so a million requests an org-day stay near 100 MB.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from dynoyard.domain.billing import Movement
from dynoyard.domain.money import ZERO, format_usd
from dynoyard.domain.reconcile import usage_day
from dynoyard.domain.usage import DAILY_FIELDS, UsageRecord, daily_totals

CLOSE_AFTER = timedelta(minutes=20)
KEEP_DAYS = 400

ORG_SCOPE = "ORG"
KEY_SCOPE = "KEY"
MODEL_SCOPE = "MODEL"


def last_closed_day(now: float) -> date:
    """The latest UTC day whose records can no longer change."""
    return (datetime.fromtimestamp(now, UTC) - CLOSE_AFTER).date() - timedelta(days=1)


def percentile(sorted_values: list[int], p: int) -> int:
    """Nearest rank: the ceil(p/100 * n)-th smallest value (0 for none)."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(p * len(sorted_values) / 100))
    return sorted_values[rank - 1]


@dataclass
class DailyAggregate:
    day: str  # YYYY-MM-DD
    scope: str  # ORG_SCOPE, KEY_SCOPE or MODEL_SCOPE
    name: str  # the key id or the model ("" for the organization)
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = ZERO
    errors: int = 0
    cache_hits: int = 0
    latency_p50_ms: int = 0
    latency_p95_ms: int = 0
    _latencies: list[int] = field(default_factory=list, repr=False)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, record: UsageRecord) -> None:
        self.requests += 1
        self.prompt_tokens += record.prompt_tokens
        self.completion_tokens += record.completion_tokens
        self.cost_usd += record.cost_usd
        self.errors += 1 if record.status >= 400 else 0
        self.cache_hits += 1 if record.cached else 0
        self._latencies.append(record.latency_ms)

    def close(self) -> DailyAggregate:
        ordered = sorted(self._latencies)
        self.latency_p50_ms = percentile(ordered, 50)
        self.latency_p95_ms = percentile(ordered, 95)
        self._latencies = []
        return self

    def fields(self) -> dict[str, Any]:
        """What is stored: the figures, nothing about any one request."""
        return {
            "date": self.day,
            "scope": self.scope,
            "name": self.name,
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cost_usd": self.cost_usd,
            "errors": self.errors,
            "cache_hits": self.cache_hits,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p95_ms": self.latency_p95_ms,
        }

    def daily_line(self) -> dict[str, Any]:
        """A model's aggregate as `usage daily` prints it (domain/usage.py DAILY_FIELDS)."""
        line = {"date": self.day, "model": self.name} | {
            name: getattr(self, name) for name in DAILY_FIELDS if name not in ("date", "model")
        }
        return line | {"cost_usd": format_usd(self.cost_usd)}


def aggregate_day(day: str, records: Iterable[UsageRecord]) -> list[DailyAggregate]:
    """The organization's, each key's and each model's aggregate of one day's records."""
    org = DailyAggregate(day, ORG_SCOPE, "")
    keys: dict[str, DailyAggregate] = {}
    models: dict[str, DailyAggregate] = {}
    for record in records:
        if usage_day(record.started_at) != day:
            raise ValueError("a record of another day")
        org.add(record)
        keys.setdefault(record.key_id, DailyAggregate(day, KEY_SCOPE, record.key_id)).add(record)
        models.setdefault(record.model, DailyAggregate(day, MODEL_SCOPE, record.model)).add(record)
    return [a.close() for a in [org, *keys.values(), *models.values()]]


def day_end(day: str) -> str:
    """The last millisecond of the day, as the ledger writes times."""
    return f"{day}T23:59:59.999+00:00"


def usage_daily_movement(org_id: str, day: str, cost_usd: Decimal) -> Movement:
    """The ledger's entry for a rolled-up day: the day's spending, which the hot path
    already took from the balance (so applying it moves no balance: billing_store.py);
    its id makes it count once however often the day is rolled up."""
    return Movement(
        movement_id=f"usage_daily:{org_id}:{day}",
        org_id=org_id,
        kind="usage_daily",
        amount_usd=-cost_usd,
        at=day_end(day),
        date=day,
    )


def rolled_window(start: datetime, end: datetime, through: str | None) -> tuple[str, str] | None:
    """The whole UTC days of [start, end) that are rolled up (up to `through`), first and
    last, or None: their lines come from the aggregates, every other moment's from the
    records."""
    if through is None:
        return None
    first = start.astimezone(UTC).date()
    if datetime(first.year, first.month, first.day, tzinfo=UTC) < start:
        first += timedelta(days=1)
    last = end.astimezone(UTC).date() - timedelta(days=1)  # whole days end by `end`
    last = min(last, date.fromisoformat(through))
    return (first.isoformat(), last.isoformat()) if first <= last else None


def midnight(day: str) -> datetime:
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC)


class DailyReads(Protocol):
    async def rolled_through(self, org_id: str) -> str | None: ...

    async def aggregates(
        self, org_id: str, first_day: str, last_day: str, scope: str = MODEL_SCOPE
    ) -> list[DailyAggregate]: ...

    async def usage_between(
        self, org_id: str, since: datetime, until: datetime, cap: int
    ) -> list[UsageRecord]: ...


async def daily_usage(
    reads: DailyReads, org_id: str, start: datetime, end: datetime, records_cap: int
) -> list[dict[str, Any]]:
    """One line per UTC day and model of [start, end) (`usage daily`'s and the console's):
    the rolled-up days from their aggregates, every other moment (today, a day not rolled
    up yet, a partial day at either end) totalled from its records; the totals equal the
    records'."""
    window = rolled_window(start, end, await reads.rolled_through(org_id))
    lines: list[dict[str, Any]] = []
    spans = [(start, end)]
    if window is not None:
        first, last = window
        lines = [a.daily_line() for a in await reads.aggregates(org_id, first, last)]
        spans = [(start, midnight(first)), (midnight(last) + timedelta(days=1), end)]
    records: list[UsageRecord] = []
    for since, until in spans:
        if since < until:
            records += await reads.usage_between(org_id, since, until, records_cap)
    return sorted(lines + daily_totals(records), key=lambda line: (line["date"], line["model"]))
