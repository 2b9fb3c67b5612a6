"""The team rules, in one place: who may invite whom, change whose role, remove whom, and
the last owner. The console calls these use cases; the permission table they check is the
account rules' (domain/administration.py), and each change is recorded in the audit log
through `Administration.record` once it has succeeded.

Roles, ascending: member, admin, owner.
- Owners and admins invite, remove and re-role members and admins (`manage_members`).
- Only owners make someone an owner (by invitation or by role), demote or remove an owner,
  or revoke an invitation to be an owner (`manage_owners`): an admin can not raise anyone
  above admin.
- Any member may leave (`leave_org`).
- The last owner can not leave, be removed or be demoted. The store keeps an owner count
  on the organization's item and changes it in the same transaction as the membership,
  under the condition that at least one owner is left (`LastOwner` otherwise), so two
  owners demoting each other at once can not leave none. Each change also checks, in that
  transaction, that the acting member still has the role they acted with
  (`MembershipChanged` otherwise).

Invitations: by email address, valid `INVITATION_DAYS` (7) days, used once, revocable; the
emailed link carries a random token stored only as its SHA-256. One pending invitation per
address and organization: inviting the address again replaces it (the old link stops
working; the new one has the new role and a new week). Two invitations to one address sent
at the same instant may both stay pending (the replacement is found by a query, not
guarded by a condition); whichever is accepted first makes the member, the other then
answers `AlreadyMember`. At most
`INVITATIONS_PER_ORG_PER_DAY` (50) invitations per organization per UTC day, replacements
included. A user may create at most `ORGS_PER_USER` (20) organizations (the one made at
sign-up not counted), counted by a conditional write so concurrent requests can not pass.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Literal, Protocol

from dynoyard.domain.administration import Actor, Administration, require
from dynoyard.domain.audit import AuditAction, free_text, iso_at

Role = Literal["owner", "admin", "member"]
ROLES: tuple[Role, ...] = ("member", "admin", "owner")  # ascending power
INVITATION_DAYS = 7
INVITATION_SECONDS = INVITATION_DAYS * 86_400
INVITATIONS_PER_ORG_PER_DAY = 50
ORGS_PER_USER = 20


class LastOwner(Exception):
    """The change would leave the organization without an owner."""


class MembershipChanged(Exception):
    """The acting member's role, or the target's, changed while the request ran."""


class AlreadyMember(Exception):
    """The user (or the invited address's user) is already a member."""


class UnknownMember(LookupError):
    """No member of the organization has that user id."""


class UnknownInvitation(LookupError):
    """No pending invitation: never made, revoked, replaced, used or expired."""


class TooManyInvitations(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"at most {INVITATIONS_PER_ORG_PER_DAY} invitations per day")
        self.retry_after = retry_after


class TooManyOrgs(Exception):
    """The user has created ORGS_PER_USER organizations already."""


class InvitationForSomeoneElse(PermissionError):
    """The signed-in user's verified address is not the invited one (`unverified`: the
    user's address is not verified at all)."""

    def __init__(self, unverified: bool) -> None:
        super().__init__("invitation for another address")
        self.unverified = unverified


class InvalidRole(ValueError):
    """Not one of the roles."""


@dataclass(frozen=True, slots=True)
class Invitation:
    invitation_id: str
    org_id: str
    email: str  # as typed by the inviter, trimmed
    role: Role
    invited_by: str  # the inviter's user id
    created_at: str  # UTC ISO 8601
    expires_at: int  # epoch seconds


@dataclass(frozen=True, slots=True)
class NewInvitation:
    """An invitation as written, and the token of its link (never stored, shown once)."""

    invitation: Invitation
    token: str
    replaced: str | None  # the pending invitation it replaced, if any


def check_role(value: object) -> Role:
    for role in ROLES:
        if value == role:
            return role
    raise InvalidRole(f"the role must be one of {', '.join(ROLES)}")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_invitation_token() -> tuple[str, str]:
    """A link token (32 random bytes, base64url) and the SHA-256 that is stored."""
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)


