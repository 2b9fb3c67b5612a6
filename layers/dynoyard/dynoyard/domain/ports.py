"""What the domain needs from the outside world; adapters implement these."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, Protocol

from dynoyard.domain.catalog import Provider
from dynoyard.domain.keys import ApiKey
from dynoyard.domain.limits import LimitKind
from dynoyard.domain.usage import UsageRecord


@dataclass(frozen=True, slots=True)
class LimitState:
    """Where one rate limit stands after a request counted against it (OpenAI's
    x-ratelimit-* headers)."""

    kind: Literal["requests", "tokens"]
    limit: int
    remaining: int
    reset_seconds: int


@dataclass(frozen=True, slots=True)
class KeyCharge:
    """What a hold counted against a key's own limits, for the settle to give back what
    the request did not use (and, once an hour, to mark the key used)."""

    key_hash: str  # the item holding the limits' counters (a rotated key: its first key's)
    taken_at: float  # epoch seconds: the windows the hold counted in
    amount: Decimal  # against the daily and monthly spend caps
    tokens: int  # against the tokens-per-minute limit
    kinds: frozenset[LimitKind]  # the limits counted, of which the refunded ones get back
    # The key item whose `last_used_hour` the settle sets to taken_at's hour (None: it says
    # this hour already): a SET in a write the settle makes anyway, never a round trip.
    mark_used: str | None = None


@dataclass(frozen=True, slots=True)
class Hold:
    """A hold taken, and what the organization's item said as it was taken."""

    amount: Decimal
    cache_ttl_seconds: int | None = None  # the org's opt-in response cache; None: off
    limits: tuple[LimitState, ...] = ()
    key_charge: KeyCharge | None = None
    # For the alerts (domain/alerts.py), as the hold's write answered: no extra read.
    balance_after: Decimal | None = None  # the org's balance once this hold was taken
    low_balance_usd: Decimal | None = None  # the low-balance threshold; None: no alert
    low_balance_state: str | None = None  # "armed" (or absent), "due" or "sent"
    recharge_usd: Decimal | None = None  # auto-recharge's threshold when it is on
    recharge_state: str | None = None  # "armed" (or absent), "due", "sent" or "failed"
    # The hold is also on the org item as `hold_<request id>` with its expiry, so a hold
    # whose settle never comes is returned (dynoyard/maintenance/stranded_holds.py).
    recorded: bool = False


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """An answer to keep in the organization's response cache (only for orgs that opted
    in), written with the settle."""

    org_id: str
    request_hash: str
    answer: bytes
    expires_at: int  # epoch seconds


class SpendCapReached(Exception):
    """A key's daily or monthly spend cap can not cover the request until the window ends."""

    def __init__(self, cap: LimitKind, retry_after_seconds: int) -> None:
        super().__init__(cap)
        self.cap = cap
        self.retry_after_seconds = retry_after_seconds


class InsufficientBalance(Exception):
    """The organization's balance can not cover the hold."""


class OrgClosed(Exception):
    """The organization is closed (its last owner deleted the account): no hold is taken."""


class RateLimited(Exception):
    """A rate limit or spend cap refuses the request until `retry_after_seconds`."""

    def __init__(
        self,
        retry_after_seconds: int,
        state: LimitState | None = None,
        message: str = "Rate limit reached for requests per minute.",
    ) -> None:
        super().__init__(retry_after_seconds)
        self.retry_after_seconds = retry_after_seconds
        self.state = state
        self.message = message


class StoreUnavailable(Exception):
    """The gateway's own data store did not answer, or stayed in conflict, after its
    retries."""


class SecretUnavailable(Exception):
    """A secret the service needs (provider keys, the console's or Stripe's credentials)
    could not be read: a temporary failure to answer 503, never a 500."""


class UpstreamTimeout(Exception):
    """The upstream did not answer (or stopped sending) within the read timeout."""


class UpstreamUnavailable(Exception):
    """The upstream could not be reached, reset the connection or broke the protocol."""


class KeyStore(Protocol):
    async def find_key(self, key_hash: str) -> ApiKey | None: ...


class Ledger(Protocol):
    async def hold(
        self,
        org_id: str,
        amount: Decimal,
        key: ApiKey | None = None,
        tokens: int = 0,
        request_id: str | None = None,
        returnable_after: float = 0.0,
    ) -> Hold:
        """Take `amount` from the balance if it stays >= 0 (else InsufficientBalance) and
        add it to the org's `held_usd` in the same write, refuse a closed organization
        (OrgClosed), and count the request against the organization's and the key's limits
        and caps (else RateLimited); no extra round trip for a key without limits. With a
        `request_id`, the same write records the hold, returnable `returnable_after`
        seconds from now if no settle has come by then (`Hold.recorded`)."""

    async def settle(
        self,
        record: UsageRecord,
        held: Decimal,
        key_charge: KeyCharge | None = None,
        cache_entry: CacheEntry | None = None,
        recorded: bool = False,
    ) -> None:
        """Return `held - record.cost_usd` to the balance and take `held` off `held_usd`
        (and what the key's caps held beyond what was used), store the record and the cache
        entry, atomically and at most once per request id. A `recorded` hold already
        returned as stranded is not returned again: only the cost is charged."""


class AlertMarks(Protocol):
    """The alerts' marks on an organization (adapters/dynamo/alerts_store.py)."""

    async def mark_alert_due(self, org_id: str, kind: str) -> bool:
        """Sets the org's `<kind>_state` to "due" unless it is already due, sent or failed,
        with the alert's marker, in one transaction: True for the one write that won."""

    async def rearm_alert(self, org_id: str, kind: str) -> bool:
        """Sets the state back to "armed" if the balance is at or above the kind's
        threshold (a credit lifted it): True if it was re-armed now."""


class UpstreamResponse(Protocol):
    status: int
    # Seconds the upstream asked to wait before a retry (`retry-after`), None if it did not.
    retry_after: float | None

    def iter_bytes(self) -> AsyncIterator[bytes]: ...

    async def read(self, limit: int) -> bytes: ...

    async def close(self) -> None: ...


class Upstream(Protocol):
    async def send(
        self, provider: Provider, path: str, body: bytes, stream: bool, seconds_left: float
    ) -> UpstreamResponse:
        """`seconds_left`: seconds the whole exchange may take, reading the answer included
        (UpstreamTimeout past it): what is left of the request's deadline."""


class Observer(Protocol):
    def request_finished(self, record: UsageRecord) -> None: ...

    def settle_failed(self, record: UsageRecord, error: Exception) -> None:
        """The hold could not be settled: an operator must reconcile this request."""

    def hold_exceeded(self, record: UsageRecord, held: Decimal) -> None:
        """The upstream charged more than the hold (it ignored the output limit)."""
