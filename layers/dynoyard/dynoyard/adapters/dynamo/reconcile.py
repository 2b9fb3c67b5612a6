"""What `dynoyard billing reconcile` reads (domain/reconcile.py `ReconcileReads`): the org
item's money, every usage record's day and cost, and the list of organizations.

Organizations are listed by a paginated Scan of the accounts table filtered on `sk = META`
(only `pk` projected): an operator's tool, which reads (and pays for) the whole table once
per run. An index of organizations was weighed and left out: a GSI on the org item would
be written on every hold and settle, doubling the hot path's write cost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

from dynoyard.adapters.dynamo.client import DynamoClient
from dynoyard.adapters.dynamo.codec import org_key, plain
from dynoyard.domain.accounts import UnknownOrg
from dynoyard.domain.reconcile import OrgMoney, Spent


class ReconcileItems:
    _db: DynamoClient
    accounts_table: str
    usage_table: str

    async def org_money(self, org_id: str) -> OrgMoney:
        answer = await self._db.call(
            "GetItem",
            {
                "TableName": self.accounts_table,
                "Key": org_key(org_id),
                "ConsistentRead": True,
                "ProjectionExpression": "pk, balance_usd, held_usd",
            },
        )
        if not answer.get("Item"):
            raise UnknownOrg(org_id)
        item = plain(answer["Item"])
        return OrgMoney(Decimal(item.get("balance_usd", 0)), Decimal(item.get("held_usd", 0)))

    async def spent(self, org_id: str) -> list[Spent]:
        """Every record still stored, those past their TTL included: money spent counts
        until a `usage_daily` entry replaces its day. The sort key starts with the
        record's start time (UTC, ISO 8601), whose date is its day."""
        params: dict[str, Any] = {
            "TableName": self.usage_table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": f"ORG#{org_id}"}},
            "ProjectionExpression": "sk, cost_usd",
            "ConsistentRead": True,
        }
        found: list[Spent] = []
        while True:
            page = await self._db.call("Query", params)
            for item in map(plain, page.get("Items", [])):
                found.append(Spent(str(item["sk"])[:10], Decimal(item.get("cost_usd", 0))))
            if "LastEvaluatedKey" not in page:
                return found
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def org_ids(self, holding: bool = False, after: str | None = None) -> AsyncIterator[str]:
        """Every organization, or (`holding`) those with a hold in flight, `held_usd` > 0:
        where the cleanup job looks for stranded holds."""
        params: dict[str, Any] = {
            "TableName": self.accounts_table,
            "FilterExpression": "sk = :meta AND begins_with(pk, :org)",
            "ExpressionAttributeValues": {":meta": {"S": "META"}, ":org": {"S": "ORG#"}},
            "ProjectionExpression": "pk",
        }
        if holding:
            params["FilterExpression"] += " AND held_usd > :zero"
            params["ExpressionAttributeValues"][":zero"] = {"N": "0"}
        if after is not None:  # resume the scan after this organization (a job's checkpoint)
            params["ExclusiveStartKey"] = org_key(after)
        while True:
            page = await self._db.call("Scan", params)
            for item in page.get("Items", []):
                yield item["pk"]["S"].removeprefix("ORG#")
            if "LastEvaluatedKey" not in page:
                return
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]
