"""DynamoDB: keys, balances, ledger and usage records.

Single-table layout of the accounts table (pk / sk):
  ORG#<org_id>  / META                    name, email, balance_usd, cache settings
  ORG#<org_id>  / LEDGER#<time>#<id>      every credit added or taken by hand
  KEY#<sha256>  / KEY                     the key item authentication reads (GSI1: org, key id)
  KEYID#<key_id>/ KEY                     pointer from a key id to its hash, for revocation
Usage table: ORG#<org_id> / <time>#<request_id>, expiring after 90 days.

The hot path makes at most three round trips: GetItem on the key (usually cached in
process), one conditional UpdateItem for the hold, one TransactWriteItems for the settle.
"""

from __future__ import annotations

import asyncio
import inspect
import secrets
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from dynoyard.adapters.dynamo_http import DynamoError, DynamoHttpClient
from dynoyard.domain.accounts import DEFAULT_CACHE_TTL_SECONDS, Org, UnknownKey, UnknownOrg
from dynoyard.domain.keys import ApiKey, NewKey, generate_key, new_org_id
from dynoyard.domain.ports import InsufficientBalance, RateLimited
from dynoyard.domain.usage import UsageRecord


def _org_key(org_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"ORG#{org_id}"}, "sk": {"S": "META"}}


def _num(value: Decimal | int) -> dict[str, str]:
    return {"N": str(value)}


def _attribute(value: Any) -> dict[str, Any]:
    """A Python value as a DynamoDB attribute value (the few types these items use)."""
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, int | Decimal):
        return {"N": str(value)}
    if isinstance(value, list | tuple):
        return {"L": [_attribute(v) for v in value]}
    raise TypeError(f"no DynamoDB type for {type(value).__name__}")


def _value(attribute: dict[str, Any]) -> Any:
    ((kind, raw),) = attribute.items()
    if kind == "N":
        return Decimal(raw)
    if kind == "L":
        return [_value(v) for v in raw]
    if kind == "M":
        return {k: _value(v) for k, v in raw.items()}
    if kind == "NULL":
        return None
    return raw  # S, BOOL, SS


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _value(v) for k, v in item.items()}


def _typed(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _attribute(v) for k, v in item.items() if v is not None}


