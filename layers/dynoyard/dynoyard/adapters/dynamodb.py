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

import os
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar

import anyio
import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError

from dynoyard.domain.accounts import DEFAULT_CACHE_TTL_SECONDS, Org, UnknownKey, UnknownOrg
from dynoyard.domain.keys import ApiKey, NewKey, generate_key, new_org_id
from dynoyard.domain.ports import InsufficientBalance
from dynoyard.domain.usage import UsageRecord

T = TypeVar("T")


def dynamodb_client() -> Any:
    """One client per process; botocore honours AWS_ENDPOINT_URL_DYNAMODB by itself.
    botocore rather than boto3: boto3 adds ~100 ms of imports (s3transfer) to a cold start."""
    config = Config(
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=2,
        read_timeout=5,
        max_pool_connections=64,
        tcp_keepalive=True,
    )
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    session = botocore.session.get_session()
    key_id = secret = None
    endpoint = os.environ.get("AWS_ENDPOINT_URL_DYNAMODB", "")
    if _is_loopback(endpoint) and session.get_credentials() is None:
        key_id = secret = "local"  # DynamoDB Local checks no signature: no profile needed
    return session.create_client(
        "dynamodb",
        region_name=region,
        config=config,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    )


def _is_loopback(url: str) -> bool:
    return url.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]"))


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


def _is_condition_failure(error: ClientError) -> bool:
    code = error.response.get("Error", {}).get("Code", "")
    if code == "ConditionalCheckFailedException":
        return True
    if code == "TransactionCanceledException":
        reasons = error.response.get("CancellationReasons") or []
        return any(r.get("Code") == "ConditionalCheckFailed" for r in reasons)
    return False


