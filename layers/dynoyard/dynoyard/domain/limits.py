"""A key's own limits: requests and tokens per minute, spend per UTC day and per UTC month.

Each limit is a fixed window. A request counts against every limit its key has when its
hold is taken: 1 request, the hold's token bound, the hold's amount in USD. The settle
gives back what the request did not use (tokens and money; a request stays counted). So a
cap can not be overrun by concurrent requests: the same hold-then-settle discipline as the
balance. Windows are UTC: a minute, a day, a calendar month.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from dynoyard.domain.money import parse_usd

LimitKind = Literal["rpm", "tpm", "daily_usd", "monthly_usd"]
# What the settle gives back to each kind: tokens or money the request did not use.
REFUNDED_KINDS: frozenset[LimitKind] = frozenset({"tpm", "daily_usd", "monthly_usd"})
MAX_RATE = 10_000_000  # per minute, requests or tokens
MAX_SPEND_USD = Decimal(1_000_000)


class InvalidLimit(ValueError):
    """A limit that can not be set; the message says which and why."""


@dataclass(frozen=True, slots=True)
class KeyLimits:
    rpm: int | None = None
    tpm: int | None = None
    daily_usd: Decimal | None = None
    monthly_usd: Decimal | None = None

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.rpm, self.tpm, self.daily_usd, self.monthly_usd))

    def show(self) -> dict[str, object]:
        return {
            "rpm": self.rpm,
            "tpm": self.tpm,
            "daily_usd": str(self.daily_usd) if self.daily_usd is not None else None,
            "monthly_usd": str(self.monthly_usd) if self.monthly_usd is not None else None,
        }


def key_limits(
    rpm: int | None = None,
    tpm: int | None = None,
    daily_usd: str | Decimal | None = None,
    monthly_usd: str | Decimal | None = None,
) -> KeyLimits:
    """Validated limits: whole numbers of requests or tokens, decimal USD, all positive."""
    for name, rate in (("rpm", rpm), ("tpm", tpm)):
        if rate is not None and (
            isinstance(rate, bool) or not isinstance(rate, int) or not 1 <= rate <= MAX_RATE
        ):
            raise InvalidLimit(f"{name} must be a whole number from 1 to {MAX_RATE}")
    caps: list[Decimal | None] = []
    for name, amount in (("daily_usd", daily_usd), ("monthly_usd", monthly_usd)):
        if amount is None:
            caps.append(None)
            continue
        try:
            value = parse_usd(amount)
        except ValueError as exc:
            raise InvalidLimit(f"{name}: {exc}") from None
        if not Decimal(0) < value <= MAX_SPEND_USD:
            raise InvalidLimit(f"{name} must be more than 0 and at most {MAX_SPEND_USD}")
        caps.append(value)
    return KeyLimits(rpm, tpm, caps[0], caps[1])


@dataclass(frozen=True, slots=True)
class Counter:
    """One limit a request counts against: in `window`, take `amount` of `limit`."""

    kind: LimitKind
    window: int
    amount: Decimal
    limit: Decimal
    reset_seconds: int


def window_of(kind: LimitKind, now: float) -> int:
    if kind in ("rpm", "tpm"):
        return int(now // 60)
    if kind == "daily_usd":
        return int(now // 86_400)
    moment = datetime.fromtimestamp(now, UTC)
    return moment.year * 12 + moment.month - 1


def seconds_to_reset(kind: LimitKind, now: float) -> int:
    if kind in ("rpm", "tpm"):
        return 60 - int(now % 60)
    if kind == "daily_usd":
        return 86_400 - int(now % 86_400)
    moment = datetime.fromtimestamp(now, UTC)
    year, month = divmod(moment.year * 12 + moment.month, 12)  # the next month
    start = datetime(year, month + 1, 1, tzinfo=UTC)
    return max(int(start.timestamp() - now), 1)


def counters_for(limits: KeyLimits, now: float, tokens: int, amount: Decimal) -> list[Counter]:
    """The counters a request with this token bound and hold counts against."""
    wanted: list[tuple[LimitKind, Decimal | int | None, Decimal]] = [
        ("rpm", limits.rpm, Decimal(1)),
        ("tpm", limits.tpm, Decimal(tokens)),
        ("daily_usd", limits.daily_usd, amount),
        ("monthly_usd", limits.monthly_usd, amount),
    ]
    return [
        Counter(kind, window_of(kind, now), take, Decimal(limit), seconds_to_reset(kind, now))
        for kind, limit, take in wanted
        if limit is not None
    ]
