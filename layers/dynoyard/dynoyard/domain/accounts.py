"""Organizations and their settings."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from dynoyard.domain.money import format_usd

# The response cache holds answers transiently (the privacy policy's "short TTL"): from a
# minute to a day, half an hour unless the organization says otherwise.
DEFAULT_CACHE_TTL_SECONDS = 1800
MIN_CACHE_TTL_SECONDS = 60
MAX_CACHE_TTL_SECONDS = 86_400


class InvalidSetting(ValueError):
    """An organization setting out of its documented range."""


def check_cache_ttl(seconds: int) -> int:
    """The cache TTL if it is within MIN_CACHE_TTL_SECONDS..MAX_CACHE_TTL_SECONDS."""
    if not MIN_CACHE_TTL_SECONDS <= seconds <= MAX_CACHE_TTL_SECONDS:
        raise InvalidSetting(
            f"the cache TTL must be between {MIN_CACHE_TTL_SECONDS} and"
            f" {MAX_CACHE_TTL_SECONDS:,} seconds (1 minute to 1 day), not {seconds}"
        )
    return seconds


@dataclass(frozen=True, slots=True)
class Org:
    org_id: str
    name: str
    email: str
    balance_usd: Decimal
    cache_enabled: bool = False
    cache_ttl_seconds: int = DEFAULT_CACHE_TTL_SECONDS
    rate_limit_rpm: int | None = None  # requests per minute for the whole organization

    def show(self) -> dict[str, Any]:
        return {
            "org_id": self.org_id,
            "name": self.name,
            "balance_usd": format_usd(self.balance_usd),
            "settings": {
                "cache_enabled": self.cache_enabled,
                "cache_ttl_seconds": self.cache_ttl_seconds,
                "rate_limit_rpm": self.rate_limit_rpm,
            },
        }


class UnknownOrg(LookupError):
    """No organization has that id."""


class UnknownKey(LookupError):
    """No API key has that id."""