class DynamoStore:
    """Implements the KeyStore and Ledger ports, and the operator's account commands."""

    def __init__(self, client: Any, accounts_table: str, usage_table: str) -> None:
        self._client = client
        self.accounts_table = accounts_table
        self.usage_table = usage_table

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        # boto3 is synchronous; a worker thread keeps the event loop free meanwhile.
        return await anyio.to_thread.run_sync(partial(fn, *args))

    # -- hot path -----------------------------------------------------------------

    async def find_key(self, key_hash: str) -> ApiKey | None:
        return await self._run(self.get_key_by_hash, key_hash)

    def get_key_by_hash(self, key_hash: str) -> ApiKey | None:
        answer = self._client.get_item(
            TableName=self.accounts_table,
            Key={"pk": {"S": f"KEY#{key_hash}"}, "sk": {"S": "KEY"}},
        )
        item = answer.get("Item")
        return _api_key(_plain(item)) if item else None

    async def hold(self, org_id: str, amount: Decimal) -> None:
        await self._run(self._hold, org_id, amount)

    def _hold(self, org_id: str, amount: Decimal) -> None:
        try:
            self._client.update_item(
                TableName=self.accounts_table,
                Key=_org_key(org_id),
                UpdateExpression="SET balance_usd = balance_usd - :amount",
                ConditionExpression="balance_usd >= :amount",
                ExpressionAttributeValues={":amount": _num(amount)},
            )
        except ClientError as error:
            if _is_condition_failure(error):
                raise InsufficientBalance(org_id) from None
            raise

    async def settle(self, record: UsageRecord, held: Decimal) -> None:
        await self._run(self.settle_sync, record, held)

    def settle_sync(self, record: UsageRecord, held: Decimal) -> None:
        put = {
            "TableName": self.usage_table,
            "Item": _usage_item(record),
            # The request id is in the sort key: a second settle of it changes nothing.
            "ConditionExpression": "attribute_not_exists(pk)",
        }
        refund = held - record.cost_usd
        try:
            if refund == 0:
                self._client.put_item(**put)
                return
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self.accounts_table,
                            "Key": _org_key(record.org_id),
                            "UpdateExpression": "ADD balance_usd :refund",
                            "ExpressionAttributeValues": {":refund": _num(refund)},
                        }
                    },
                    {"Put": put},
                ]
            )
        except ClientError as error:
            if not _is_condition_failure(error):
                raise
            # Already settled by an earlier attempt whose answer was lost.

    # -- organizations --------------------------------------------------------------

    def create_org(self, name: str, email: str) -> str:
        org_id = new_org_id()
        self._client.put_item(
            TableName=self.accounts_table,
            Item=_typed(
                {
                    "pk": f"ORG#{org_id}",
                    "sk": "META",
                    "name": name,
                    "email": email,
                    "balance_usd": Decimal(0),
                    "cache_enabled": False,
                    "cache_ttl_seconds": DEFAULT_CACHE_TTL_SECONDS,
                    "created_at": _now_iso(),
                }
            ),
            ConditionExpression="attribute_not_exists(pk)",
        )
        return org_id

    def get_org(self, org_id: str) -> Org:
        item = self._client.get_item(
            TableName=self.accounts_table, Key=_org_key(org_id), ConsistentRead=True
        ).get("Item")
        if not item:
            raise UnknownOrg(org_id)
        return _org(_plain(item))

    def update_org_settings(
        self, org_id: str, cache_enabled: bool | None = None, cache_ttl_seconds: int | None = None
    ) -> Org:
        changes: dict[str, Any] = {}
        if cache_enabled is not None:
            changes["cache_enabled"] = cache_enabled
        if cache_ttl_seconds is not None:
            changes["cache_ttl_seconds"] = cache_ttl_seconds
        if changes:
            names = {f"#f{i}": name for i, name in enumerate(changes)}
            values = {f":v{i}": _attribute(v) for i, v in enumerate(changes.values())}
            expression = ", ".join(f"#f{i} = :v{i}" for i in range(len(changes)))
            try:
                self._client.update_item(
                    TableName=self.accounts_table,
                    Key=_org_key(org_id),
                    UpdateExpression="SET " + expression,
                    ConditionExpression="attribute_exists(pk)",
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values,
                )
            except ClientError as error:
                if _is_condition_failure(error):
                    raise UnknownOrg(org_id) from None
                raise
        return self.get_org(org_id)

    def grant_credits(self, org_id: str, amount: Decimal, reason: str) -> Org:
        """Add (or, negative, take) credits; the ledger line and the balance move together."""
        entry_id = secrets.token_hex(8)
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self.accounts_table,
                            "Key": _org_key(org_id),
                            "UpdateExpression": "ADD balance_usd :amount",
                            "ConditionExpression": "attribute_exists(pk)",
                            "ExpressionAttributeValues": {":amount": _num(amount)},
                        }
                    },
                    {
                        "Put": {
                            "TableName": self.accounts_table,
                            "Item": _typed(
                                {
                                    "pk": f"ORG#{org_id}",
                                    "sk": f"LEDGER#{_now_iso()}#{entry_id}",
                                    "kind": "grant",
                                    "amount_usd": amount,
                                    "reason": reason,
                                }
                            ),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                ]
            )
        except ClientError as error:
            if _is_condition_failure(error):
                raise UnknownOrg(org_id) from None
            raise
        return self.get_org(org_id)

    # -- keys -----------------------------------------------------------------------

    def create_key(
        self,
        org_id: str,
        name: str = "",
        models: frozenset[str] = frozenset(),
        expires_at: int | None = None,
    ) -> NewKey:
        new = generate_key()
        key_item = _typed(
            {
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
        )
        pointer = _typed(
            {"pk": f"KEYID#{new.key_id}", "sk": "KEY", "key_hash": new.key_hash, "org_id": org_id}
        )
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "ConditionCheck": {
                            "TableName": self.accounts_table,
                            "Key": _org_key(org_id),
                            "ConditionExpression": "attribute_exists(pk)",
                        }
                    },
                    {"Put": {"TableName": self.accounts_table, "Item": key_item}},
                    {"Put": {"TableName": self.accounts_table, "Item": pointer}},
                ]
            )
        except ClientError as error:
            if _is_condition_failure(error):
                raise UnknownOrg(org_id) from None
            raise
        return new

    def revoke_key(self, key_id: str) -> None:
        pointer = self._client.get_item(
            TableName=self.accounts_table,
            Key={"pk": {"S": f"KEYID#{key_id}"}, "sk": {"S": "KEY"}},
            ConsistentRead=True,
        ).get("Item")
        if not pointer:
            raise UnknownKey(key_id)
        key_hash = pointer["key_hash"]["S"]
        revoked = {":t": {"BOOL": True}, ":now": {"S": _now_iso()}}
        self._client.transact_write_items(
            TransactItems=[
                {
                    "Update": {
                        "TableName": self.accounts_table,
                        "Key": {"pk": {"S": f"KEY#{key_hash}"}, "sk": {"S": "KEY"}},
                        "UpdateExpression": "SET revoked = :t, revoked_at = :now",
                        "ExpressionAttributeValues": revoked,
                    }
                },
                {
                    "Update": {
                        "TableName": self.accounts_table,
                        "Key": {"pk": {"S": f"KEYID#{key_id}"}, "sk": {"S": "KEY"}},
                        "UpdateExpression": "SET revoked = :t, revoked_at = :now",
                        "ExpressionAttributeValues": revoked,
                    }
                },
            ]
        )

    # -- usage ------------------------------------------------------------------------

    def usage_records(self, org_id: str, since: datetime | None = None) -> Iterator[UsageRecord]:
        """Oldest first; records whose TTL has passed are skipped (DynamoDB deletes late)."""
        condition = "pk = :pk"
        values: dict[str, Any] = {":pk": {"S": f"ORG#{org_id}"}}
        if since is not None:
            condition += " AND sk >= :since"
            values[":since"] = {"S": since.astimezone(UTC).isoformat(timespec="milliseconds")}
        now = int(time.time())
        paginator = self._client.get_paginator("query")
        pages = paginator.paginate(
            TableName=self.usage_table,
            KeyConditionExpression=condition,
            ExpressionAttributeValues=values,
        )
        for page in pages:
            for item in page.get("Items", []):
                plain = _plain(item)
                if int(plain.get("expires_at", now + 1)) <= now:
                    continue
                yield _usage_record(plain)


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
    )


def _usage_item(record: UsageRecord) -> dict[str, Any]:
    return _typed(
        {
            "pk": f"ORG#{record.org_id}",
            "sk": f"{record.timestamp}#{record.request_id}",
            "request_id": record.request_id,
            "timestamp": record.timestamp,
            "org_id": record.org_id,
            "key_id": record.key_id,
            "endpoint": record.endpoint,
            "model": record.model,
            "provider": record.provider,
            "status": record.status,
            "prompt_tokens": record.prompt_tokens,
            "completion_tokens": record.completion_tokens,
            "total_tokens": record.total_tokens,
            "cost_usd": record.cost_usd,
            "latency_ms": record.latency_ms,
            "upstream_ms": record.upstream_ms,
            "cached": record.cached,
            "stream": record.stream,
            "usage_estimated": record.usage_estimated,
            "client_ip": record.client_ip or None,
            "error_code": record.error_code,
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
