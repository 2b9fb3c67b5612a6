"""The hot path: the key item authentication reads, the hold and the settle.

The hot path makes at most three round trips: GetItem on the key (usually cached in
process), one conditional UpdateItem for the hold, one TransactWriteItems for the settle.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from dynoyard.adapters.dynamo.client import DynamoClient, DynamoError
from dynoyard.adapters.dynamo.codec import num, org_key, plain
from dynoyard.adapters.dynamo.usage import usage_item
from dynoyard.domain.keys import ApiKey
from dynoyard.domain.ports import InsufficientBalance, RateLimited
from dynoyard.domain.usage import UsageRecord


class HotPath:
    """Implements the KeyStore and Ledger ports."""

    _db: DynamoClient
    accounts_table: str
    usage_table: str

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

    async def hold(self, org_id: str, amount: Decimal) -> None:
        """One conditional write takes the hold and counts the request in this minute's
        window (`rpm_<minute>`, the previous window removed), refused past the org's
        `rate_limit_rpm`: the rate limit costs no extra round trip."""
        now = time.time()
        minute = int(now // 60)
        try:
            await self._db.call(
                "UpdateItem",
                {
                    "TableName": self.accounts_table,
                    "Key": org_key(org_id),
                    "UpdateExpression": (
                        "SET balance_usd = balance_usd - :amount ADD #now :one REMOVE #before"
                    ),
                    "ConditionExpression": (
                        "balance_usd >= :amount AND (attribute_not_exists(rate_limit_rpm)"
                        " OR attribute_not_exists(#now) OR #now < rate_limit_rpm)"
                    ),
                    "ExpressionAttributeNames": {
                        "#now": f"rpm_{minute}",
                        "#before": f"rpm_{minute - 1}",
                    },
                    "ExpressionAttributeValues": {":amount": num(amount), ":one": num(1)},
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                },
                idempotent=False,  # a lost answer must not take the hold twice
            )
        except DynamoError as error:
            if not error.condition_failed:
                raise
            item = plain(error.body.get("Item") or {})
            limit, used = item.get("rate_limit_rpm"), item.get(f"rpm_{minute}", 0)
            if limit is not None and used >= limit and item.get("balance_usd", 0) >= amount:
                raise RateLimited(retry_after_seconds=60 - int(now % 60)) from None
            raise InsufficientBalance(org_id) from None

    async def settle(self, record: UsageRecord, held: Decimal) -> None:
        put = {
            "TableName": self.usage_table,
            "Item": usage_item(record),
            # The request id is in the sort key: a second settle of it changes nothing.
            "ConditionExpression": "attribute_not_exists(pk)",
        }
        refund = held - record.cost_usd
        try:
            if refund == 0:
                await self._db.call("PutItem", put)
                return
            refund_update = {
                "TableName": self.accounts_table,
                "Key": org_key(record.org_id),
                "UpdateExpression": "ADD balance_usd :refund",
                "ExpressionAttributeValues": {":refund": num(refund)},
            }
            await self._db.call(
                "TransactWriteItems", {"TransactItems": [{"Update": refund_update}, {"Put": put}]}
            )
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
