"""The user's rights over what is held about them: the export (one JSON document) and the
deletion of the account. The decisions live here, free of AWS and HTTP; the DynamoDB work
is the `ErasureStore` port's (adapters/dynamo/rights_store.py).

Deletion, as the privacy policy says ("we retain ... to support audit, billing, and legal
obligations"):
- Erased: the user item (email, name, language, the export counter), the address's
  pointer and its link counter, pending sign-in links, linked Google/Discord identities,
  the user's memberships (both ways) and invitations to the address.
- Closed: every organization the user is the only owner of (`plan_deletion`): its keys are
  revoked, its cached answers dropped, its pending invitations and every membership
  removed (the other members keep their accounts), the org item marked `closed_at`, so no
  key can be made for it again and no console lists it. An organization with another owner
  just loses this member.
- Kept without personal data: credit movements (the ledger) and usage records stay, so the
  money reconciles. Text kept there and in the audit log (org and key names, ledger
  reasons, audit targets and details) has the user's address, name and address's local
  part replaced by "[erased]" (`Scrubber`). The org item's contact address is dropped
  (closed) or replaced by another owner's. The usage records of a closed organization lose
  their client IP and error head (the org was the user's alone).
- The audit log: entries whose actor is the user keep the user id as a pseudonymous actor
  and lose their IP. Once the user item, the address pointer and the identities are gone,
  the id (`usr_` + 16 random hex digits, never shown to anyone but the user and their
  team) links to no person, yet the log still tells one actor's actions from another's,
  which an audit needs. Signing up again makes a new id.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from dynoyard.domain.administration import Actor, Administration

EXPORT_FORMAT_VERSION = 1
EXPORT_INTERVAL_SECONDS = 60  # one export per user per minute
# The document must fit Lambda's 6 MB buffered answer (console/rights.py's Budget).
EXPORT_USAGE_RECORDS = 8_000  # usage records in one document, every organization together
EXPORT_AUDIT_ENTRIES = 4_000  # newest looked at per organization; at most as many in all
ERASED = "[erased]"
MIN_TERM = 3  # shorter names are not searched for in kept text (too many false hits)

Role = Literal["owner", "admin", "member"]


class ConfirmationMismatch(ValueError):
    """The deletion was not confirmed with the account's own address."""


def check_confirmation(given: object, email: str) -> None:
    """The confirmation must be the account's address (case and outer spaces aside)."""
    if not isinstance(given, str) or given.strip().lower() != email.strip().lower():
        raise ConfirmationMismatch("confirm_email is not this account's address")


# -- which organizations close -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeletionPlan:
    close: tuple[str, ...]  # organizations whose last owner leaves
    leave: tuple[str, ...]  # organizations that just lose this member
    roles: Mapping[str, Role]  # the user's role in each


def plan_deletion(
    user_id: str,
    memberships: Iterable[tuple[str, Role]],
    members: Mapping[str, Iterable[tuple[str, Role]]],
) -> DeletionPlan:
    """`memberships`: the user's (org id, role); `members`: each of those orgs' (user id,
    role). An org closes when the user owns it and no one else does."""
    roles = dict(memberships)
    close: list[str] = []
    leave: list[str] = []
    for org_id, role in sorted(roles.items()):
        other_owners = [u for u, r in members.get(org_id, ()) if r == "owner" and u != user_id]
        (close if role == "owner" and not other_owners else leave).append(org_id)
    return DeletionPlan(tuple(close), tuple(leave), roles)


# -- what is scrubbed from kept text -----------------------------------------------------


