"""Daily roll-ups (domain/rollup.py) in the usage table, beside the records:

  DAILY#<org_id> / <date>#ORG              the organization's day
  DAILY#<org_id> / <date>#KEY#<key_id>     one key's day
  DAILY#<org_id> / <date>#MODEL#<model>    one model's day
  DAILY#<org_id> / ROLLED                  through: the last day rolled up (every day up
                                           to it that has records has its aggregates)

Each aggregate is a whole PutItem of figures computed from the day's records, so writing
it again (a rerun, a concurrent run) writes the same numbers. `expires_at` keeps it
KEEP_DAYS after its day. `through` only moves forward (a conditional update).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal
from typing import Any

from dynoyard.adapters.dynamo.client import DynamoError
from dynoyard.adapters.dynamo.codec import plain, typed
from dynoyard.adapters.dynamo.usage import UsageRecords, usage_record
from dynoyard.domain.rollup import KEEP_DAYS, MODEL_SCOPE, DailyAggregate, midnight
from dynoyard.domain.usage import UsageRecord

ROLLED = "ROLLED"
READ_PAGE = 1000
PARALLEL_PUTS = 8


class RollupItems(UsageRecords):
    """Part of DynamoStore (adapters/dynamo/__init__.py), on its client and tables."""

    async def usage_between(
        self, org_id: str, since: datetime, until: datetime, cap: int
    ) -> list[UsageRecord]:
        """The records of [since, until), oldest first, read a page at a time, at most
        about `cap` (the last page may pass it)."""
        records, cursor = await self.usage_page(org_id, since, until, READ_PAGE)
        while cursor is not None and len(records) < cap:
            more, cursor = await self.usage_page(org_id, since, until, READ_PAGE, cursor)
            records += more
        return records

    async def rolled_through(self, org_id: str) -> str | None:
        answer = await self._db.call(
            "GetItem",
            {
                "TableName": self.usage_table,
                "Key": typed({"pk": f"DAILY#{org_id}", "sk": ROLLED}),
                "ConsistentRead": True,
            },
        )
        item = plain(answer.get("Item") or {})
        return str(item["through"]) if "through" in item else None

    async def mark_rolled(self, org_id: str, day: str) -> None:
        try:
            await self._db.call(
                "UpdateItem",
                {
                    "TableName": self.usage_table,
                    "Key": typed({"pk": f"DAILY#{org_id}", "sk": ROLLED}),
                    "UpdateExpression": "SET through = :day",
                    "ConditionExpression": "attribute_not_exists(through) OR through < :day",
                    "ExpressionAttributeValues": typed({":day": day}),
                },
            )
        except DynamoError as error:
            if not error.condition_failed:
                raise  # else another run got further already

    async def next_record_day(self, org_id: str, from_day: str | None) -> str | None:
        """The day of the organization's first record on or after `from_day` (any, when
        None), records past their TTL included: reconcile counts them until rolled up."""
        condition = "pk = :pk"
        values: dict[str, Any] = {":pk": f"ORG#{org_id}"}
        if from_day is not None:
            condition += " AND sk >= :from"
            values[":from"] = from_day
        answer = await self._db.call(
            "Query",
            {
                "TableName": self.usage_table,
                "KeyConditionExpression": condition,
                "ExpressionAttributeValues": typed(values),
                "ProjectionExpression": "sk",
                "Limit": 1,
                "ConsistentRead": True,
            },
        )
        items = answer.get("Items", [])
        return str(items[0]["sk"]["S"])[:10] if items else None

    async def day_records(self, org_id: str, day: str) -> list[UsageRecord]:
        """Every stored record of the day (past its TTL too), read consistently."""
        params: dict[str, Any] = {
            "TableName": self.usage_table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :day)",
            "ExpressionAttributeValues": typed({":pk": f"ORG#{org_id}", ":day": day + "T"}),
            "ConsistentRead": True,
        }
        records: list[UsageRecord] = []
        while True:
            page = await self._db.call("Query", params)
            records += [usage_record(plain(item)) for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return records
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def put_aggregates(self, org_id: str, aggregates: list[DailyAggregate]) -> None:
        for start in range(0, len(aggregates), PARALLEL_PUTS):
            await asyncio.gather(
                *(self._put(org_id, a) for a in aggregates[start : start + PARALLEL_PUTS])
            )

    async def _put(self, org_id: str, aggregate: DailyAggregate) -> None:
        expires = int(midnight(aggregate.day).timestamp()) + (KEEP_DAYS + 1) * 86_400
        item = {
            "pk": f"DAILY#{org_id}",
            "sk": _sort_key(aggregate),
            **aggregate.fields(),
            "name": aggregate.name or None,  # none for the organization's own
            "expires_at": expires,
        }
        await self._db.call("PutItem", {"TableName": self.usage_table, "Item": typed(item)})

    async def aggregates(
        self, org_id: str, first_day: str, last_day: str, scope: str = MODEL_SCOPE
    ) -> list[DailyAggregate]:
        """The `scope` aggregates of [first_day, last_day], oldest first."""
        params: dict[str, Any] = {
            "TableName": self.usage_table,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :low AND :high",
            "FilterExpression": "#scope = :scope",
            "ExpressionAttributeNames": {"#scope": "scope"},
            "ExpressionAttributeValues": typed(
                {
                    ":pk": f"DAILY#{org_id}",
                    ":low": first_day + "#",
                    ":high": last_day + "#~",
                    ":scope": scope,
                }
            ),
        }
        found: list[DailyAggregate] = []
        while True:
            page = await self._db.call("Query", params)
            found += [_aggregate(plain(item)) for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return found
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _sort_key(aggregate: DailyAggregate) -> str:
    if aggregate.name == "":
        return f"{aggregate.day}#{aggregate.scope}"
    return f"{aggregate.day}#{aggregate.scope}#{aggregate.name}"


def _aggregate(item: dict[str, Any]) -> DailyAggregate:
    return DailyAggregate(
        day=str(item["date"]),
        scope=str(item["scope"]),
        name=str(item.get("name", "")),
        requests=int(item["requests"]),
        prompt_tokens=int(item["prompt_tokens"]),
        completion_tokens=int(item["completion_tokens"]),
        cost_usd=Decimal(item["cost_usd"]),
        errors=int(item["errors"]),
        cache_hits=int(item["cache_hits"]),
        latency_p50_ms=int(item["latency_p50_ms"]),
        latency_p95_ms=int(item["latency_p95_ms"]),
    )
