"""Organizations and their settings."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Any, Literal

from dynoyard.domain.money import format_usd

# The response cache holds answers transiently (the privacy policy's "short TTL"): from a
# minute to a day, half an hour unless the organization says otherwise.
DEFAULT_CACHE_TTL_SECONDS = 1800
MIN_CACHE_TTL_SECONDS = 60
MAX_CACHE_TTL_SECONDS = 86_400


# The low-balance alert: an email once the balance falls below this many USD (None: no
# alert). 0 to 1,000,000 USD, at most 6 decimal places (the ledger's micro-dollars).
MAX_LOW_BALANCE_USD = Decimal(1_000_000)
LOW_BALANCE_PLACES = 6
# A plain decimal string: no sign, exponent, NaN or Infinity, at most 6 decimal places.
_PLAIN_USD = re.compile(r"[0-9]{1,7}(\.[0-9]{1,6})?")


class InvalidSetting(ValueError):
    """An organization setting out of its documented range."""


class Unchanged(Enum):
    """A setting left as it is (where None means "remove it")."""

    UNCHANGED = "unchanged"


UNCHANGED: Literal[Unchanged.UNCHANGED] = Unchanged.UNCHANGED


def check_cache_ttl(seconds: int) -> int:
    """The cache TTL if it is within MIN_CACHE_TTL_SECONDS..MAX_CACHE_TTL_SECONDS."""
    if not MIN_CACHE_TTL_SECONDS <= seconds <= MAX_CACHE_TTL_SECONDS:
        raise InvalidSetting(
            f"the cache TTL must be between {MIN_CACHE_TTL_SECONDS} and"
            f" {MAX_CACHE_TTL_SECONDS:,} seconds (1 minute to 1 day), not {seconds}"
        )
    return seconds


def check_low_balance(amount: Decimal) -> Decimal:
    """The low-balance threshold if it is 0..MAX_LOW_BALANCE_USD with at most
    LOW_BALANCE_PLACES decimal places."""
    if isinstance(amount, bool) or not isinstance(amount, Decimal) or not amount.is_finite():
        raise InvalidSetting("the low-balance threshold must be a decimal amount of USD")
    if not 0 <= amount <= MAX_LOW_BALANCE_USD:
        raise InvalidSetting(
            f"the low-balance threshold must be 0 to {MAX_LOW_BALANCE_USD:,} USD, not {amount}"
        )
    if amount != amount.quantize(Decimal(1).scaleb(-LOW_BALANCE_PLACES)):
        raise InvalidSetting(
            f"the low-balance threshold has at most {LOW_BALANCE_PLACES} decimal places"
        )
    return amount


def parse_low_balance(text: str) -> Decimal:
    """The threshold from a plain decimal string such as "5" or "12.5"; refused: numbers
    with a sign, an exponent ("1e3"), NaN, Infinity, spaces or more than 6 decimals."""
    if not isinstance(text, str) or not _PLAIN_USD.fullmatch(text):
        raise InvalidSetting(
            "the low-balance threshold must be a plain decimal string of USD, such as"
            f' "5" or "12.50", with at most {LOW_BALANCE_PLACES} decimal places'
        )
    return check_low_balance(Decimal(text))


@dataclass(frozen=True, slots=True)
class Org:
    org_id: str
    name: str
    email: str
    balance_usd: Decimal
    cache_enabled: bool = False
    cache_ttl_seconds: int = DEFAULT_CACHE_TTL_SECONDS
    rate_limit_rpm: int | None = None  # requests per minute for the whole organization
    low_balance_usd: Decimal | None = None  # alert below this balance; None: no alert

    def show(self) -> dict[str, Any]:
        return {
            "org_id": self.org_id,
            "name": self.name,
            "balance_usd": format_usd(self.balance_usd),
            "settings": {
                "cache_enabled": self.cache_enabled,
                "cache_ttl_seconds": self.cache_ttl_seconds,
                "rate_limit_rpm": self.rate_limit_rpm,
                "low_balance_usd": (
                    format_usd(self.low_balance_usd) if self.low_balance_usd is not None else None
                ),
            },
        }


class UnknownOrg(LookupError):
    """No organization has that id."""


class UnknownKey(LookupError):
    """No API key has that id."""
