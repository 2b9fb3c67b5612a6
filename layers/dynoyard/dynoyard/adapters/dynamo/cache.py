"""The opt-in response cache of each organization: CACHE_TABLE, one item per answer,
pk = ORG#<org_id>, sk = <request hash>, expiring by DynamoDB TTL (`expires_at`).

Entries are written by the settle, in its transaction (`cache_item`); read with one GetItem
on a hit path (eventually consistent: an answer written a moment ago may be missed once,
which costs an upstream call, never a wrong answer); and deleted all at once when the
organization turns its cache off (`clear_cache`: a Query on its partition, then
BatchWriteItem)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

from dynoyard.adapters.dynamo.client import DynamoClient
from dynoyard.domain.ports import CacheEntry, StoreUnavailable

BATCH_DELETES = 25  # BatchWriteItem's limit
BATCH_ATTEMPTS = 8  # for the items DynamoDB leaves unprocessed (throttling)


def cache_key(org_id: str, request_hash: str) -> dict[str, Any]:
    return {"pk": {"S": f"ORG#{org_id}"}, "sk": {"S": request_hash}}


def cache_item(entry: CacheEntry) -> dict[str, Any]:
    return {
        **cache_key(entry.org_id, entry.request_hash),
        "answer": {"B": base64.b64encode(entry.answer).decode()},
        "expires_at": {"N": str(entry.expires_at)},
    }


class CacheTable:
    """Implements the domain's ResponseCache port, and the clearing the operator's
    `org set --cache off` does."""

    _db: DynamoClient
    _clock: Callable[[], float]  # epoch seconds; tests pass a fake clock
    cache_table: str

    async def cached_answer(self, org_id: str, request_hash: str) -> bytes | None:
        answer = await self._db.call(
            "GetItem",
            {
                "TableName": self.cache_table,
                "Key": cache_key(org_id, request_hash),
                "ProjectionExpression": "answer, expires_at",
            },
        )
        item = answer.get("Item")
        if not item or "answer" not in item:
            return None
        # DynamoDB's TTL deletes up to days late: an expired entry is never served.
        if int(item.get("expires_at", {}).get("N", "0")) <= self._clock():
            return None
        return base64.b64decode(item["answer"]["B"])

    async def clear_cache(self, org_id: str) -> int:
        """Deletes every entry of the organization; how many there were."""
        params: dict[str, Any] = {
            "TableName": self.cache_table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": f"ORG#{org_id}"}},
            "ProjectionExpression": "pk, sk",
            "ConsistentRead": True,
        }
        deleted = 0
        while True:
            page = await self._db.call("Query", params)
            keys = [{"pk": item["pk"], "sk": item["sk"]} for item in page.get("Items", [])]
            for start in range(0, len(keys), BATCH_DELETES):
                await self._delete(keys[start : start + BATCH_DELETES])
            deleted += len(keys)
            if "LastEvaluatedKey" not in page:
                return deleted
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def _delete(self, keys: list[dict[str, Any]]) -> None:
        requests = [{"DeleteRequest": {"Key": key}} for key in keys]
        for attempt in range(BATCH_ATTEMPTS):
            answer = await self._db.call(
                "BatchWriteItem", {"RequestItems": {self.cache_table: requests}}
            )
            requests = (answer.get("UnprocessedItems") or {}).get(self.cache_table) or []
            if not requests:
                return
            await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
        raise StoreUnavailable("the cache entries could not all be deleted; run it again")
