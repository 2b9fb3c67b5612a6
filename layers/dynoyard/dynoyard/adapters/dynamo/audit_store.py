"""The audit log (domain/audit.py) in the accounts table, under each organization:

  ORG#<org_id> / AUDIT#<at>#<random>    actor, action, target, at, ip, details (a map),
                                        expires_at (TTL: `at` + 400 days)

`at` is UTC ISO 8601 with milliseconds, so the sort key orders entries by time; a page is a
Query newest first (ScanIndexForward false) with a Limit. Its cursor is the sort key of the
page's last entry, base64url-encoded JSON, used as the next query's ExclusiveStartKey within
the asking organization's own partition: a cursor can never reach another organization, and
one that is not exactly what this store hands out is refused (InvalidAuditQuery), never
passed to DynamoDB. The query's key condition starts at the retention's cutoff and a filter
drops items whose `expires_at` has passed, so no entry past its retention is ever answered
(DynamoDB's TTL deletes them days late).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from dynoyard.adapters.dynamo.client import DynamoClient
from dynoyard.adapters.dynamo.codec import attribute, plain
from dynoyard.domain.audit import (
    AUDIT_RETENTION_SECONDS,
    DEFAULT_PAGE,
    AuditEntry,
    DetailValue,
    InvalidAuditQuery,
    check_entry,
    check_limit,
    iso_at,
)

_SORT_KEY = re.compile(r"AUDIT#(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00)#[0-9a-f]{16}")
_MAX_CURSOR = 200


class DynamoAuditLog:
    """The AuditLog port over DynamoDB."""

    def __init__(
        self, client: DynamoClient, accounts_table: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = client
        self.table = accounts_table
        self._clock = clock

    async def record(self, entry: AuditEntry) -> None:
        check_entry(entry)
        at = datetime.fromisoformat(entry.at)
        item: dict[str, Any] = {
            "pk": {"S": f"ORG#{entry.org_id}"},
            "sk": {"S": f"AUDIT#{iso_at(at.timestamp())}#{secrets.token_hex(8)}"},
            "actor": {"S": entry.actor},
            "action": {"S": entry.action},
            "target": {"S": entry.target},
            "at": {"S": entry.at},
            "details": {"M": {k: attribute(v) for k, v in entry.details.items()}},
            "expires_at": {"N": str(int(at.timestamp()) + AUDIT_RETENTION_SECONDS)},
        }
        if entry.ip is not None:
            item["ip"] = {"S": entry.ip}
        await self._db.call(
            "PutItem",
            {
                "TableName": self.table,
                "Item": item,
                "ConditionExpression": "attribute_not_exists(pk)",
            },
        )

    async def entries(
        self, org_id: str, before: str | None = None, limit: int = DEFAULT_PAGE
    ) -> tuple[list[AuditEntry], str | None]:
        check_limit(limit)
        now = self._clock()
        cutoff = f"AUDIT#{iso_at(now - AUDIT_RETENTION_SECONDS)}"
        start = decode_cursor(before) if before is not None else None
        if start is not None and start < cutoff:
            return [], None  # everything older than the cursor is past its retention
        query: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :low AND :high",
            "FilterExpression": "expires_at > :now",
            "ExpressionAttributeValues": {
                ":pk": {"S": f"ORG#{org_id}"},
                ":low": {"S": cutoff},
                ":high": {"S": "AUDIT$"},  # just after every "AUDIT#..."
                ":now": {"N": str(int(now))},
            },
            "ScanIndexForward": False,
            "ConsistentRead": True,
        }
        if start is not None:
            query["ExclusiveStartKey"] = {"pk": {"S": f"ORG#{org_id}"}, "sk": {"S": start}}
        found: list[dict[str, Any]] = []
        while len(found) <= limit:  # one more than the page: is there a next one?
            query["Limit"] = limit + 1 - len(found)
            answer = await self._db.call("Query", query)
            found.extend(plain(item) for item in answer.get("Items", []))
            if "LastEvaluatedKey" not in answer:
                break
            query["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
        page = found[:limit]
        more = len(found) > limit
        return [_entry(org_id, item) for item in page], (
            encode_cursor(str(page[-1]["sk"])) if more else None
        )


def encode_cursor(sort_key: str) -> str:
    raw = json.dumps({"sk": sort_key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor_sort_key(cursor: object, max_length: int) -> str | None:
    """The sort key an `encode_cursor` cursor holds, or None for anything else."""
    if not isinstance(cursor, str) or not 0 < len(cursor) <= max_length:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or set(data) != {"sk"} or not isinstance(data["sk"], str):
        return None
    return data["sk"]


def decode_cursor(cursor: str) -> str:
    """The sort key a cursor holds; anything else is InvalidAuditQuery (param "before")."""
    bad = InvalidAuditQuery("before is not a cursor this audit log handed out", "before")
    sort_key = cursor_sort_key(cursor, _MAX_CURSOR)
    match = _SORT_KEY.fullmatch(sort_key) if sort_key is not None else None
    if match is None:
        raise bad
    try:
        datetime.fromisoformat(match[1])
    except ValueError:
        raise bad from None
    return match[0]


def _entry(org_id: str, item: dict[str, Any]) -> AuditEntry:
    def detail(raw: Any) -> DetailValue:
        if isinstance(raw, Decimal):
            return int(raw)
        return raw if isinstance(raw, bool) else str(raw)

    details = item.get("details") or {}
    return AuditEntry(
        org_id=org_id,
        actor=str(item.get("actor", "")),
        action=str(item.get("action", "")),
        target=str(item.get("target", "")),
        at=str(item.get("at", "")),
        ip=str(item["ip"]) if item.get("ip") is not None else None,
        details={str(k): detail(v) for k, v in details.items()},
    )
