"""What the retention step (maintenance/retention.py) reads and deletes: items past their
retention that DynamoDB's TTL has not removed yet (it can lag by days).

- Accounts table: every item with a top-level `expires_at` (its TTL attribute) that has
  passed: sessions, sign-in links and their `EMAIL#…/LINK#…` pointers, OAuth sign-ins under
  way, invitations (all three items carry the same `expires_at`), rate-limit windows,
  unsubscribe links, audit entries (400 days). There is no index by expiry, so this is the
  one Scan: paginated (a page of SCAN_PAGE items, its cursor saved by the job), projected to
  the keys, filtered on `expires_at < now`, and run in full once a day. The same pages give
  the organizations (`ORG#…/META`), whose usage and cache partitions are then Queried.
- Usage table: an organization's records older than RETENTION_DAYS, by a Query on the sort
  key (`<start time>#<request>`), deleted by BatchWriteItem, only for days already rolled
  up (reconciliation counts a record's cost until its day's `usage_daily` entry exists).
- Cache table: an organization's answers past `expires_at` (Query with a filter: the sort
  key is a request hash, so this reads the organization's whole partition, once a round;
  an organization without the cache on costs one empty Query).

Every delete of an item that could be renewed (a session, a cache answer) is conditional on
`expires_at < now` still holding, so a session renewed meanwhile stays. Usage records never
change, so theirs are plain batch deletes: deleting one twice is a no-op.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from dynoyard.adapters.dynamo.billing_store import ledger_sort_key
from dynoyard.adapters.dynamo.client import DynamoClient, DynamoError
from dynoyard.domain.ports import StoreUnavailable
from dynoyard.domain.rollup import day_end, usage_daily_movement

if TYPE_CHECKING:
    from dynoyard.adapters.dynamo.store import DynamoStore

SCAN_PAGE = 500
# The accounts items that expire (template.yaml grants the cleanup DeleteItem on exactly
# these): sessions, sign-in links, address pointers (links, invitations), OAuth sign-ins,
# rate windows, invitations and audit entries (ORG#), invitation tokens, unsubscribe links
# and their user side, the gateway's failed-key counters. Anything else is left to the TTL.
EXPIRING_PREFIXES = (
    "SESSION#",
    "LINK#",
    "EMAIL#",
    "OAUTH#",
    "RATE#",
    "ORG#",
    "INVITE#",
    "UNSUB#",
    "USER#",
    "IP#",
)
BATCH_DELETES = 25  # BatchWriteItem's limit
BATCH_ATTEMPTS = 8  # for the items DynamoDB leaves unprocessed (throttling)
Key = dict[str, Any]


class RetentionStore:
    def __init__(
        self, client: DynamoClient, accounts_table: str, usage_table: str, cache_table: str
    ) -> None:
        self._db = client
        self.accounts_table = accounts_table
        self.usage_table = usage_table
        self.cache_table = cache_table

    @classmethod
    def of(cls, store: DynamoStore) -> RetentionStore:
        return cls(store._db, store.accounts_table, store.usage_table, store.cache_table)

    # -- the accounts table ------------------------------------------------------------

    async def accounts_page(
        self, cursor: str | None, now: int
    ) -> tuple[list[Key], list[str], str | None]:
        """One page of the Scan from `cursor`: the expired items' keys, the organizations
        met, and the next cursor (None at the end of the table)."""
        params: dict[str, Any] = {
            "TableName": self.accounts_table,
            "Limit": SCAN_PAGE,
            "ProjectionExpression": "pk, sk",
            "FilterExpression": "expires_at < :now OR (sk = :meta AND begins_with(pk, :org))",
            "ExpressionAttributeValues": {
                ":now": {"N": str(now)},
                ":meta": {"S": "META"},
                ":org": {"S": "ORG#"},
            },
        }
        if cursor:
            params["ExclusiveStartKey"] = _decoded(cursor)
        page = await self._db.call("Scan", params)
        expired: list[Key] = []
        orgs: list[str] = []
        for item in page.get("Items", []):
            pk, sk = item["pk"]["S"], item["sk"]["S"]
            if sk == "META" and pk.startswith("ORG#"):
                orgs.append(pk.removeprefix("ORG#"))
            elif pk.startswith(EXPIRING_PREFIXES):
                expired.append({"pk": item["pk"], "sk": item["sk"]})
        last = page.get("LastEvaluatedKey")
        return expired, orgs, json.dumps(last, sort_keys=True) if last else None

    async def delete_if_expired(self, table: str, key: Key, now: int) -> bool:
        """Deletes the item if its `expires_at` is still past; False when it is gone or was
        renewed meanwhile."""
        try:
            await self._db.call(
                "DeleteItem",
                {
                    "TableName": table,
                    "Key": key,
                    "ConditionExpression": "expires_at < :now",
                    "ExpressionAttributeValues": {":now": {"N": str(now)}},
                },
            )
        except DynamoError as error:
            if error.condition_failed:
                return False
            raise
        return True

    # -- usage records -----------------------------------------------------------------

    async def usage_before(self, org_id: str, cutoff: str) -> dict[str, tuple[list[Key], Decimal]]:
        """The organization's records that started before `cutoff` (ISO 8601 UTC), by day:
        their keys and their total cost."""
        params: dict[str, Any] = {
            "TableName": self.usage_table,
            "KeyConditionExpression": "pk = :pk AND sk < :cutoff",
            "ExpressionAttributeValues": {":pk": {"S": f"ORG#{org_id}"}, ":cutoff": {"S": cutoff}},
            "ProjectionExpression": "pk, sk, cost_usd",
        }
        keys: dict[str, list[Key]] = defaultdict(list)
        costs: dict[str, Decimal] = defaultdict(Decimal)
        while True:
            page = await self._db.call("Query", params)
            for item in page.get("Items", []):
                day = item["sk"]["S"][:10]
                keys[day].append({"pk": item["pk"], "sk": item["sk"]})
                costs[day] += Decimal(item.get("cost_usd", {}).get("N", "0"))
            if "LastEvaluatedKey" not in page:
                return {day: (keys[day], costs[day]) for day in keys}
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def rolled_up(self, org_id: str, day: str, cost: Decimal) -> bool:
        """The day has its organization aggregate (`DAILY#<org>` / `<day>#ORG`, the usage
        reads) and, unless it cost nothing, its ledger `usage_daily` entry (reconciliation)."""
        aggregate = self._exists(self.usage_table, f"DAILY#{org_id}", f"{day}#ORG")
        movement = usage_daily_movement(org_id, day, cost).movement_id
        ledger = self._exists(
            self.accounts_table, f"ORG#{org_id}", ledger_sort_key(day_end(day), movement)
        )
        has_aggregate, has_entry = await asyncio.gather(aggregate, ledger)
        return has_aggregate and (has_entry or cost == 0)

    async def _exists(self, table: str, pk: str, sk: str) -> bool:
        answer = await self._db.call(
            "GetItem",
            {
                "TableName": table,
                "Key": {"pk": {"S": pk}, "sk": {"S": sk}},
                "ConsistentRead": True,
                "ProjectionExpression": "pk",
            },
        )
        return bool(answer.get("Item"))

    async def delete_batch(self, table: str, keys: list[Key]) -> None:
        """Unconditional deletes, 25 at a time, retrying what DynamoDB leaves unprocessed."""
        for start in range(0, len(keys), BATCH_DELETES):
            requests = {
                table: [{"DeleteRequest": {"Key": k}} for k in keys[start : start + BATCH_DELETES]]
            }
            for attempt in range(BATCH_ATTEMPTS):
                answer = await self._db.call("BatchWriteItem", {"RequestItems": requests})
                requests = answer.get("UnprocessedItems") or {}
                if not requests:
                    break
                await asyncio.sleep(min(0.05 * 2**attempt, 2.0))
            else:
                raise StoreUnavailable("BatchWriteItem left items unprocessed")

    # -- cache entries -----------------------------------------------------------------

    async def expired_cache(self, org_id: str, now: int) -> list[Key]:
        params: dict[str, Any] = {
            "TableName": self.cache_table,
            "KeyConditionExpression": "pk = :pk",
            "FilterExpression": "expires_at < :now",
            "ExpressionAttributeValues": {":pk": {"S": f"ORG#{org_id}"}, ":now": {"N": str(now)}},
            "ProjectionExpression": "pk, sk",
        }
        found: list[Key] = []
        while True:
            page = await self._db.call("Query", params)
            found.extend({"pk": i["pk"], "sk": i["sk"]} for i in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return found
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _decoded(cursor: str) -> Key:
    """A cursor this store wrote (the Scan's LastEvaluatedKey, as JSON)."""
    key = json.loads(cursor)
    if not isinstance(key, dict) or set(key) != {"pk", "sk"}:
        raise ValueError("not a retention cursor")
    return key
