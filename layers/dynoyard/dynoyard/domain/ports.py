"""What the domain needs from the outside world; adapters implement these."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Protocol

from dynoyard.domain.catalog import Provider
from dynoyard.domain.keys import ApiKey
from dynoyard.domain.usage import UsageRecord


class InsufficientBalance(Exception):
    """The organization's balance can not cover the hold."""


class RateLimited(Exception):
    """The organization has made its requests-per-minute allowance this minute."""

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(retry_after_seconds)
        self.retry_after_seconds = retry_after_seconds


class StoreUnavailable(Exception):
    """The gateway's own data store did not answer, or stayed in conflict, after its
    retries."""


class UpstreamTimeout(Exception):
    """The upstream did not answer (or stopped sending) within the read timeout."""


class UpstreamUnavailable(Exception):
    """The upstream could not be reached, reset the connection or broke the protocol."""


class KeyStore(Protocol):
    async def find_key(self, key_hash: str) -> ApiKey | None: ...


class Ledger(Protocol):
    async def hold(self, org_id: str, amount: Decimal) -> None:
        """Take `amount` from the balance if it stays >= 0 (else InsufficientBalance), and count
        the request against the organization's per-minute limit (else RateLimited)."""

    async def settle(self, record: UsageRecord, held: Decimal) -> None:
        """Return `held - record.cost_usd` to the balance and store the record, atomically and
        at most once per request id."""


class UpstreamResponse(Protocol):
    status: int

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
