"""Usage records: ORG#<org_id> / <time>#<request_id> in the usage table, expiring after
90 days (DynamoDB TTL); reads skip records whose TTL has passed, since DynamoDB deletes late."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from dynoyard.adapters.dynamo.client import DynamoClient
from dynoyard.adapters.dynamo.codec import plain, typed
from dynoyard.domain.usage import UsageRecord


class UsageRecords:
    _db: DynamoClient
    usage_table: str

    async def usage_records(self, org_id: str, since: datetime | None = None) -> list[UsageRecord]:
        """Oldest first; records whose TTL has passed are skipped (DynamoDB deletes late)."""
        condition = "pk = :pk"
        values: dict[str, Any] = {":pk": {"S": f"ORG#{org_id}"}}
        if since is not None:
            condition += " AND sk >= :since"
            values[":since"] = {"S": since.astimezone(UTC).isoformat(timespec="milliseconds")}
        params: dict[str, Any] = {
            "TableName": self.usage_table,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
        }
        now = int(time.time())
        records: list[UsageRecord] = []
        while True:
            page = await self._db.call("Query", params)
            for item in page.get("Items", []):
                fields = plain(item)
                if int(fields.get("expires_at", now + 1)) > now:
                    records.append(usage_record(fields))
            if "LastEvaluatedKey" not in page:
                return records
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def usage_page(
        self,
        org_id: str,
        since: datetime,
        until: datetime,
        limit: int,
        cursor: str | None = None,
        key_id: str | None = None,
        model: str | None = None,
        newest_first: bool = False,
    ) -> tuple[list[UsageRecord], str | None]:
        """Records of [since, until), oldest first (or newest), at most `limit` read per
        page (a filter by key or model may return fewer), and the next page's cursor (None
        on the last). The cursor is the last sort key read; one of another org or range is
        refused."""
        low, high = _sk_time(since), _sk_time(until)
        values: dict[str, Any] = {
            ":pk": {"S": f"ORG#{org_id}"},
            ":low": {"S": low},
            ":high": {"S": high},
        }
        params: dict[str, Any] = {
            "TableName": self.usage_table,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :low AND :high",
            "ExpressionAttributeValues": values,
            "Limit": limit,
            "ScanIndexForward": not newest_first,
        }
        filters = []
        for name, wanted in (("key_id", key_id), ("model", model)):
            if wanted is not None:
                values[f":{name}"] = {"S": wanted}
                filters.append(f"{name} = :{name}")
        if filters:
            params["FilterExpression"] = " AND ".join(filters)
        if cursor is not None:
            start = _from_cursor(cursor)
            if not low <= start <= high:
                raise ValueError("the cursor is not of this range")
            params["ExclusiveStartKey"] = {"pk": {"S": f"ORG#{org_id}"}, "sk": {"S": start}}
        page = await self._db.call("Query", params)
        now = int(time.time())
        records = [
            usage_record(fields)
            for fields in map(plain, page.get("Items", []))
            if int(fields.get("expires_at", now + 1)) > now
        ]
        last = page.get("LastEvaluatedKey")
        return records, _to_cursor(last["sk"]["S"]) if last else None


def _sk_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def _to_cursor(sort_key: str) -> str:
    return base64.urlsafe_b64encode(sort_key.encode()).decode().rstrip("=")


def _from_cursor(cursor: str) -> str:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise ValueError("not a cursor of this list") from None
    if len(text) > 200 or "#req_" not in text:
        raise ValueError("not a cursor of this list")
    return text


def usage_item(record: UsageRecord) -> dict[str, Any]:
    return typed(
        {
            "pk": f"ORG#{record.org_id}",
            "sk": f"{record.timestamp}#{record.request_id}",
            **record.fields(),
            "upstream_ms": record.upstream_ms,
            "attempts": record.attempts,
            "client_ip": record.client_ip or None,
            # The documented exception: at most 1 KB of an upstream's error body.
            "upstream_error_status": record.upstream_error_status,
            "error_head": record.error_head or None,
            "expires_at": record.expires_at,
        }
    )


def usage_record(item: dict[str, Any]) -> UsageRecord:
    return UsageRecord(
        request_id=str(item["request_id"]),
        started_at=datetime.fromisoformat(str(item["timestamp"])),
        org_id=str(item["org_id"]),
        key_id=str(item["key_id"]),
        endpoint=str(item.get("endpoint", "")),
        model=str(item.get("model", "")),
        provider=str(item.get("provider", "")),
        status=int(item.get("status", 0)),
        prompt_tokens=int(item.get("prompt_tokens", 0)),
        completion_tokens=int(item.get("completion_tokens", 0)),
        cost_usd=Decimal(item.get("cost_usd", 0)),
        latency_ms=int(item.get("latency_ms", 0)),
        upstream_ms=int(item.get("upstream_ms", 0)),
        attempts=int(item.get("attempts", 0)),
        cached=bool(item.get("cached", False)),
        stream=bool(item.get("stream", False)),
        usage_estimated=bool(item.get("usage_estimated", False)),
        client_ip=str(item.get("client_ip", "")),
        error_code=item.get("error_code"),
        upstream_error_status=(
            int(item["upstream_error_status"]) if "upstream_error_status" in item else None
        ),
        error_head=item.get("error_head"),
    )