def new_invitation_id() -> str:
    return "inv_" + secrets.token_hex(8)


def _require_for_roles(actor: Actor, *roles: Role) -> None:
    """Managing members, and managing owners when an owner is involved."""
    require(actor, "manage_members")
    if "owner" in roles:
        require(actor, "manage_owners")


def may_invite(actor: Actor, role: Role) -> None:
    _require_for_roles(actor, role)


def may_change_role(actor: Actor, current: Role, new: Role) -> None:
    _require_for_roles(actor, current, new)


def may_remove(actor: Actor, target_user_id: str, target_role: Role) -> None:
    """Removing someone else, or (the same user) leaving."""
    if actor.user_id is not None and actor.user_id == target_user_id:
        require(actor, "leave_org")
    else:
        _require_for_roles(actor, target_role)


class HasRole(Protocol):
    @property
    def role(self) -> Role: ...


class TeamStore(Protocol):
    """The memberships and invitations (adapters/dynamo/console_store.py). Each write is
    one transaction with its conditions; `actor_id`/`actor_role`: the acting member, whose
    role must still be that (None: not checked, e.g. a user acting on themself)."""

    async def membership(self, org_id: str, user_id: str) -> HasRole | None: ...

    async def change_role(
        self,
        org_id: str,
        user_id: str,
        from_role: Role,
        to_role: Role,
        actor_id: str | None,
        actor_role: str | None,
    ) -> None: ...

    async def remove_member(
        self, org_id: str, user_id: str, role: Role, actor_id: str | None, actor_role: str | None
    ) -> None: ...

    async def put_invitation(
        self, invitation: Invitation, normalized_email: str, token_hash: str
    ) -> str | None: ...

    async def count_in_window(
        self, subject: str, limit: int, window_seconds: int
    ) -> int | None: ...

    async def get_invitation(self, org_id: str, invitation_id: str) -> Invitation | None: ...

    async def revoke_invitation(self, org_id: str, invitation_id: str) -> Invitation: ...

    async def invitation_by_token(self, token_hash: str) -> tuple[Invitation, str] | None: ...

    async def accept_invitation(
        self, invitation: Invitation, normalized_email: str, token_hash: str, user_id: str
    ) -> None: ...

    async def reserve_org(self, user_id: str, cap: int) -> None: ...

    async def add_member(self, org_id: str, user_id: str, role: Role) -> None: ...


class OrgMaker(Protocol):
    async def create_org(self, name: str, email: str) -> str: ...


Deliver = Callable[[NewInvitation], Awaitable[None]]