class Scrubber:
    """Finds and replaces a person's address, name and the address's local part in text
    that is kept: case-insensitive, a name or local part only where it is not part of a
    longer Latin word ("Al" is not erased from "Alerts")."""

    def __init__(self, email: str, name: str) -> None:
        address = email.strip()
        local = address.split("@", 1)[0]
        words = [w for w in (name.strip(), local) if len(w) >= MIN_TERM or _wide(w)]
        # The address first (the longest), so it is erased whole before its local part is
        # looked for; then the longer of the name and the local part.
        patterns = [re.escape(address)] + [
            rf"(?<![A-Za-z0-9]){re.escape(w)}(?![A-Za-z0-9])"
            for w in sorted(words, key=len, reverse=True)
        ]
        self._pattern = re.compile("|".join(patterns), re.IGNORECASE)

    def holds(self, text: str) -> bool:
        return self._pattern.search(text) is not None

    def text(self, text: str) -> str:
        return self._pattern.sub(ERASED, text)

    def value(self, value: Any) -> Any:
        """A kept value with the person taken out (strings only; numbers and flags stay)."""
        return self.text(value) if isinstance(value, str) else value


def _wide(word: str) -> bool:
    """A name of two CJK characters is a whole name: searched for all the same."""
    return len(word) == 2 and all(ord(c) > 0x2E7F for c in word)


@dataclass(frozen=True, slots=True)
class AuditScrub:
    """What changes in one kept audit entry; None fields stay as they are."""

    drop_ip: bool
    target: str | None
    details: dict[str, Any] | None

    @property
    def changes(self) -> bool:
        return self.drop_ip or self.target is not None or self.details is not None


def scrub_audit_entry(
    user_id: str,
    scrubber: Scrubber,
    actor: str,
    target: str,
    details: Mapping[str, Any],
    has_ip: bool,
) -> AuditScrub:
    """The user's own entries lose their IP; any target or detail holding the person is
    rewritten. The actor (the user id) stays: see the module's note."""
    new_target = scrubber.text(target) if scrubber.holds(target) else None
    touched = any(isinstance(v, str) and scrubber.holds(v) for v in details.values())
    new_details = {k: scrubber.value(v) for k, v in details.items()} if touched else None
    return AuditScrub(actor == user_id and has_ip, new_target, new_details)


def audit_visible_to(role: Role, user_id: str, actor: str) -> bool:
    """Which audit entries an export holds: owners and admins read their organization's
    whole log; a member only the entries where they acted."""
    return role in ("owner", "admin") or actor == user_id


# -- the deletion ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Person:
    user_id: str
    email: str
    name: str


@dataclass(frozen=True, slots=True)
class DeletionSummary:
    orgs_closed: tuple[str, ...]
    memberships_ended: tuple[str, ...]  # organizations left, closed ones included

    def show(self) -> dict[str, Any]:
        return {
            "deleted": True,
            "orgs_closed": list(self.orgs_closed),
            "memberships_ended": list(self.memberships_ended),
        }


class ErasureStore(Protocol):
    """The DynamoDB work of a deletion (adapters/dynamo/rights_store.py)."""

    async def memberships(self, user_id: str) -> list[tuple[str, Role]]: ...

    async def members(self, org_id: str) -> list[tuple[str, Role]]: ...

    async def address_of(self, user_id: str) -> str | None: ...

    async def close_org(self, org_id: str) -> None: ...

    async def revoke_org_keys(self, org_id: str) -> int: ...

    async def drop_cache(self, org_id: str) -> int: ...

    async def drop_org_invitations(self, org_id: str) -> int: ...

    async def scrub_org(
        self,
        org_id: str,
        user_id: str,
        scrubber: Scrubber,
        *,
        closed: bool,
        contact_email: str | None,
    ) -> None: ...

    async def end_membership(self, org_id: str, user_id: str, role: Role) -> None: ...

    async def end_all_memberships(self, org_id: str, user_ids: list[str]) -> None: ...

    async def end_sessions(self, user_id: str) -> None: ...

    async def erase_person(self, user_id: str, email: str) -> None: ...


