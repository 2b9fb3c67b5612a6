"""The cleanup job's checkpoints, in the accounts table: `JOB#<step>` / `CHECKPOINT` holding
the step's cursor (a string the step alone reads) and when it was written. A checkpoint only
saves work: a step that starts again from an older one redoes idempotent writes."""

from __future__ import annotations

from dynoyard.adapters.dynamo.client import DynamoClient
from dynoyard.adapters.dynamo.codec import now_iso


class Checkpoints:
    def __init__(self, client: DynamoClient, accounts_table: str) -> None:
        self._db = client
        self._table = accounts_table

    @staticmethod
    def _key(step: str) -> dict[str, dict[str, str]]:
        return {"pk": {"S": f"JOB#{step}"}, "sk": {"S": "CHECKPOINT"}}

    async def get(self, step: str) -> str | None:
        answer = await self._db.call(
            "GetItem", {"TableName": self._table, "Key": self._key(step), "ConsistentRead": True}
        )
        item = answer.get("Item") or {}
        cursor = item.get("cursor", {}).get("S")
        return str(cursor) if cursor is not None else None

    async def put(self, step: str, cursor: str | None) -> None:
        """Saves the cursor; None clears it (the step finished its round)."""
        if cursor is None:
            await self._db.call("DeleteItem", {"TableName": self._table, "Key": self._key(step)})
            return
        item = {**self._key(step), "cursor": {"S": cursor}, "updated_at": {"S": now_iso()}}
        await self._db.call("PutItem", {"TableName": self._table, "Item": item})