class Team:
    """The team's use cases: each checks the rules, then writes, then records."""

    def __init__(self, store: TeamStore, audit: Administration, clock: Callable[[], float]) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock

    async def member(self, org_id: str, user_id: str) -> HasRole:
        found = await self._store.membership(org_id, user_id)
        if found is None:
            raise UnknownMember(user_id)
        return found

    async def change_role(self, actor: Actor, org_id: str, user_id: str, role: Role) -> Role:
        require(actor, "manage_members")  # before anything about the target is looked up
        current = (await self.member(org_id, user_id)).role
        may_change_role(actor, current, role)
        if current == role:
            return role  # nothing to change, nothing recorded
        self_change = actor.user_id == user_id
        await self._store.change_role(
            org_id,
            user_id,
            current,
            role,
            None if self_change else actor.user_id,
            None if self_change else actor.role,
        )
        await self._audit.record(
            actor, org_id, "member_role_changed", user_id, from_role=current, to_role=role
        )
        return role

    async def remove(self, actor: Actor, org_id: str, user_id: str) -> Role:
        """Removes a member, or (the actor themself) leaves; the role they had."""
        leaving = actor.user_id == user_id
        if not leaving:
            require(actor, "manage_members")
        role = (await self.member(org_id, user_id)).role
        may_remove(actor, user_id, role)
        await self._store.remove_member(
            org_id,
            user_id,
            role,
            None if leaving else actor.user_id,
            None if leaving else actor.role,
        )
        action: AuditAction = "member_left" if leaving else "member_removed"
        await self._audit.record(actor, org_id, action, user_id, role=role)
        return role

    async def invite(
        self,
        actor: Actor,
        org_id: str,
        email: str,
        normalized_email: str,
        role: Role,
        existing_user_id: str | None,
        deliver: Deliver,
    ) -> NewInvitation:
        """Writes the invitation (replacing a pending one to the address), emails it by
        `deliver`, then records it. Delivery failing withdraws the invitation and raises."""
        may_invite(actor, role)
        if existing_user_id is not None and await self._store.membership(org_id, existing_user_id):
            raise AlreadyMember(existing_user_id)
        now = self._clock()
        token, hashed = new_invitation_token()
        invitation = Invitation(
            invitation_id=new_invitation_id(),
            org_id=org_id,
            email=email,
            role=role,
            invited_by=actor.audit_name,
            created_at=iso_at(now),
            expires_at=int(now) + INVITATION_SECONDS,
        )
        wait = await self._store.count_in_window(
            f"invite_org#{org_id}", INVITATIONS_PER_ORG_PER_DAY, 86_400
        )
        if wait is not None:
            raise TooManyInvitations(wait)
        replaced = await self._store.put_invitation(invitation, normalized_email, hashed)
        new = NewInvitation(invitation, token, replaced)
        try:
            await deliver(new)
        except BaseException:
            with suppress(UnknownInvitation):  # used or revoked already: nothing to undo
                await self._store.revoke_invitation(org_id, invitation.invitation_id)
            raise
        await self._audit.record(
            actor,
            org_id,
            "member_invited",
            invitation.invitation_id,
            role=role,
            replaces=replaced,
        )
        return new

    async def revoke(self, actor: Actor, org_id: str, invitation_id: str) -> Invitation:
        require(actor, "manage_members")
        found = await self._store.get_invitation(org_id, invitation_id)
        if found is None:
            raise UnknownInvitation(invitation_id)
        may_invite(actor, found.role)
        revoked = await self._store.revoke_invitation(org_id, invitation_id)
        await self._audit.record(
            actor, org_id, "invitation_revoked", invitation_id, role=revoked.role
        )
        return revoked

    async def accept(
        self,
        user_id: str,
        verified_normalized_email: str | None,
        token: str,
        ip: str | None,
    ) -> Invitation:
        """Joins the invitation's organization with its role, using it up. The user's
        address must be verified and be the invited one (`InvitationForSomeoneElse`)."""
        hashed = token_hash(token)
        found = await self._store.invitation_by_token(hashed)
        if found is None:
            raise UnknownInvitation("token")
        invitation, invited_address = found
        if verified_normalized_email != invited_address:
            raise InvitationForSomeoneElse(verified_normalized_email is None)
        await self._store.accept_invitation(invitation, invited_address, hashed, user_id)
        joined = Actor(invitation.role, user_id, ip=ip)
        await self._audit.record(
            joined,
            invitation.org_id,
            "member_joined",
            user_id,
            role=invitation.role,
            invitation_id=invitation.invitation_id,
        )
        return invitation

    async def create_org(
        self, orgs: OrgMaker, user_id: str, email: str, name: str, ip: str | None
    ) -> str:
        """A new organization owned by the user, within ORGS_PER_USER."""
        await self._store.reserve_org(user_id, ORGS_PER_USER)
        org_id = await orgs.create_org(name, email)
        await self._store.add_member(org_id, user_id, "owner")
        await self._audit.record(
            Actor("owner", user_id, ip=ip), org_id, "org_created", org_id, name=free_text(name)
        )
        return org_id
