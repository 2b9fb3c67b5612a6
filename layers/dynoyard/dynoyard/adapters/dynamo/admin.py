"""The operator's account commands: organizations, credits and keys.

Single-table layout of the accounts table (pk / sk):
  ORG#<org_id>  / META                    name, email, balance_usd, cache settings,
                                          rate_limit_rpm, low_balance_usd (absent: none)
                                          closed_at (its last owner deleted the account)
  ORG#<org_id>  / LEDGER#<time>#<id>      every credit added or taken by hand
  KEY#<sha256>  / KEY                     the key item authentication reads (GSI1: org, key id)
  KEYID#<key_id>/ KEY                     pointer from a key id to its hash and org
  A rotated key's item also holds `rotated_to` and, for a grace period, `revoke_at` (epoch
  seconds); the new key's holds `rotated_from` and `counters_hash` (where its limits count:
  the first key of the rotations); `last_used_hour` (epoch hours) is set by the settle.
  ORG#<org_id>  / AUDIT#<at>#<id>         the audit log (audit_store.py)
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from dynoyard.adapters.dynamo.cache import CacheTable
from dynoyard.adapters.dynamo.client import DynamoClient, DynamoError
from dynoyard.adapters.dynamo.codec import attribute, now_iso, num, org_key, plain, typed
from dynoyard.domain.accounts import (
    DEFAULT_CACHE_TTL_SECONDS,
    UNCHANGED,
    Org,
    Unchanged,
    UnknownKey,
    UnknownOrg,
    check_cache_ttl,
    check_low_balance,
)
from dynoyard.domain.administration import KeyNotActive, StoredKey
from dynoyard.domain.keys import NewKey, generate_key, new_org_id
from dynoyard.domain.limits import KeyLimits


class AccountsAdmin(CacheTable):
    _db: DynamoClient
    accounts_table: str

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
            "created_at": now_iso(),
            "owner_count": 0,  # kept by the console's memberships (console_store.py)
        }
        await self._db.call(
            "PutItem",
            {
                "TableName": self.accounts_table,
                "Item": typed(item),
                "ConditionExpression": "attribute_not_exists(pk)",
            },
        )
        return org_id

    async def get_org(self, org_id: str) -> Org:
        answer = await self._db.call(
            "GetItem",
            {"TableName": self.accounts_table, "Key": org_key(org_id), "ConsistentRead": True},
        )
        if not answer.get("Item"):
            raise UnknownOrg(org_id)
        return _org(plain(answer["Item"]))

    async def update_org_settings(
        self,
        org_id: str,
        cache_enabled: bool | None = None,
        cache_ttl_seconds: int | None = None,
        rate_limit_rpm: int | None = None,
        low_balance_usd: Decimal | Unchanged | None = UNCHANGED,
        name: str | None = None,
    ) -> Org:
        """Changes what is given (`name`: the organization's); `rate_limit_rpm=0` removes
        the limit and `low_balance_usd=None` the low-balance threshold. Turning the cache
        off deletes the organization's entries (after the setting is written, so no new
        request reads them); turning it back on first deletes what a request in flight at
        the opt-out may have stored since, so nothing of an earlier period is ever served."""
        if cache_ttl_seconds is not None:
            check_cache_ttl(cache_ttl_seconds)
        if isinstance(low_balance_usd, Decimal):
            check_low_balance(low_balance_usd)
        if cache_enabled and not (await self.get_org(org_id)).cache_enabled:
            await self.clear_cache(org_id)
        changes: dict[str, Any] = {}
        if cache_enabled is not None:
            changes["cache_enabled"] = cache_enabled
        if cache_ttl_seconds is not None:
            changes["cache_ttl_seconds"] = cache_ttl_seconds
        if rate_limit_rpm:
            changes["rate_limit_rpm"] = rate_limit_rpm
        if isinstance(low_balance_usd, Decimal):
            changes["low_balance_usd"] = low_balance_usd
        if name is not None:
            changes["name"] = name
        names = {f"#f{i}": name for i, name in enumerate(changes)}
        values = {f":v{i}": attribute(v) for i, v in enumerate(changes.values())}
        clauses = []
        if changes:
            clauses.append("SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(changes))))
        removed = ["rate_limit_rpm"] if rate_limit_rpm == 0 else []
        removed += ["low_balance_usd"] if low_balance_usd is None else []
        if removed:
            clauses.append("REMOVE " + ", ".join(removed))
        if clauses:
            update: dict[str, Any] = {"UpdateExpression": " ".join(clauses)}
            if names:
                update |= {"ExpressionAttributeNames": names, "ExpressionAttributeValues": values}
            await self._update_existing_org(org_id, update)
        if cache_enabled is False:
            await self.clear_cache(org_id)
        return await self.get_org(org_id)

    async def _update_existing_org(self, org_id: str, update: dict[str, Any]) -> None:
        try:
            await self._db.call(
                "UpdateItem",
                {
                    "TableName": self.accounts_table,
                    "Key": org_key(org_id),
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
        at, movement_id = now_iso(), secrets.token_hex(8)
        entry = {  # the ledger entry's shape (billing_store.py), kind "grant"
            "pk": f"ORG#{org_id}",
            "sk": f"LEDGER#{at}#{movement_id}",
            "movement_id": movement_id,
            "kind": "grant",
            "amount_usd": amount,
            "currency": "usd",
            "at": at,
            "reason": reason,
        }
        balance = {
            "TableName": self.accounts_table,
            "Key": org_key(org_id),
            "UpdateExpression": "ADD balance_usd :amount",
            "ConditionExpression": "attribute_exists(pk)",
            "ExpressionAttributeValues": {":amount": num(amount)},
        }
        ledger = {
            "TableName": self.accounts_table,
            "Item": typed(entry),
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

    async def close_org(self, org_id: str) -> None:
        """Marks the organization closed (its last owner left, domain/rights.py): no key is
        made for it again, and its cache is off. Its balance and ledger stay."""
        await self._update_existing_org(
            org_id,
            {
                "UpdateExpression": "SET closed_at = if_not_exists(closed_at, :now),"
                " cache_enabled = :off",
                "ExpressionAttributeValues": {":now": {"S": now_iso()}, ":off": {"BOOL": False}},
            },
        )

    # -- keys -----------------------------------------------------------------------

    async def create_key(
        self,
        org_id: str,
        name: str = "",
        models: frozenset[str] = frozenset(),
        expires_at: int | None = None,
        limits: KeyLimits | None = None,
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
            "created_at": now_iso(),
            **_limit_attributes(limits or KeyLimits()),
        }
        pointer = {
            "pk": f"KEYID#{new.key_id}",
            "sk": "KEY",
            "key_hash": new.key_hash,
            "org_id": org_id,
        }
        org_exists = {  # and not closed: a closed organization gets no key again
            "TableName": self.accounts_table,
            "Key": org_key(org_id),
            "ConditionExpression": "attribute_exists(pk) AND attribute_not_exists(closed_at)",
        }
        await self._transact_for_org(
            org_id,
            [
                {"ConditionCheck": org_exists},
                {"Put": {"TableName": self.accounts_table, "Item": typed(key_item)}},
                {"Put": {"TableName": self.accounts_table, "Item": typed(pointer)}},
            ],
        )
        return new

    async def key_org_id(self, key_id: str) -> str | None:
        """The organization a key id belongs to (its KEYID# pointer), or None."""
        answer = await self._db.call(
            "GetItem",
            {
                "TableName": self.accounts_table,
                "Key": {"pk": {"S": f"KEYID#{key_id}"}, "sk": {"S": "KEY"}},
                "ConsistentRead": True,
            },
        )
        org = answer.get("Item", {}).get("org_id", {}).get("S")
        return str(org) if org else None

    async def revoke_key(self, key_id: str) -> None:
        pointer_key = {"pk": {"S": f"KEYID#{key_id}"}, "sk": {"S": "KEY"}}
        answer = await self._db.call(
            "GetItem",
            {"TableName": self.accounts_table, "Key": pointer_key, "ConsistentRead": True},
        )
        if not answer.get("Item"):
            raise UnknownKey(key_id)
        key_hash = answer["Item"]["key_hash"]["S"]
        revoked = {":t": {"BOOL": True}, ":now": {"S": now_iso()}}
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

    async def stored_key(self, key_id: str) -> StoredKey | None:
        """A key as rotation reads it (its pointer, then its item), or None."""
        pointer_key = {"pk": {"S": f"KEYID#{key_id}"}, "sk": {"S": "KEY"}}
        pointer = await self._db.call(
            "GetItem",
            {"TableName": self.accounts_table, "Key": pointer_key, "ConsistentRead": True},
        )
        if not pointer.get("Item"):
            return None
        key_hash = pointer["Item"]["key_hash"]["S"]
        answer = await self._db.call(
            "GetItem",
            {
                "TableName": self.accounts_table,
                "Key": {"pk": {"S": f"KEY#{key_hash}"}, "sk": {"S": "KEY"}},
                "ConsistentRead": True,
            },
        )
        item = plain(answer.get("Item") or {})
        if "key_id" not in item:
            return None
        expires, revoke_at = item.get("key_expires_at"), item.get("revoke_at")
        return StoredKey(
            key_id=str(item["key_id"]),
            org_id=str(item["org_id"]),
            key_hash=key_hash,
            counters_hash=str(item.get("counters_hash") or key_hash),
            name=str(item.get("name", "")),
            models=frozenset(item.get("models") or ()),
            limits=KeyLimits(
                rpm=int(item["limit_rpm"]) if item.get("limit_rpm") is not None else None,
                tpm=int(item["limit_tpm"]) if item.get("limit_tpm") is not None else None,
                daily_usd=item.get("limit_daily_usd"),
                monthly_usd=item.get("limit_monthly_usd"),
            ),
            created_at=datetime.fromisoformat(str(item["created_at"])).timestamp(),
            expires_at=int(expires) if expires is not None else None,
            revoked=bool(item.get("revoked", False)),
            revoke_at=int(revoke_at) if revoke_at is not None else None,
        )

    async def rotate_key(
        self, old: StoredKey, expires_at: int | None, grace_ends_at: int | None
    ) -> NewKey:
        """One transaction: the new key (the old one's name, models and limits, counting
        against the same counters, so a rotation never resets a cap) and its pointer, and the
        old key revoked: now (`grace_ends_at` None), or at `grace_ends_at` (epoch seconds;
        the gateway refuses it from then on, as at an expiry). Conditioned on the old key
        being neither revoked nor rotated already, so a replayed or concurrent rotation is
        KeyNotActive, never a second new key."""
        new = generate_key()
        key_item = {
            "pk": f"KEY#{new.key_hash}",
            "sk": "KEY",
            "gsi1pk": f"ORG#{old.org_id}",
            "gsi1sk": f"KEY#{new.key_id}",
            "key_id": new.key_id,
            "org_id": old.org_id,
            "name": old.name,
            "hint": new.hint,
            "models": sorted(old.models) or None,
            "key_expires_at": expires_at,
            "revoked": False,
            "created_at": now_iso(),
            "counters_hash": old.counters_hash,
            "rotated_from": old.key_id,
            **_limit_attributes(old.limits),
        }
        pointer = {
            "pk": f"KEYID#{new.key_id}",
            "sk": "KEY",
            "key_hash": new.key_hash,
            "org_id": old.org_id,
        }
        ends: dict[str, Any]
        if grace_ends_at is None:
            ending, ends = "revoked = :end", {"BOOL": True}
            revoked_at = now_iso()
        else:
            ending, ends = "revoke_at = :end", num(grace_ends_at)
            revoked_at = datetime.fromtimestamp(grace_ends_at, UTC).isoformat(
                timespec="milliseconds"
            )
        values = {":end": ends, ":when": {"S": revoked_at}}
        old_item = {
            "TableName": self.accounts_table,
            "Key": {"pk": {"S": f"KEY#{old.key_hash}"}, "sk": {"S": "KEY"}},
            "UpdateExpression": f"SET {ending}, revoked_at = :when, rotated_to = :new",
            "ConditionExpression": "revoked = :f AND attribute_not_exists(revoke_at)",
            "ExpressionAttributeValues": {
                **values,
                ":f": {"BOOL": False},
                ":new": {"S": new.key_id},
            },
        }
        old_pointer = {
            "TableName": self.accounts_table,
            "Key": {"pk": {"S": f"KEYID#{old.key_id}"}, "sk": {"S": "KEY"}},
            "UpdateExpression": f"SET {ending}, revoked_at = :when",
            "ExpressionAttributeValues": values,
        }
        try:
            await self._db.call(
                "TransactWriteItems",
                {
                    "TransactItems": [
                        {"Update": old_item},
                        {"Update": old_pointer},
                        {"Put": {"TableName": self.accounts_table, "Item": typed(key_item)}},
                        {"Put": {"TableName": self.accounts_table, "Item": typed(pointer)}},
                    ]
                },
                idempotent=False,
            )
        except DynamoError as error:
            if error.condition_failed:
                raise KeyNotActive(old.key_id) from None
            raise
        return new


def _org(item: dict[str, Any]) -> Org:
    return Org(
        org_id=str(item["pk"]).removeprefix("ORG#"),
        name=str(item.get("name", "")),
        email=str(item.get("email", "")),
        balance_usd=Decimal(item.get("balance_usd", 0)),
        cache_enabled=bool(item.get("cache_enabled", False)),
        cache_ttl_seconds=int(item.get("cache_ttl_seconds", DEFAULT_CACHE_TTL_SECONDS)),
        rate_limit_rpm=int(item["rate_limit_rpm"]) if "rate_limit_rpm" in item else None,
        low_balance_usd=Decimal(item["low_balance_usd"]) if "low_balance_usd" in item else None,
    )


def _limit_attributes(limits: KeyLimits) -> dict[str, Any]:
    return {
        "limit_rpm": limits.rpm,
        "limit_tpm": limits.tpm,
        "limit_daily_usd": limits.daily_usd,
        "limit_monthly_usd": limits.monthly_usd,
    }
