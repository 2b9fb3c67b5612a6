"""The console's items in the accounts table: users, sign-in links, sessions, memberships,
invitations.

Single-table layout (pk / sk); `expires_at` is the table's TTL attribute (epoch seconds):
  USER#<user_id>         / META               email, name, language, verified, created_at,
                                              terms_accepted_at, sessions_epoch
  EMAIL#<normalized>     / USER               user_id: one user per address (conditional put)
  RATE#<purpose>#<subject> / WINDOW#<start>  hits, expires_at: a fixed-window counter
                                              (sign-in limits per client IP or per address)
  LINK#<sha256(token)>   / LINK               email, name, purpose, terms_accepted, expires_at
  SESSION#<sha256(token)>/ SESSION            user_id, epoch, renewed_at, expires_at
  OAUTH#<sha256(id)>     / OAUTH              provider, state, code_verifier, accept_terms,
                                              expires_at: an OAuth sign-in under way
  IDENTITY#<provider>#<provider_id> / USER    user_id: a Google or Discord account linked
  USER#<user_id> / IDENTITY#<provider>#<id>   user_id, linked_at: the user's side of it
  EMAIL#<normalized>     / LINK#<sha256>      expires_at: a pending link to the address
  ORG#<org_id>           / MEMBER#<user_id>   user_id, role
  USER#<user_id>         / ORG#<org_id>       org_id, role
  ORG#<org_id>           / META  owner_count  the org's owners, moved in the same transaction
                                              as each membership (never below 1 on a change)
  USER#<user_id>         / META  orgs_created organizations the user made (POST /api/orgs)
  USER#<user_id>         / META  email_opt_out, welcome_sent (number set: days sent)
  WELCOME#<day>          / USER#<user_id>     user_id, due_at: a welcome email still to send
  UNSUB#<sha256(token)>  / UNSUB              user_id, expires_at: an unsubscribe link
  USER#<user_id>         / UNSUB#<sha256>     expires_at: the user's side of it
  ORG#<org_id>           / INVITE#<inv_id>    invite_id, org_id, email, normalized_email,
                                              role, invited_by, created_at, token_hash,
                                              expires_at: a pending invitation (7 days)
  INVITE#<sha256(token)> / INVITE             the same but the token hash: the link's way in
  EMAIL#<normalized>     / INVITE#<org_id>#<inv_id>  org_id, invite_id, role, token_hash,
                                              expires_at: invitations to an address (Query)
  RATE#invite_org#<org_id> / WINDOW#<day>     invitations sent per org per UTC day

An invitation's three items are written, replaced, used and revoked together in one
transaction; it is used or revoked by a conditional delete of its token's item, so once.

Secrets (link and session tokens) are never stored: only their SHA-256. A link is consumed
by a conditional delete, so it works once however many requests race with it. A session
carries the user's `sessions_epoch` from when it began; ending every session of a user
bumps that number, and a session whose epoch differs is refused: no query, no scan.
Reads ignore items whose `expires_at` has passed (DynamoDB's TTL deletes them late).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dynoyard.adapters.dynamo.client import DynamoClient, DynamoError
from dynoyard.adapters.dynamo.codec import attribute, now_iso, plain, typed
from dynoyard.domain.team import (
    ROLES,
    AlreadyMember,
    Invitation,
    LastOwner,
    MembershipChanged,
    Role,
    TooManyOrgs,
    UnknownInvitation,
    check_role,
)


class EmailTaken(Exception):
    """Another user already has this address."""


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    email: str
    name: str
    language: str
    verified: bool
    created_at: str
    terms_accepted_at: str | None
    sessions_epoch: int
    email_opt_out: bool = False  # no non-essential email (the welcome sequence)


@dataclass(frozen=True, slots=True)
class SignInLink:
    email: str
    name: str
    purpose: str  # "sign_in" or "sign_up"
    terms_accepted: bool
    expires_at: int


@dataclass(frozen=True, slots=True)
class OAuthPending:
    provider: str
    state: str
    code_verifier: str
    accept_terms: bool


@dataclass(frozen=True, slots=True)
class Session:
    session_hash: str
    user_id: str
    epoch: int
    renewed_at: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class Membership:
    org_id: str
    user_id: str
    role: Role


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


class ConsoleStore:
    def __init__(
        self, client: DynamoClient, accounts_table: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = client
        self.table = accounts_table
        self._clock = clock

    def now(self) -> int:
        return int(self._clock())

    async def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        answer = await self._db.call(
            "GetItem", {"TableName": self.table, "Key": _key(pk, sk), "ConsistentRead": True}
        )
        item = answer.get("Item")
        if not item:
            return None
        found = plain(item)
        expires = found.get("expires_at")
        if expires is not None and int(expires) <= self.now():
            return None  # past its TTL, not yet deleted
        return found

    # -- sign-in links -----------------------------------------------------------------

    async def put_link(
        self,
        token_hash: str,
        email: str,
        name: str,
        purpose: str,
        terms_accepted: bool,
        ttl_seconds: int,
    ) -> None:
        item = {
            "pk": f"LINK#{token_hash}",
            "sk": "LINK",
            "email": email,
            "name": name,
            "purpose": purpose,
            "terms_accepted": terms_accepted,
            "expires_at": self.now() + ttl_seconds,
        }
        # A pointer from the address (as normalized in console/validation.py) first, so that
        # deleting the account finds every pending link (domain/rights.py).
        pointer = {
            "pk": f"EMAIL#{email.strip().lower()}",
            "sk": f"LINK#{token_hash}",
            "expires_at": item["expires_at"],
        }
        await self._db.call("PutItem", {"TableName": self.table, "Item": typed(pointer)})
        await self._put_new(item)

    async def count_in_window(self, subject: str, limit: int, window_seconds: int) -> int | None:
        """Counts one use by `subject` (e.g. "link_ip#203.0.113.9") in the current fixed
        window. None when within `limit`; past it, the seconds until the window ends. One
        conditional write on the window's own item, which expires with the window."""
        now = self.now()
        window = now - now % window_seconds
        try:
            await self._db.call(
                "UpdateItem",
                {
                    "TableName": self.table,
                    "Key": _key(f"RATE#{subject}", f"WINDOW#{window}"),
                    "UpdateExpression": "ADD hits :one SET expires_at = :end",
                    "ConditionExpression": "attribute_not_exists(hits) OR hits < :limit",
                    "ExpressionAttributeValues": {
                        ":one": attribute(1),
                        ":limit": attribute(limit),
                        ":end": attribute(window + window_seconds),
                    },
                },
                idempotent=False,
            )
        except DynamoError as error:
            if not error.condition_failed:
                raise
            return max(1, window + window_seconds - now)
        return None

    async def consume_link(self, token_hash: str) -> SignInLink | None:
        """The link, deleted in the same write; None when it does not exist, was used, or
        has expired. Not retried on a transport error: a link is never used twice."""
        item = await self._take_once(f"LINK#{token_hash}", "LINK")
        if item is None:
            return None
        return SignInLink(
            email=str(item["email"]),
            name=str(item.get("name", "")),
            purpose=str(item.get("purpose", "sign_in")),
            terms_accepted=bool(item.get("terms_accepted", False)),
            expires_at=int(item["expires_at"]),
        )

    async def _put_new(self, item: dict[str, Any]) -> None:
        """Puts an item that must not exist yet (a random id's: a clash is an error, never
        an overwrite). Not retried on a transport error."""
        await self._db.call(
            "PutItem",
            {
                "TableName": self.table,
                "Item": typed(item),
                "ConditionExpression": "attribute_not_exists(pk)",
            },
            idempotent=False,
        )

    async def _take_once(self, pk: str, sk: str) -> dict[str, Any] | None:
        """An unexpired item, deleted in the same write, so whatever it grants is used
        once; None when it does not exist, was used, or has expired. Not retried on a
        transport error: never used twice."""
        try:
            answer = await self._db.call(
                "DeleteItem",
                {
                    "TableName": self.table,
                    "Key": _key(pk, sk),
                    "ConditionExpression": "attribute_exists(pk) AND expires_at > :now",
                    "ExpressionAttributeValues": {":now": attribute(self.now())},
                    "ReturnValues": "ALL_OLD",
                },
                idempotent=False,
            )
        except DynamoError as error:
            if error.condition_failed:
                return None
            raise
        return plain(answer.get("Attributes") or {}) or None

    # -- OAuth sign-in under way ---------------------------------------------------------

    async def put_oauth_pending(
        self, id_hash: str, pending: OAuthPending, ttl_seconds: int
    ) -> None:
        item = {
            "pk": f"OAUTH#{id_hash}",
            "sk": "OAUTH",
            "provider": pending.provider,
            "state": pending.state,
            "code_verifier": pending.code_verifier,
            "accept_terms": pending.accept_terms,
            "expires_at": self.now() + ttl_seconds,
        }
        await self._put_new(item)

    async def consume_oauth_pending(self, id_hash: str) -> OAuthPending | None:
        """The sign-in under way, deleted in the same write (so it is used once); None when
        it does not exist, was used, or has expired."""
        item = await self._take_once(f"OAUTH#{id_hash}", "OAUTH")
        if item is None:
            return None
        return OAuthPending(
            provider=str(item.get("provider", "")),
            state=str(item.get("state", "")),
            code_verifier=str(item.get("code_verifier", "")),
            accept_terms=bool(item.get("accept_terms", False)),
        )

    async def link_identity(self, provider: str, provider_id: str, user_id: str) -> None:
        """Records that the provider's account `provider_id` signed in as `user_id`."""
        item = {
            "pk": f"IDENTITY#{provider}#{provider_id}",
            "sk": "USER",
            "user_id": user_id,
            "linked_at": now_iso(),
        }
        # And the user's pointer to it: an export lists it, a deletion erases it.
        pointer = {**item, "pk": f"USER#{user_id}", "sk": f"IDENTITY#{provider}#{provider_id}"}
        for put in (pointer, item):
            await self._db.call("PutItem", {"TableName": self.table, "Item": typed(put)})

    # -- users ---------------------------------------------------------------------------

    async def get_user(self, user_id: str) -> User | None:
        item = await self._get(f"USER#{user_id}", "META")
        return _user(item) if item else None

    async def find_user_by_email(self, normalized_email: str) -> User | None:
        pointer = await self._get(f"EMAIL#{normalized_email}", "USER")
        return await self.get_user(str(pointer["user_id"])) if pointer else None

    async def create_user(
        self,
        user_id: str,
        email: str,
        normalized_email: str,
        name: str,
        language: str,
        verified: bool,
        terms_accepted_at: str | None,
    ) -> User:
        """The user and the pointer from the address, together; EmailTaken when another
        user has the address (two first sign-ins racing)."""
        created = now_iso()
        user = {
            "pk": f"USER#{user_id}",
            "sk": "META",
            "user_id": user_id,
            "email": email,
            "name": name,
            "language": language,
            "verified": verified,
            "created_at": created,
            "terms_accepted_at": terms_accepted_at,
            "sessions_epoch": 0,
        }
        pointer = {"pk": f"EMAIL#{normalized_email}", "sk": "USER", "user_id": user_id}
        try:
            await self._db.call(
                "TransactWriteItems",
                {
                    "TransactItems": [
                        {
                            "Put": {
                                "TableName": self.table,
                                "Item": typed(item),
                                "ConditionExpression": "attribute_not_exists(pk)",
                            }
                        }
                        for item in (pointer, user)
                    ]
                },
            )
        except DynamoError as error:
            if error.condition_failed:
                raise EmailTaken(normalized_email) from None
            raise
        return _user(user)

    async def update_user(
        self,
        user_id: str,
        name: str | None = None,
        language: str | None = None,
        verified: bool | None = None,
        email_opt_out: bool | None = None,
    ) -> User | None:
        """Changes what is given; None when there is no such user."""
        given = (
            ("name", name),
            ("language", language),
            ("verified", verified),
            ("email_opt_out", email_opt_out),
        )
        changes = {k: v for k, v in given if v is not None}
        if changes:
            try:
                await self._db.call(
                    "UpdateItem",
                    {
                        "TableName": self.table,
                        "Key": _key(f"USER#{user_id}", "META"),
                        "ConditionExpression": "attribute_exists(pk)",
                        "UpdateExpression": "SET "
                        + ", ".join(f"#f{i} = :v{i}" for i in range(len(changes))),
                        "ExpressionAttributeNames": {f"#f{i}": k for i, k in enumerate(changes)},
                        "ExpressionAttributeValues": {
                            f":v{i}": attribute(v) for i, v in enumerate(changes.values())
                        },
                    },
                )
            except DynamoError as error:
                if error.condition_failed:
                    return None
                raise
        return await self.get_user(user_id)

    # -- memberships -------------------------------------------------------------------

    async def add_member(self, org_id: str, user_id: str, role: Role) -> None:
        """A new membership, both ways; AlreadyMember when the user is one already. A new
        owner is counted in the organization's owner count in the same transaction."""
        steps: list[tuple[dict[str, Any], str | None]] = [
            (self._put_step(_member_item(org_id, user_id, role), new=True), "member_exists"),
            (self._put_step(_mirror_item(org_id, user_id, role), new=False), None),
        ]
        if role == "owner":
            steps.append((self._owner_count_step(org_id, +1), "owners_up"))
        await self._team_write(org_id, steps)

    async def membership(self, org_id: str, user_id: str) -> Membership | None:
        item = await self._get(f"ORG#{org_id}", f"MEMBER#{user_id}")
        if not item or item.get("role") not in ROLES:
            return None
        return Membership(org_id, user_id, item["role"])

    async def user_orgs(self, user_id: str) -> list[Membership]:
        items = await self._query(
            {
                "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
                "ExpressionAttributeValues": {
                    ":pk": attribute(f"USER#{user_id}"),
                    ":prefix": attribute("ORG#"),
                },
                "ConsistentRead": True,
            }
        )
        return [
            Membership(str(i["org_id"]), user_id, i["role"])
            for i in items
            if i.get("role") in ROLES
        ]

    async def org_members(self, org_id: str) -> list[Membership]:
        items = await self._query(
            {
                "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
                "ExpressionAttributeValues": {
                    ":pk": attribute(f"ORG#{org_id}"),
                    ":prefix": attribute("MEMBER#"),
                },
                "ConsistentRead": True,
            }
        )
        return [
            Membership(org_id, str(i["user_id"]), i["role"])
            for i in items
            if i.get("role") in ROLES
        ]

    # -- the team: roles, removals, invitations (rules in domain/team.py) ----------------

    async def change_role(
        self,
        org_id: str,
        user_id: str,
        from_role: Role,
        to_role: Role,
        actor_id: str | None,
        actor_role: str | None,
    ) -> None:
        """The member's role, both ways, if it is still `from_role` and the actor's still
        `actor_role`; an owner demoted or made moves the owner count, never below one."""
        values = {":to": attribute(to_role), ":from": attribute(from_role)}
        member = {
            "Update": {
                "TableName": self.table,
                "Key": _key(f"ORG#{org_id}", f"MEMBER#{user_id}"),
                "UpdateExpression": "SET #role = :to",
                "ConditionExpression": "#role = :from",
                "ExpressionAttributeNames": {"#role": "role"},
                "ExpressionAttributeValues": values,
            }
        }
        mirror = self._put_step(_mirror_item(org_id, user_id, to_role), new=False)
        steps: list[tuple[dict[str, Any], str | None]] = [(member, "target"), (mirror, None)]
        steps += self._actor_steps(org_id, actor_id, actor_role)
        if from_role == "owner":
            steps.append((self._owner_count_step(org_id, -1), "owners_down"))
        elif to_role == "owner":
            steps.append((self._owner_count_step(org_id, +1), "owners_up"))
        await self._team_write(org_id, steps)

    async def remove_member(
        self, org_id: str, user_id: str, role: Role, actor_id: str | None, actor_role: str | None
    ) -> None:
        """The membership, both ways, if its role is still `role` (and the actor's still
        `actor_role`); an owner only while another owner stays."""
        member = {
            "Delete": {
                "TableName": self.table,
                "Key": _key(f"ORG#{org_id}", f"MEMBER#{user_id}"),
                "ConditionExpression": "#role = :role",
                "ExpressionAttributeNames": {"#role": "role"},
                "ExpressionAttributeValues": {":role": attribute(role)},
            }
        }
        mirror_key = _key(f"USER#{user_id}", f"ORG#{org_id}")
        mirror = {"Delete": {"TableName": self.table, "Key": mirror_key}}
        steps: list[tuple[dict[str, Any], str | None]] = [(member, "target"), (mirror, None)]
        steps += self._actor_steps(org_id, actor_id, actor_role)
        if role == "owner":
            steps.append((self._owner_count_step(org_id, -1), "owners_down"))
        await self._team_write(org_id, steps)

    async def put_invitation(
        self, invitation: Invitation, normalized_email: str, token_hash: str
    ) -> str | None:
        """Writes the invitation's three items in one transaction, replacing (deleting) the
        pending invitation of the organization to the same address: the id it replaced.
        One used or revoked meanwhile is looked for again (MembershipChanged after three
        tries)."""
        for _ in range(3):
            try:
                return await self._put_invitation(invitation, normalized_email, token_hash)
            except UnknownInvitation:
                continue
        raise MembershipChanged(invitation.org_id)

    async def _put_invitation(
        self, invitation: Invitation, normalized_email: str, token_hash: str
    ) -> str | None:
        org_id, invitation_id = invitation.org_id, invitation.invitation_id
        earlier = await self._query(
            {
                "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
                "ExpressionAttributeValues": {
                    ":pk": attribute(f"EMAIL#{normalized_email}"),
                    ":prefix": attribute(f"INVITE#{org_id}#"),
                },
                "ConsistentRead": True,
            }
        )
        common = {
            "org_id": org_id,
            "invite_id": invitation_id,
            "role": invitation.role,
            "expires_at": invitation.expires_at,
        }
        detail = {
            **common,
            "email": invitation.email,
            "normalized_email": normalized_email,
            "invited_by": invitation.invited_by,
            "created_at": invitation.created_at,
        }
        by_org = {"pk": f"ORG#{org_id}", "sk": f"INVITE#{invitation_id}", "token_hash": token_hash}
        by_address = {
            "pk": f"EMAIL#{normalized_email}",
            "sk": f"INVITE#{org_id}#{invitation_id}",
            "token_hash": token_hash,
        }
        items = (
            {**by_org, **detail},
            {"pk": f"INVITE#{token_hash}", "sk": "INVITE", **detail},
            {**by_address, **common},
        )
        steps: list[tuple[dict[str, Any], str | None]] = [
            (self._put_step(item, new=True), None) for item in items
        ]
        for old in earlier:
            steps += self._invitation_deletes(
                org_id, str(old["invite_id"]), normalized_email, str(old["token_hash"])
            )
        await self._team_write(org_id, steps)
        return str(earlier[-1]["invite_id"]) if earlier else None

    async def get_invitation(self, org_id: str, invitation_id: str) -> Invitation | None:
        item = await self._get(f"ORG#{org_id}", f"INVITE#{invitation_id}")
        return _invitation(item) if item else None

    async def pending_invitations(self, org_id: str) -> list[Invitation]:
        items = await self._query(
            {
                "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
                "ExpressionAttributeValues": {
                    ":pk": attribute(f"ORG#{org_id}"),
                    ":prefix": attribute("INVITE#"),
                },
                "ConsistentRead": True,
            }
        )
        return [_invitation(item) for item in items]

    async def invitations_to(self, normalized_email: str) -> list[tuple[str, str]]:
        """(org_id, invitation_id) of every pending invitation to the address: one Query
        on EMAIL#<address> (for account deletion; revoke each with revoke_invitation)."""
        items = await self._query(
            {
                "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
                "ExpressionAttributeValues": {
                    ":pk": attribute(f"EMAIL#{normalized_email}"),
                    ":prefix": attribute("INVITE#"),
                },
                "ConsistentRead": True,
            }
        )
        return [(str(i["org_id"]), str(i["invite_id"])) for i in items]

    async def revoke_invitation(self, org_id: str, invitation_id: str) -> Invitation:
        """Deletes a pending invitation's items; UnknownInvitation when there is none (used,
        revoked, replaced or expired meanwhile)."""
        item = await self._get(f"ORG#{org_id}", f"INVITE#{invitation_id}")
        if item is None:
            raise UnknownInvitation(invitation_id)
        steps = self._invitation_deletes(
            org_id, invitation_id, str(item["normalized_email"]), str(item["token_hash"])
        )
        await self._team_write(org_id, steps)
        return _invitation(item)

    async def invitation_by_token(self, token_hash: str) -> tuple[Invitation, str] | None:
        """The pending invitation a link's token hash opens, and its normalized address."""
        item = await self._get(f"INVITE#{token_hash}", "INVITE")
        return (_invitation(item), str(item["normalized_email"])) if item else None

    async def accept_invitation(
        self, invitation: Invitation, normalized_email: str, token_hash: str, user_id: str
    ) -> None:
        """Uses the invitation up and makes the user a member with its role, in one
        transaction: UnknownInvitation when it was used, revoked or replaced meanwhile (or
        has expired), AlreadyMember when the user is one (the invitation then stays)."""
        org_id, role = invitation.org_id, invitation.role
        steps = self._invitation_deletes(
            org_id, invitation.invitation_id, normalized_email, token_hash
        )
        steps += [
            (self._put_step(_member_item(org_id, user_id, role), new=True), "member_exists"),
            (self._put_step(_mirror_item(org_id, user_id, role), new=False), None),
        ]
        if role == "owner":
            steps.append((self._owner_count_step(org_id, +1), "owners_up"))
        await self._team_write(org_id, steps)

    async def reserve_org(self, user_id: str, cap: int) -> None:
        """Counts one organization created by the user (USER#<id>/META orgs_created), by a
        conditional write: TooManyOrgs past `cap`, however many requests race."""
        try:
            await self._db.call(
                "UpdateItem",
                {
                    "TableName": self.table,
                    "Key": _key(f"USER#{user_id}", "META"),
                    "UpdateExpression": "ADD orgs_created :one",
                    "ConditionExpression": "attribute_exists(pk) AND"
                    " (attribute_not_exists(orgs_created) OR orgs_created < :cap)",
                    "ExpressionAttributeValues": {":one": attribute(1), ":cap": attribute(cap)},
                },
                idempotent=False,
            )
        except DynamoError as error:
            if error.condition_failed:
                raise TooManyOrgs(user_id) from None
            raise

    def _put_step(self, item: dict[str, Any], *, new: bool) -> dict[str, Any]:
        put: dict[str, Any] = {"TableName": self.table, "Item": typed(item)}
        if new:
            put["ConditionExpression"] = "attribute_not_exists(pk)"
        return {"Put": put}

    def _invitation_deletes(
        self, org_id: str, invitation_id: str, normalized_email: str, token_hash: str
    ) -> list[tuple[dict[str, Any], str | None]]:
        """The three items of a pending invitation, deleted; the link's pointer only if it
        is still there and unexpired (so an invitation is used or revoked once)."""
        pointer = {
            "Delete": {
                "TableName": self.table,
                "Key": _key(f"INVITE#{token_hash}", "INVITE"),
                "ConditionExpression": "attribute_exists(pk) AND expires_at > :now",
                "ExpressionAttributeValues": {":now": attribute(self.now())},
            }
        }
        keys = (
            _key(f"ORG#{org_id}", f"INVITE#{invitation_id}"),
            _key(f"EMAIL#{normalized_email}", f"INVITE#{org_id}#{invitation_id}"),
        )
        return [(pointer, "invitation")] + [
            ({"Delete": {"TableName": self.table, "Key": key}}, None) for key in keys
        ]

    def _actor_steps(
        self, org_id: str, actor_id: str | None, actor_role: str | None
    ) -> list[tuple[dict[str, Any], str | None]]:
        """The acting member still has the role they acted with (checked in the change's
        own transaction), unless they act on themself (the change's condition covers it)."""
        if actor_id is None or actor_role is None:
            return []
        check = {
            "ConditionCheck": {
                "TableName": self.table,
                "Key": _key(f"ORG#{org_id}", f"MEMBER#{actor_id}"),
                "ConditionExpression": "#role = :role",
                "ExpressionAttributeNames": {"#role": "role"},
                "ExpressionAttributeValues": {":role": attribute(actor_role)},
            }
        }
        return [(check, "actor")]

    def _owner_count_step(self, org_id: str, change: int) -> dict[str, Any]:
        """ORG#<org_id>/META owner_count moved by one: down only while another owner
        stays (> 1), up only where the count is kept (else it is counted first)."""
        values = {":change": attribute(change)}
        if change < 0:
            condition = "owner_count > :one"
            values[":one"] = attribute(1)
        else:
            condition = "attribute_exists(owner_count)"
        return {
            "Update": {
                "TableName": self.table,
                "Key": _key(f"ORG#{org_id}", "META"),
                "UpdateExpression": "ADD owner_count :change",
                "ConditionExpression": condition,
                "ExpressionAttributeValues": values,
            }
        }

    async def _team_write(
        self, org_id: str, steps: list[tuple[dict[str, Any], str | None]]
    ) -> None:
        """One transaction; each step names what its condition guards. A failed condition
        is raised as the first that applies of LastOwner, MembershipChanged (the actor's
        role), UnknownInvitation, AlreadyMember, MembershipChanged (the target's). An
        organization whose item has no owner count yet (made before it was kept) is
        counted once, then the write is tried again. Not retried on a transport error."""
        for attempt in range(2):
            try:
                await self._db.call(
                    "TransactWriteItems",
                    {"TransactItems": [step for step, _ in steps]},
                    idempotent=False,
                )
                return
            except DynamoError as error:
                if not error.condition_failed:
                    raise
                reasons = error.body.get("CancellationReasons") or []
                failed = {
                    guard
                    for (_, guard), reason in zip(steps, reasons, strict=False)
                    if isinstance(reason, dict) and reason.get("Code") == "ConditionalCheckFailed"
                }
            owners = failed & {"owners_down", "owners_up"}
            if owners and attempt == 0 and await self._count_owners_once(org_id):
                continue
            for guard, problem in _GUARDED:
                if guard in failed:
                    raise problem(org_id)
            raise MembershipChanged(org_id)

    async def _count_owners_once(self, org_id: str) -> bool:
        """Sets the owner count of an organization that has none yet (made before it was
        kept) from its members; True when it did. While the count is missing no write can
        change the owners (each needs it), so the count is exact."""
        meta = await self._get(f"ORG#{org_id}", "META")
        if meta is None or "owner_count" in meta:
            return False
        owners = sum(1 for m in await self.org_members(org_id) if m.role == "owner")
        try:
            await self._db.call(
                "UpdateItem",
                {
                    "TableName": self.table,
                    "Key": _key(f"ORG#{org_id}", "META"),
                    "UpdateExpression": "SET owner_count = :n",
                    "ConditionExpression": "attribute_exists(pk)"
                    " AND attribute_not_exists(owner_count)",
                    "ExpressionAttributeValues": {":n": attribute(owners)},
                },
            )
        except DynamoError as error:
            if not error.condition_failed:
                raise
        return True

    # -- sessions ----------------------------------------------------------------------

    async def create_session(
        self, token_hash: str, user_id: str, epoch: int, ttl_seconds: int
    ) -> Session:
        now = self.now()
        session = Session(token_hash, user_id, epoch, now, now + ttl_seconds)
        item = {
            "pk": f"SESSION#{token_hash}",
            "sk": "SESSION",
            "user_id": user_id,
            "epoch": epoch,
            "renewed_at": now,
            "expires_at": session.expires_at,
        }
        await self._put_new(item)
        return session

    async def get_session(self, token_hash: str) -> Session | None:
        item = await self._get(f"SESSION#{token_hash}", "SESSION")
        if not item:
            return None
        return Session(
            token_hash,
            str(item["user_id"]),
            int(item.get("epoch", 0)),
            int(item.get("renewed_at", 0)),
            int(item["expires_at"]),
        )

    async def renew_session(self, token_hash: str, ttl_seconds: int) -> int | None:
        """Moves the session's expiry to now + ttl; None when it has ended meanwhile."""
        now = self.now()
        try:
            await self._db.call(
                "UpdateItem",
                {
                    "TableName": self.table,
                    "Key": _key(f"SESSION#{token_hash}", "SESSION"),
                    "ConditionExpression": "attribute_exists(pk) AND expires_at > :now",
                    "UpdateExpression": "SET renewed_at = :now, expires_at = :expires",
                    "ExpressionAttributeValues": {
                        ":now": attribute(now),
                        ":expires": attribute(now + ttl_seconds),
                    },
                },
            )
        except DynamoError as error:
            if error.condition_failed:
                return None
            raise
        return now + ttl_seconds

    async def delete_session(self, token_hash: str) -> None:
        await self._db.call(
            "DeleteItem", {"TableName": self.table, "Key": _key(f"SESSION#{token_hash}", "SESSION")}
        )

    async def end_all_sessions(self, user_id: str) -> None:
        """Every session the user has, on every device, stops working at once."""
        await self._db.call(
            "UpdateItem",
            {
                "TableName": self.table,
                "Key": _key(f"USER#{user_id}", "META"),
                "ConditionExpression": "attribute_exists(pk)",
                "UpdateExpression": "ADD sessions_epoch :one",
                "ExpressionAttributeValues": {":one": attribute(1)},
            },
            idempotent=False,
        )

    # -- the welcome sequence and non-essential email ------------------------------------

    async def schedule_welcome(self, user_id: str, days: tuple[int, ...], start: int) -> None:
        """One `WELCOME#<day>` / `USER#<id>` item per day of the sequence, due `day` days
        after `start`: the cleanup finds who is due by a Query, never a scan of users."""
        for day in days:
            item = {
                "pk": f"WELCOME#{day}",
                "sk": f"USER#{user_id}",
                "user_id": user_id,
                "due_at": start + day * 86_400,
            }
            await self._db.call("PutItem", {"TableName": self.table, "Item": typed(item)})

    async def due_welcomes(self, day: int, now: int) -> list[str]:
        """The users whose welcome email of `day` is due."""
        items = await self._query(
            {
                "KeyConditionExpression": "pk = :pk",
                "FilterExpression": "due_at <= :now",
                "ExpressionAttributeValues": {
                    ":pk": attribute(f"WELCOME#{day}"),
                    ":now": attribute(now),
                },
                "ConsistentRead": True,
            }
        )
        return [str(item["user_id"]) for item in items]

    async def end_welcome(self, day: int, user_id: str) -> None:
        await self._db.call(
            "DeleteItem",
            {"TableName": self.table, "Key": _key(f"WELCOME#{day}", f"USER#{user_id}")},
        )

    async def claim_welcome(self, user_id: str, day: int) -> bool:
        """Marks the day's email as sent, once, before it is sent; False when it was sent
        already, the user opted out or no longer exists."""
        try:
            await self._db.call(
                "UpdateItem",
                {
                    "TableName": self.table,
                    "Key": _key(f"USER#{user_id}", "META"),
                    "UpdateExpression": "ADD welcome_sent :day",
                    "ConditionExpression": "attribute_exists(pk) AND NOT contains(welcome_sent, "
                    ":d) AND (attribute_not_exists(email_opt_out) OR email_opt_out = :no)",
                    "ExpressionAttributeValues": {
                        ":day": {"NS": [str(day)]},
                        ":d": attribute(day),
                        ":no": attribute(False),
                    },
                },
                idempotent=False,
            )
        except DynamoError as error:
            if error.condition_failed:
                return False
            raise
        return True

    async def unclaim_welcome(self, user_id: str, day: int) -> None:
        """Undoes `claim_welcome` when the email could not be sent: the next run retries."""
        await self._db.call(
            "UpdateItem",
            {
                "TableName": self.table,
                "Key": _key(f"USER#{user_id}", "META"),
                "UpdateExpression": "DELETE welcome_sent :day",
                "ConditionExpression": "attribute_exists(pk)",
                "ExpressionAttributeValues": {":day": {"NS": [str(day)]}},
            },
        )

    async def put_unsubscribe_token(self, token_hash: str, user_id: str, expires_at: int) -> None:
        """An unsubscribe link's way in (`UNSUB#<sha256>`), and the user's side of it so
        erasing the user finds it."""
        await self._put_new(
            {
                "pk": f"UNSUB#{token_hash}",
                "sk": "UNSUB",
                "user_id": user_id,
                "expires_at": expires_at,
            }
        )
        await self._db.call(
            "PutItem",
            {
                "TableName": self.table,
                "Item": typed(
                    {"pk": f"USER#{user_id}", "sk": f"UNSUB#{token_hash}", "expires_at": expires_at}
                ),
            },
        )

    async def unsubscribe_user(self, token_hash: str) -> str | None:
        """The token's user, now opted out of non-essential email (the token keeps working:
        a second click changes nothing); None for an unknown or expired token."""
        pointer = await self._get(f"UNSUB#{token_hash}", "UNSUB")
        if pointer is None:
            return None
        user_id = str(pointer["user_id"])
        return user_id if await self.update_user(user_id, email_opt_out=True) else None

    # -- keys (read side; created and revoked by AccountsAdmin) ---------------------------

    async def org_keys(self, org_id: str) -> list[dict[str, Any]]:
        """The organization's key items (GSI gsi1: ORG#<org_id> / KEY#<key_id>)."""
        return await self._query(
            {
                "IndexName": "gsi1",
                "KeyConditionExpression": "gsi1pk = :pk AND begins_with(gsi1sk, :prefix)",
                "ExpressionAttributeValues": {
                    ":pk": attribute(f"ORG#{org_id}"),
                    ":prefix": attribute("KEY#"),
                },
            }
        )

    async def key_org(self, key_id: str) -> str | None:
        """The organization a key id belongs to (its KEYID# pointer), None if unknown."""
        item = await self._get(f"KEYID#{key_id}", "KEY")
        return str(item["org_id"]) if item else None

    async def _query(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        start: dict[str, Any] | None = None
        while True:
            page = {"TableName": self.table, **params}
            if start:
                page["ExclusiveStartKey"] = start
            answer = await self._db.call("Query", page)
            now = self.now()
            for raw in answer.get("Items", []):
                item = plain(raw)
                expires = item.get("expires_at")
                if expires is None or int(expires) > now:
                    items.append(item)
            start = answer.get("LastEvaluatedKey")
            if not start:
                return items


def _user(item: dict[str, Any]) -> User:
    accepted = item.get("terms_accepted_at")
    return User(
        user_id=str(item["user_id"]),
        email=str(item["email"]),
        name=str(item.get("name", "")),
        language=str(item.get("language", "en")),
        verified=bool(item.get("verified", False)),
        created_at=str(item.get("created_at", "")),
        terms_accepted_at=str(accepted) if accepted else None,
        sessions_epoch=int(item.get("sessions_epoch", 0)),
        email_opt_out=bool(item.get("email_opt_out", False)),
    )


_GUARDED: tuple[tuple[str, type[Exception]], ...] = (
    ("owners_down", LastOwner),
    ("actor", MembershipChanged),
    ("invitation", UnknownInvitation),
    ("member_exists", AlreadyMember),
    ("target", MembershipChanged),
    ("owners_up", MembershipChanged),
)


def _member_item(org_id: str, user_id: str, role: Role) -> dict[str, Any]:
    return {"pk": f"ORG#{org_id}", "sk": f"MEMBER#{user_id}", "user_id": user_id, "role": role}


def _mirror_item(org_id: str, user_id: str, role: Role) -> dict[str, Any]:
    return {"pk": f"USER#{user_id}", "sk": f"ORG#{org_id}", "org_id": org_id, "role": role}


def _invitation(item: dict[str, Any]) -> Invitation:
    return Invitation(
        invitation_id=str(item["invite_id"]),
        org_id=str(item["org_id"]),
        email=str(item.get("email", "")),
        role=check_role(item.get("role")),
        invited_by=str(item.get("invited_by", "")),
        created_at=str(item.get("created_at", "")),
        expires_at=int(item["expires_at"]),
    )