class DynamoStore:
    """Implements the KeyStore and Ledger ports, and the operator's account commands.
    Every method is a coroutine; `BlockingStore` runs them for synchronous callers."""

    def __init__(self, client: DynamoHttpClient, accounts_table: str, usage_table: str) -> None:
        self._db = client
        self.accounts_table = accounts_table
        self.usage_table = usage_table

    async def aclose(self) -> None:
        await self._db.aclose()

    # -- hot path -----------------------------------------------------------------

    async def find_key(self, key_hash: str) -> ApiKey | None:
        answer = await self._db.call(
            "GetItem",
            {
                "TableName": self.accounts_table,
                "Key": {"pk": {"S": f"KEY#{key_hash}"}, "sk": {"S": "KEY"}},
            },
        )
        item = answer.get("Item")
        return _api_key(_plain(item)) if item else None

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
                    "Key": _org_key(org_id),
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
                    "ExpressionAttributeValues": {":amount": _num(amount), ":one": _num(1)},
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                },
                idempotent=False,  # a lost answer must not take the hold twice
            )
        except DynamoError as error:
            if not error.condition_failed:
                raise
            item = _plain(error.body.get("Item") or {})
            limit, used = item.get("rate_limit_rpm"), item.get(f"rpm_{minute}", 0)
            if limit is not None and used >= limit and item.get("balance_usd", 0) >= amount:
                raise RateLimited(retry_after_seconds=60 - int(now % 60)) from None
            raise InsufficientBalance(org_id) from None

    async def settle(self, record: UsageRecord, held: Decimal) -> None:
        put = {
            "TableName": self.usage_table,
            "Item": _usage_item(record),
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
                "Key": _org_key(record.org_id),
                "UpdateExpression": "ADD balance_usd :refund",
                "ExpressionAttributeValues": {":refund": _num(refund)},
            }
            await self._db.call(
                "TransactWriteItems", {"TransactItems": [{"Update": refund_update}, {"Put": put}]}
            )
        except DynamoError as error:
            if not error.condition_failed:
                raise
            # Already settled by an earlier attempt whose answer was lost.

    # -- organizations --------------------------------------------------------------

    async def create_org(self, name: str, email: str) -> str:
        org_id = new_org_id()
        item = {
            "pk": f"ORG#{org_id}",
            "sk": "META",
            "name": name,
            "email": email,
            "balance_usd": Decimal(0),
            "cache_enabled": False,
            "cache_ttl_seconds": DEFAULT_CACHE_TTL_SECONDS,
            "created_at": _now_iso(),
        }
        await self._db.call(
            "PutItem",
            {
                "TableName": self.accounts_table,
                "Item": _typed(item),
                "ConditionExpression": "attribute_not_exists(pk)",
            },
        )
        return org_id

    async def get_org(self, org_id: str) -> Org:
        answer = await self._db.call(
            "GetItem",
            {"TableName": self.accounts_table, "Key": _org_key(org_id), "ConsistentRead": True},
        )
        if not answer.get("Item"):
            raise UnknownOrg(org_id)
        return _org(_plain(answer["Item"]))

    async def update_org_settings(
        self,
        org_id: str,
        cache_enabled: bool | None = None,
        cache_ttl_seconds: int | None = None,
        rate_limit_rpm: int | None = None,
    ) -> Org:
        """Changes what is given; `rate_limit_rpm=0` removes the limit."""
        changes: dict[str, Any] = {}
        if cache_enabled is not None:
            changes["cache_enabled"] = cache_enabled
        if cache_ttl_seconds is not None:
            changes["cache_ttl_seconds"] = cache_ttl_seconds
        if rate_limit_rpm:
            changes["rate_limit_rpm"] = rate_limit_rpm
        names = {f"#f{i}": name for i, name in enumerate(changes)}
        values = {f":v{i}": _attribute(v) for i, v in enumerate(changes.values())}
        clauses = []
        if changes:
            clauses.append("SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(changes))))
        if rate_limit_rpm == 0:
            clauses.append("REMOVE rate_limit_rpm")
        if clauses:
            update: dict[str, Any] = {"UpdateExpression": " ".join(clauses)}
            if names:
                update |= {"ExpressionAttributeNames": names, "ExpressionAttributeValues": values}
            await self._update_existing_org(org_id, update)
        return await self.get_org(org_id)

    async def _update_existing_org(self, org_id: str, update: dict[str, Any]) -> None:
        try:
            await self._db.call(
                "UpdateItem",
                {
                    "TableName": self.accounts_table,
                    "Key": _org_key(org_id),
                    "ConditionExpression": "attribute_exists(pk)",
                    **update,
                },
            )
        except DynamoError as error:
            if error.condition_failed:
                raise UnknownOrg(org_id) from None
            raise

    async def grant_credits(self, org_id: str, amount: Decimal, reason: str) -> Org:
        """Add (or, negative, take) credits; the ledger line and the balance move together."""
        entry = {
            "pk": f"ORG#{org_id}",
            "sk": f"LEDGER#{_now_iso()}#{secrets.token_hex(8)}",
            "kind": "grant",
            "amount_usd": amount,
            "reason": reason,
        }
        balance = {
            "TableName": self.accounts_table,
            "Key": _org_key(org_id),
            "UpdateExpression": "ADD balance_usd :amount",
            "ConditionExpression": "attribute_exists(pk)",
            "ExpressionAttributeValues": {":amount": _num(amount)},
        }
        ledger = {
            "TableName": self.accounts_table,
            "Item": _typed(entry),
            "ConditionExpression": "attribute_not_exists(pk)",
        }
        await self._transact_for_org(org_id, [{"Update": balance}, {"Put": ledger}])
        return await self.get_org(org_id)

    async def _transact_for_org(self, org_id: str, items: list[dict[str, Any]]) -> None:
        """A transaction whose conditions fail only when the organization does not exist."""
        try:
            await self._db.call("TransactWriteItems", {"TransactItems": items})
        except DynamoError as error:
            if error.condition_failed:
                raise UnknownOrg(org_id) from None
            raise

    # -- keys -----------------------------------------------------------------------

    async def create_key(
        self,
        org_id: str,
        name: str = "",
        models: frozenset[str] = frozenset(),
        expires_at: int | None = None,
    ) -> NewKey:
        new = generate_key()
        key_item = {
            "pk": f"KEY#{new.key_hash}",
            "sk": "KEY",
            "gsi1pk": f"ORG#{org_id}",
            "gsi1sk": f"KEY#{new.key_id}",
            "key_id": new.key_id,
            "org_id": org_id,
            "name": name,
            "hint": new.hint,
            "models": sorted(models) or None,
            "key_expires_at": expires_at,
            "revoked": False,
            "created_at": _now_iso(),
        }
        pointer = {
            "pk": f"KEYID#{new.key_id}",
            "sk": "KEY",
            "key_hash": new.key_hash,
            "org_id": org_id,
        }
        org_exists = {
            "TableName": self.accounts_table,
            "Key": _org_key(org_id),
            "ConditionExpression": "attribute_exists(pk)",
        }
        await self._transact_for_org(
            org_id,
            [
                {"ConditionCheck": org_exists},
                {"Put": {"TableName": self.accounts_table, "Item": _typed(key_item)}},
                {"Put": {"TableName": self.accounts_table, "Item": _typed(pointer)}},
            ],
        )
        return new

    async def revoke_key(self, key_id: str) -> None:
        pointer_key = {"pk": {"S": f"KEYID#{key_id}"}, "sk": {"S": "KEY"}}
        answer = await self._db.call(
            "GetItem",
            {"TableName": self.accounts_table, "Key": pointer_key, "ConsistentRead": True},
        )
        if not answer.get("Item"):
            raise UnknownKey(key_id)
        key_hash = answer["Item"]["key_hash"]["S"]
        revoked = {":t": {"BOOL": True}, ":now": {"S": _now_iso()}}
        updates = [
            {
                "Update": {
                    "TableName": self.accounts_table,
                    "Key": key,
                    "UpdateExpression": "SET revoked = :t, revoked_at = :now",
                    "ExpressionAttributeValues": revoked,
                }
            }
            for key in ({"pk": {"S": f"KEY#{key_hash}"}, "sk": {"S": "KEY"}}, pointer_key)
        ]
        await self._db.call("TransactWriteItems", {"TransactItems": updates})

    # -- usage ------------------------------------------------------------------------

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
                plain = _plain(item)
                if int(plain.get("expires_at", now + 1)) > now:
                    records.append(_usage_record(plain))
            if "LastEvaluatedKey" not in page:
                return records
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]


