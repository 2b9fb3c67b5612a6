"""The DynamoDB side of the user's rights (domain/rights.py): what an export reads beyond
the console store, and every write of a deletion (the `ErasureStore` port).

Items it reads or changes, besides console_store.py's and admin.py's:
  USER#<user_id>      / IDENTITY#<provider>#<id>   the user's linked sign-in identities
                                                    (pointer kept by link_identity)
  EMAIL#<normalized>  / LINK#<sha256(token)>       a pending sign-in link to the address
                                                    (pointer kept by put_link)
  USER#<user_id>      / META   export_at            when the user last exported (rate limit)
  ORG#<org_id>        / META   closed_at            the org closed (its last owner left)
  ORG#<org_id>/INVITE#<id>, INVITE#<sha256>, EMAIL#<address>/INVITE#<org>#<id>
                                                    an invitation's items (console_store.py)
  ORG#<org_id>        / LEDGER#..., AUDIT#...       scrubbed in place, never deleted
  WELCOME#<day>/USER#<id>, UNSUB#<sha256>/UNSUB      welcome emails to send, unsubscribe links
  usage: ORG#<org_id> / <time>#<request>           client_ip, error_head removed (closed)

Erasure reads items whatever their `expires_at`: DynamoDB's TTL deletes days late, and an
expired item still holds what it held.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from dynoyard.adapters.dynamo.admin import AccountsAdmin
from dynoyard.adapters.dynamo.client import DynamoClient, DynamoError
from dynoyard.adapters.dynamo.codec import attribute, plain
from dynoyard.adapters.dynamo.console_store import ConsoleStore, _key
from dynoyard.domain.messages import WELCOME_DAYS
from dynoyard.domain.rights import Role, Scrubber, scrub_audit_entry
from dynoyard.domain.team import LastOwner, MembershipChanged

# Usage records updated at once when a closed organization's lose their client IP.
PARALLEL_UPDATES = 25


class RightsStore(ConsoleStore):
    def __init__(
        self,
        client: DynamoClient,
        accounts_table: str,
        usage_table: str,
        admin: AccountsAdmin,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(client, accounts_table, clock)
        self.usage_table = usage_table
        self._admin = admin

    # -- the export --------------------------------------------------------------------

    async def take_export_slot(self, user_id: str, interval_seconds: int) -> int | None:
        """Counts an export of the user: None when allowed; else the seconds until the
        next one is (one conditional write on the user item)."""
        now = self.now()
        try:
            await self._db.call(
                "UpdateItem",
                {
                    "TableName": self.table,
                    "Key": _key(f"USER#{user_id}", "META"),
                    "UpdateExpression": "SET export_at = :now",
                    "ConditionExpression": "attribute_exists(pk) AND"
                    " (attribute_not_exists(export_at) OR export_at <= :last)",
                    "ExpressionAttributeValues": {
                        ":now": attribute(now),
                        ":last": attribute(now - interval_seconds),
                    },
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                },
                idempotent=False,
            )
        except DynamoError as error:
            if not error.condition_failed:
                raise
            last = _old_export_at(error.body)
            return max(1, last + interval_seconds - now) if last else interval_seconds
        return None

    async def identities(self, user_id: str) -> list[dict[str, str]]:
        """The Google and Discord accounts linked to the user: provider, id, since when."""
        items = await self._partition(f"USER#{user_id}", "IDENTITY#")
        found = []
        for item in items:
            _, provider, provider_id = str(item["sk"]).split("#", 2)
            linked = str(item.get("linked_at", ""))
            found.append({"provider": provider, "provider_id": provider_id, "linked_at": linked})
        return found

    async def org_item(self, org_id: str) -> dict[str, Any] | None:
        return await self._get(f"ORG#{org_id}", "META")

    async def ledger(self, org_id: str) -> list[dict[str, Any]]:
        """The organization's credit movements, oldest first (ORG#<org_id>/LEDGER#...)."""
        return await self._partition(f"ORG#{org_id}", "LEDGER#")

    # -- the deletion (domain/rights.py's ErasureStore) -----------------------------------

    async def memberships(self, user_id: str) -> list[tuple[str, Role]]:
        return [(m.org_id, m.role) for m in await self.user_orgs(user_id)]

    async def members(self, org_id: str) -> list[tuple[str, Role]]:
        return [(m.user_id, m.role) for m in await self.org_members(org_id)]

    async def address_of(self, user_id: str) -> str | None:
        user = await self.get_user(user_id)
        return user.email if user else None

    async def close_org(self, org_id: str) -> None:
        await self._admin.close_org(org_id)

    async def revoke_org_keys(self, org_id: str) -> int:
        live = [str(k["key_id"]) for k in await self.org_keys(org_id) if not k.get("revoked")]
        for key_id in live:
            await self._admin.revoke_key(key_id)
        return len(live)

    async def drop_cache(self, org_id: str) -> int:
        return await self._admin.clear_cache(org_id)

    async def drop_org_invitations(self, org_id: str) -> int:
        """Every invitation of a closing organization, pending or expired."""
        invitations = await self._partition(f"ORG#{org_id}", "INVITE#", expired_too=True)
        for item in invitations:
            await self._drop_invitation(org_id, str(item["sk"]).removeprefix("INVITE#"))
        return len(invitations)

    async def scrub_org(
        self,
        org_id: str,
        user_id: str,
        scrubber: Scrubber,
        *,
        closed: bool,
        contact_email: str | None,
    ) -> None:
        """Takes the person out of what the organization keeps: its item's name and
        contact address, its keys' names, its ledger's reasons, its audit log (their IP
        too); a closed organization's usage records lose their client IP and error head."""
        await self._scrub_org_item(org_id, scrubber, contact_email)
        for key in await self.org_keys(org_id):
            name = str(key.get("name", ""))
            if scrubber.holds(name):
                await self._set(str(key["pk"]), "KEY", {"name": scrubber.text(name)})
        for entry in await self._partition(f"ORG#{org_id}", "LEDGER#", expired_too=True):
            reason = str(entry.get("reason", ""))
            if scrubber.holds(reason):
                await self._set(
                    f"ORG#{org_id}", str(entry["sk"]), {"reason": scrubber.text(reason)}
                )
        for item in await self._partition(f"ORG#{org_id}", "AUDIT#", expired_too=True):
            scrub = scrub_audit_entry(
                user_id,
                scrubber,
                str(item.get("actor", "")),
                str(item.get("target", "")),
                item.get("details") or {},
                item.get("ip") is not None,
            )
            if scrub.changes:
                changes: dict[str, Any] = {}
                if scrub.target is not None:
                    changes["target"] = scrub.target
                if scrub.details is not None:
                    changes["details"] = scrub.details
                await self._set(
                    f"ORG#{org_id}",
                    str(item["sk"]),
                    changes,
                    remove=("ip",) if scrub.drop_ip else (),
                )
        if closed:
            await self._forget_usage_origins(org_id)

    async def end_membership(self, org_id: str, user_id: str, role: Role) -> None:
        """The user leaves an organization that stays: through the team's own removal, so
        its owner count stays true. Should the team have changed meanwhile (the other owner
        gone too), the membership goes all the same: the account is being erased."""
        try:
            await self.remove_member(org_id, user_id, role, None, None)
        except (LastOwner, MembershipChanged):
            await self.end_all_memberships(org_id, [user_id])

    async def end_all_memberships(self, org_id: str, user_ids: list[str]) -> None:
        """A closing organization's members, both ways (its owner count no longer
        matters)."""
        for user_id in user_ids:
            await self._delete(f"ORG#{org_id}", f"MEMBER#{user_id}")
            await self._delete(f"USER#{user_id}", f"ORG#{org_id}")

    async def end_sessions(self, user_id: str) -> None:
        """Every session stops at once (the epoch moves); deleting the user item later
        would end them too, this says so even if the erasure stops half-way."""
        try:
            await self.end_all_sessions(user_id)
        except DynamoError as error:
            if not error.condition_failed:  # no user item: already erased
                raise

    async def erase_person(self, user_id: str, email: str) -> None:
        """The person's own items: linked identities, pending sign-in links, everything
        under the address (its pointer, invitations to it) and under the user (the user
        item last, so a retry still finds the rest)."""
        address = email.strip().lower()  # the normalized form (console/validation.py)
        for identity in await self._partition(f"USER#{user_id}", "IDENTITY#", expired_too=True):
            await self._delete(str(identity["sk"]), "USER")
        for item in await self._partition(f"EMAIL#{address}", "", expired_too=True):
            sk = str(item["sk"])
            if sk.startswith("LINK#"):
                await self._delete(sk, "LINK")
            elif sk.startswith("INVITE#"):  # console_store's invitations_to, expired too
                await self._drop_invitation(str(item["org_id"]), str(item["invite_id"]))
            await self._delete(f"EMAIL#{address}", sk)
        for day in WELCOME_DAYS:  # welcome emails still to send (console_store)
            await self._delete(f"WELCOME#{day}", f"USER#{user_id}")
        items = await self._partition(f"USER#{user_id}", "", expired_too=True)
        for item in sorted(items, key=lambda i: i["sk"] == "META"):
            if str(item["sk"]).startswith("UNSUB#"):  # an unsubscribe link's way in
                await self._delete(str(item["sk"]), "UNSUB")
            await self._delete(f"USER#{user_id}", str(item["sk"]))

    # -- helpers -----------------------------------------------------------------------

    async def _scrub_org_item(
        self, org_id: str, scrubber: Scrubber, contact_email: str | None
    ) -> None:
        org = await self._get(f"ORG#{org_id}", "META")
        if org is None:
            return
        changes: dict[str, Any] = {}
        remove: tuple[str, ...] = ()
        name = str(org.get("name", ""))
        if scrubber.holds(name):
            changes["name"] = scrubber.text(name)
        if scrubber.holds(str(org.get("email", ""))):
            if contact_email:
                changes["email"] = contact_email
            else:
                remove = ("email",)
        if changes or remove:
            await self._set(f"ORG#{org_id}", "META", changes, remove=remove)

    async def _drop_invitation(self, org_id: str, invitation_id: str) -> None:
        """An invitation's three items (console_store.py), pending or expired: an expired
        one still holds the address until DynamoDB's TTL deletes it."""
        sk = f"INVITE#{invitation_id}"
        for item in await self._partition(f"ORG#{org_id}", sk, expired_too=True):
            if item["sk"] != sk:
                continue
            await self._delete(f"INVITE#{item['token_hash']}", "INVITE")
            address = str(item["normalized_email"])
            await self._delete(f"EMAIL#{address}", f"INVITE#{org_id}#{invitation_id}")
            await self._delete(f"ORG#{org_id}", sk)

    async def _forget_usage_origins(self, org_id: str) -> None:
        """Removes client_ip and error_head from every usage record of the organization
        that has either (the records themselves, and their money, stay)."""
        params: dict[str, Any] = {
            "TableName": self.usage_table,
            "KeyConditionExpression": "pk = :pk",
            "FilterExpression": "attribute_exists(client_ip) OR attribute_exists(error_head)",
            "ProjectionExpression": "pk, sk",
            "ExpressionAttributeValues": {":pk": attribute(f"ORG#{org_id}")},
        }
        while True:
            page = await self._db.call("Query", params)
            keys = [{"pk": item["pk"], "sk": item["sk"]} for item in page.get("Items", [])]
            for start in range(0, len(keys), PARALLEL_UPDATES):
                await asyncio.gather(
                    *(
                        self._db.call(
                            "UpdateItem",
                            {
                                "TableName": self.usage_table,
                                "Key": key,
                                "UpdateExpression": "REMOVE client_ip, error_head",
                            },
                        )
                        for key in keys[start : start + PARALLEL_UPDATES]
                    )
                )
            if "LastEvaluatedKey" not in page:
                return
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def _partition(
        self, pk: str, prefix: str, *, expired_too: bool = False
    ) -> list[dict[str, Any]]:
        """The items of `pk` whose sort key starts with `prefix`, in order; with
        `expired_too`, also those past their TTL that DynamoDB has not deleted yet."""
        params: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": attribute(pk)},
            "ConsistentRead": True,
        }
        if prefix:
            params["KeyConditionExpression"] += " AND begins_with(sk, :prefix)"
            params["ExpressionAttributeValues"][":prefix"] = attribute(prefix)
        if not expired_too:
            return await self._query(params)
        items: list[dict[str, Any]] = []
        while True:
            page = await self._db.call("Query", params)
            items.extend(plain(item) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def _set(
        self, pk: str, sk: str, changes: dict[str, Any], remove: tuple[str, ...] = ()
    ) -> None:
        """Changes an existing item's attributes (a vanished item stays vanished)."""
        clauses = []
        if changes:
            clauses.append("SET " + ", ".join(f"#s{i} = :s{i}" for i in range(len(changes))))
        if remove:
            clauses.append("REMOVE " + ", ".join(f"#r{i}" for i in range(len(remove))))
        names = {f"#s{i}": k for i, k in enumerate(changes)}
        names |= {f"#r{i}": k for i, k in enumerate(remove)}
        update: dict[str, Any] = {
            "TableName": self.table,
            "Key": _key(pk, sk),
            "UpdateExpression": " ".join(clauses),
            "ConditionExpression": "attribute_exists(pk)",
            "ExpressionAttributeNames": names,
        }
        if changes:
            update["ExpressionAttributeValues"] = {
                f":s{i}": _value(v) for i, v in enumerate(changes.values())
            }
        try:
            await self._db.call("UpdateItem", update)
        except DynamoError as error:
            if not error.condition_failed:
                raise

    async def _delete(self, pk: str, sk: str) -> None:
        await self._db.call("DeleteItem", {"TableName": self.table, "Key": _key(pk, sk)})


def _old_export_at(body: dict[str, Any]) -> int | None:
    """The `export_at` a refused write found (ReturnValuesOnConditionCheckFailure)."""
    found = (body.get("Item") or {}).get("export_at", {}).get("N")
    return int(found) if found else None


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):  # an audit entry's details
        return {"M": {k: attribute(v) for k, v in value.items()}}
    return attribute(value)