class AccountDeletion:
    """Deletes an account. The order makes a deletion that stops half-way safe to run
    again: what can not be undone for others (keys, the closing) first, the account itself
    last, so the user can still sign in and retry until it is gone."""

    def __init__(self, store: ErasureStore, administration: Administration) -> None:
        self._store = store
        self._admin = administration

    async def delete(self, person: Person) -> DeletionSummary:
        store = self._store
        memberships = await store.memberships(person.user_id)
        members = {org_id: await store.members(org_id) for org_id, _ in memberships}
        plan = plan_deletion(person.user_id, memberships, members)
        scrubber = Scrubber(person.email, person.name)
        for org_id in plan.close:
            await store.close_org(org_id)  # first: no key can be made for it any more
            await store.revoke_org_keys(org_id)
            await store.drop_cache(org_id)
            await store.drop_org_invitations(org_id)
        for org_id in plan.close + plan.leave:
            # Who asked is the user id alone: no IP, no address (the entry outlives them).
            actor = Actor(plan.roles[org_id], person.user_id)
            what = "organization_closed" if org_id in plan.close else "membership_ended"
            await self._admin.record(actor, org_id, "deletion_requested", person.user_id, what=what)
        for org_id in plan.close:
            await store.scrub_org(org_id, person.user_id, scrubber, closed=True, contact_email=None)
            await store.end_all_memberships(org_id, [u for u, _ in members[org_id]])
        for org_id in plan.leave:
            owners = [u for u, r in members[org_id] if r == "owner" and u != person.user_id]
            contact = await store.address_of(owners[0]) if owners else None
            await store.scrub_org(
                org_id, person.user_id, scrubber, closed=False, contact_email=contact
            )
            await store.end_membership(org_id, person.user_id, plan.roles[org_id])
        await store.end_sessions(person.user_id)
        await store.erase_person(person.user_id, person.email)
        return DeletionSummary(plan.close, tuple(sorted(plan.close + plan.leave)))


# -- the export ---------------------------------------------------------------------------


def export_document(
    exported_at: str,
    account: dict[str, Any],
    memberships: list[dict[str, Any]],
    organizations: list[dict[str, Any]],
) -> dict[str, Any]:
    """The export's one JSON document, format_version 1:

    {"format_version": 1, "kind": "dynoyard-account-export", "exported_at": ISO 8601 UTC,
     "account": {user_id, email, name, language, verified, created_at, terms_accepted_at,
                 "sign_in_identities": [{provider, provider_id, linked_at}],
                 "pending_invitations": [{org_id, invitation_id, email, role, invited_by,
                                          created_at, expires_at}]},
     "memberships": [{org_id, role}],
     "organizations": [{org_id, role, name, balance_usd, settings, created_at,
                        contact_email (owners and admins only),
                        "keys": [metadata: never a key or its hash],
                        "credit_movements": [{at, kind, amount_usd, reason}],
                        "usage": {"records": [as exported], "truncated": bool},
                        "audit_log": {"scope": "organization" | "own_actions",
                                      "entries": [...], "truncated": bool}}],
     "limits": {...}, "not_included": [...]}

    Money is a decimal string. A later format adds keys; a changed meaning bumps
    format_version."""
    return {
        "format_version": EXPORT_FORMAT_VERSION,
        "kind": "dynoyard-account-export",
        "exported_at": exported_at,
        "account": account,
        "memberships": memberships,
        "organizations": organizations,
        "limits": {
            "usage_records": EXPORT_USAGE_RECORDS,
            "usage_records_note": "at most this many usage records in the whole document,"
            " oldest first; where 'truncated' is true, GET /api/orgs/{org_id}/usage pages"
            " through all of them",
            "audit_entries": EXPORT_AUDIT_ENTRIES,
            "audit_entries_note": "the newest this many entries of each organization's log"
            " are looked at, and the document holds at most this many in all; GET"
            " /api/orgs/{org_id}/audit pages through all of them",
        },
        "not_included": [
            "API keys and their hashes: only their metadata (a key is shown once, at creation)",
            "session and sign-in link tokens: only their SHA-256 is stored, for at most their"
            " lifetime",
            "prompts and completions: never stored, except an organization's opt-in response"
            " cache (minutes to a day) and up to 1 KB of an upstream error",
        ],
    }