class BlockingStore:
    """A DynamoStore for synchronous callers (the CLI, `make dev`'s seeding, tests): each
    call runs to completion on its own event loop."""

    def __init__(self, store: DynamoStore) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.store, name)
        if not inspect.iscoroutinefunction(method):
            return method

        async def call_then_close(*args: Any, **kwargs: Any) -> Any:
            try:
                return await method(*args, **kwargs)
            finally:
                await self.store.aclose()  # its connections die with this loop

        def run(*args: Any, **kwargs: Any) -> Any:
            return asyncio.run(call_then_close(*args, **kwargs))

        return run


def blocking_store(accounts_table: str, usage_table: str) -> BlockingStore:
    return BlockingStore(DynamoStore(DynamoHttpClient(), accounts_table, usage_table))


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


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


def _org(item: dict[str, Any]) -> Org:
    return Org(
        org_id=str(item["pk"]).removeprefix("ORG#"),
        name=str(item.get("name", "")),
        email=str(item.get("email", "")),
        balance_usd=Decimal(item.get("balance_usd", 0)),
        cache_enabled=bool(item.get("cache_enabled", False)),
        cache_ttl_seconds=int(item.get("cache_ttl_seconds", DEFAULT_CACHE_TTL_SECONDS)),
        rate_limit_rpm=int(item["rate_limit_rpm"]) if "rate_limit_rpm" in item else None,
    )


def _usage_item(record: UsageRecord) -> dict[str, Any]:
    return _typed(
        {
            "pk": f"ORG#{record.org_id}",
            "sk": f"{record.timestamp}#{record.request_id}",
            **record.fields(),
            "upstream_ms": record.upstream_ms,
            "client_ip": record.client_ip or None,
            # The documented exception: at most 1 KB of an upstream's error body.
            "upstream_error_status": record.upstream_error_status,
            "error_head": record.error_head or None,
            "expires_at": record.expires_at,
        }
    )


def _usage_record(item: dict[str, Any]) -> UsageRecord:
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
