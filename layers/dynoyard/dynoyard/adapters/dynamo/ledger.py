"""The hot path: the key item authentication reads, the hold and the settle.

The hot path makes at most three round trips: GetItem on the key (usually cached in
process), one conditional UpdateItem for the hold, one TransactWriteItems for the settle.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from dynoyard.adapters.dynamo.cache import cache_item
from dynoyard.adapters.dynamo.client import DynamoClient, DynamoError
from dynoyard.adapters.dynamo.codec import num, org_key, plain
from dynoyard.adapters.dynamo.usage import usage_item
from dynoyard.domain.accounts import DEFAULT_CACHE_TTL_SECONDS
from dynoyard.domain.keys import ApiKey
from dynoyard.domain.ports import (
    CacheEntry,
    Hold,
    InsufficientBalance,
    KeyCharge,
    LimitState,
    RateLimited,
    StoreUnavailable,
)
from dynoyard.domain.usage import UsageRecord

# Tries of the hold when requests race to open a new minute's window.
HOLD_WINDOW_ATTEMPTS = 3


class HotPath:
    """Implements the KeyStore and Ledger ports."""

    _db: DynamoClient
    _clock: Callable[[], float]  # epoch seconds; tests pass a fake clock
    accounts_table: str
    usage_table: str
    cache_table: str

    async def find_key(self, key_hash: str) -> ApiKey | None:
        answer = await self._db.call(
            "GetItem",
            {
                "TableName": self.accounts_table,
                "Key": {"pk": {"S": f"KEY#{key_hash}"}, "sk": {"S": "KEY"}},
            },
        )
        item = answer.get("Item")
        return _api_key(plain(item)) if item else None

    async def hold(
        self, org_id: str, amount: Decimal, key: ApiKey | None = None, tokens: int = 0
    ) -> Hold:
        """One conditional write takes the hold and counts the request in the current
        minute's window, refused past the org's `rate_limit_rpm`: the rate limit costs no
        extra round trip, except for the first request of a new minute of a limited org,
        which opens the window with a second write. The window is two attributes,
        `rpm_minute` and `rpm_count`, so the item never grows with the org's age. The write
        answers with the org's item, so its settings (the cache) cost no read either."""
        if amount <= 0:
            raise ValueError("a hold is always positive")
        now = self._clock()
        minute = int(now // 60)
        for _ in range(HOLD_WINDOW_ATTEMPTS):
            taken, item = await self._hold_once(org_id, amount, minute, in_window=True)
            if taken:
                return _hold_from(item, amount, now)
            limit, balance = item.get("rate_limit_rpm"), item.get("balance_usd")
            if balance is None or balance < amount or limit is None:
                raise InsufficientBalance(org_id)
            if item.get("rpm_minute") == minute:
                reset = 60 - int(now % 60)
                raise RateLimited(reset, LimitState("requests", int(limit), 0, reset))
            # The window is an earlier minute's: open this minute's, unless another request
            # just did (then the first write is tried again).
            taken, item = await self._hold_once(org_id, amount, minute, in_window=False)
            if taken:
                return _hold_from(item, amount, now)
        raise StoreUnavailable("the rate-limit window kept moving")

    async def _hold_once(
        self, org_id: str, amount: Decimal, minute: int, in_window: bool
    ) -> tuple[bool, dict[str, Any]]:
        """(True, the item after the write) if the hold was taken; else (False, the item as
        it was), to tell why not."""
        if in_window:
            update = "SET balance_usd = balance_usd - :amount ADD rpm_count :one"
            condition = (
                "balance_usd >= :amount AND (attribute_not_exists(rate_limit_rpm)"
                " OR (rpm_minute = :minute AND rpm_count < rate_limit_rpm))"
            )
        else:
            update = (
                "SET balance_usd = balance_usd - :amount, rpm_minute = :minute, rpm_count = :one"
            )
            condition = (
                "balance_usd >= :amount AND (attribute_not_exists(rpm_minute)"
                " OR rpm_minute < :minute)"
            )
        try:
            answer = await self._db.call(
                "UpdateItem",
                {
                    "TableName": self.accounts_table,
                    "Key": org_key(org_id),
                    "UpdateExpression": update,
                    "ConditionExpression": condition,
                    "ExpressionAttributeValues": {
                        ":amount": num(amount),
                        ":one": num(1),
                        ":minute": num(minute),
                    },
                    "ReturnValues": "ALL_NEW",
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                },
                idempotent=False,  # a lost answer must not take the hold twice
            )
        except DynamoError as error:
            if not error.condition_failed:
                raise
            return False, plain(error.body.get("Item") or {})
        return True, plain(answer.get("Attributes") or {})

    async def settle(
        self,
        record: UsageRecord,
        held: Decimal,
        key_charge: KeyCharge | None = None,
        cache_entry: CacheEntry | None = None,
    ) -> None:
        put = {
            "TableName": self.usage_table,
            "Item": usage_item(record),
            # The request id is in the sort key: a second settle of it changes nothing.
            "ConditionExpression": "attribute_not_exists(pk)",
        }
        writes: list[dict[str, Any]] = [{"Put": put}]
        refund = held - record.cost_usd
        if refund:
            refund_update = {
                "TableName": self.accounts_table,
                "Key": org_key(record.org_id),
                "UpdateExpression": "ADD balance_usd :refund",
                "ExpressionAttributeValues": {":refund": num(refund)},
            }
            writes.append({"Update": refund_update})
        if cache_entry is not None:
            writes.append({"Put": {"TableName": self.cache_table, "Item": cache_item(cache_entry)}})
        try:
            if len(writes) == 1:
                await self._db.call("PutItem", put)
            else:
                await self._db.call("TransactWriteItems", {"TransactItems": writes})
        except DynamoError as error:
            if not error.condition_failed:
                raise
            # Already settled by an earlier attempt whose answer was lost.


def _api_key(item: dict[str, Any]) -> ApiKey:
    expires = item.get("key_expires_at")
    return ApiKey(
        key_id=str(item["key_id"]),
        org_id=str(item["org_id"]),
        name=str(item.get("name", "")),
        hint=str(item.get("hint", "")),
        models=frozenset(item.get("models") or ()),
        expires_at=int(expires) if expires is not None else None,
        revoked=bool(item.get("revoked", False)),
    )


def _hold_from(org: dict[str, Any], amount: Decimal, now: float) -> Hold:
    """The hold, with the org's settings as its item said after the write."""
    limits: tuple[LimitState, ...] = ()
    limit = org.get("rate_limit_rpm")
    if limit is not None:
        used = int(org.get("rpm_count", 0))
        limits = (
            LimitState("requests", int(limit), max(int(limit) - used, 0), 60 - int(now % 60)),
        )
    cache_on = bool(org.get("cache_enabled", False))
    ttl = int(org.get("cache_ttl_seconds", DEFAULT_CACHE_TTL_SECONDS))
    return Hold(amount=amount, cache_ttl_seconds=ttl if cache_on else None, limits=limits)
