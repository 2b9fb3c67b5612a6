"""An organization's team: members and their roles, invitations by email, leaving, and
new organizations. The rules (who may do what to whom, the last owner, invitations' life)
are domain/team.py's; authorization is `orgs.org_access`, as on every organization route,
then the rules with the target's role. Routes here only read the body and answer.

Invitations are emailed through the console's EmailSender, in the invitee's language if
they have an account, else the inviter's; the link,
`<DYNOYARD_PUBLIC_URL>/console/invitations/accept?token=…`, opens the console, which posts
the token to `POST /api/invitations/accept` with the signed-in user's session and CSRF
token. The token is never stored (only its SHA-256) and never answered by the API.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from dynoyard.console.auth import MAX_TOKEN, SignedInCsrf, runtime
from dynoyard.console.errors import ConsoleError, bad_request, forbidden, not_found
from dynoyard.console.orgs import OrgAccess, allowed, org_not_found
from dynoyard.console.validation import clean_name, normalized_email, valid_email
from dynoyard.domain.accounts import UnknownOrg
from dynoyard.domain.administration import NotAllowed
from dynoyard.domain.email import EmailFailed
from dynoyard.domain.messages import invitation as invitation_message
from dynoyard.domain.messages import language_of
from dynoyard.domain.team import (
    INVITATION_DAYS,
    ORGS_PER_USER,
    AlreadyMember,
    InvalidRole,
    Invitation,
    InvitationForSomeoneElse,
    LastOwner,
    MembershipChanged,
    NewInvitation,
    Team,
    TooManyInvitations,
    TooManyOrgs,
    UnknownInvitation,
    UnknownMember,
    check_role,
)

log = logging.getLogger(__name__)

USER_ID = re.compile(r"usr_[0-9a-f]{16}")
INVITATION_ID = re.compile(r"inv_[0-9a-f]{16}")
ACCEPT_PATH = "/console/invitations/accept"

router = APIRouter(prefix="/api")

ReadTeam = Annotated[OrgAccess, allowed("read_org", write=False)]
# Any member may call (leaving, or to be told their role does not allow it): the team's
# rules decide with the target's role.
ActOnTeam = Annotated[OrgAccess, allowed("read_org", write=True)]
ReadInvitations = Annotated[OrgAccess, allowed("manage_members", write=False)]
ManageMembers = Annotated[OrgAccess, allowed("manage_members", write=True)]


class RoleBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: StrictStr = Field(max_length=20)


class InvitationBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: StrictStr = Field(max_length=320)
    role: StrictStr = Field("member", max_length=20)


class AcceptBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: StrictStr = Field(min_length=1, max_length=MAX_TOKEN)


class NewOrgBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StrictStr = Field(max_length=400)


def team(request: Request) -> Team:
    rt = runtime(request)
    return Team(rt.store, rt.administration, rt.clock)


@contextmanager
def team_rules() -> Iterator[None]:
    """The team's refusals as the console answers them."""
    try:
        yield
    except NotAllowed as exc:
        only_owners = "manage owners" in str(exc)
        raise forbidden(
            "Only owners may make, demote or remove an owner, or invite one."
            if only_owners
            else "Your role in this organization does not allow managing its members.",
            "insufficient_role",
        ) from None
    except InvalidRole as exc:
        raise bad_request(f"Invalid role: {exc}.", param="role", code="invalid_role") from None
    except LastOwner:
        raise ConsoleError(
            409,
            "An organization needs an owner: make someone else an owner first.",
            "last_owner",
        ) from None
    except MembershipChanged:
        raise ConsoleError(
            409,
            "The team changed while this was asked (a role or a membership). Reload and retry.",
            "membership_changed",
        ) from None
    except AlreadyMember:
        raise ConsoleError(
            409, "This person is already a member of the organization.", "already_member"
        ) from None
    except UnknownMember:
        raise not_found("No member of this organization has this id.", "member_not_found") from None
    except TooManyInvitations as exc:
        raise ConsoleError(
            429,
            "This organization has sent as many invitations as it may today (UTC)."
            " Retry after the time in 'retry-after'.",
            "too_many_invitations",
            headers={"retry-after": str(exc.retry_after)},
        ) from None


# -- members -------------------------------------------------------------------------


@router.get("/orgs/{org_id}/members")
async def list_members(request: Request, access: ReadTeam) -> dict[str, Any]:
    """Every member's id, email, name and role (members see their team)."""
    rt = runtime(request)
    memberships = await rt.store.org_members(access.org_id)
    users = await asyncio.gather(*(rt.store.get_user(m.user_id) for m in memberships))
    members = []
    for membership, user in zip(memberships, users, strict=True):
        if user is None:
            continue
        members.append(
            {
                "user_id": user.user_id,
                "email": user.email,
                "name": user.name,
                "role": membership.role,
            }
        )
    return {"members": sorted(members, key=lambda m: (m["email"], m["user_id"]))}


@router.patch("/orgs/{org_id}/members/{user_id}")
async def change_role(
    request: Request, user_id: str, body: RoleBody, access: ActOnTeam
) -> dict[str, Any]:
    """Owners and admins change roles among members and admins; only owners make or
    demote an owner; the last owner stays one (409 last_owner)."""
    with team_rules():
        role = check_role(body.role)
        _check_user_id(user_id)
        changed = await team(request).change_role(access.actor, access.org_id, user_id, role)
    return {"user_id": user_id, "role": changed}


@router.delete("/orgs/{org_id}/members/{user_id}")
async def remove_member(request: Request, user_id: str, access: ActOnTeam) -> dict[str, Any]:
    """Removes a member (owners and admins; an owner only by an owner), or, one's own id,
    leaves the organization (anyone but its last owner)."""
    with team_rules():
        _check_user_id(user_id)
        role = await team(request).remove(access.actor, access.org_id, user_id)
    leaving = user_id == access.caller.user.user_id
    return {"user_id": user_id, "role": role, "removed": True, "left": leaving}


def _check_user_id(user_id: str) -> None:
    if not USER_ID.fullmatch(user_id):
        raise UnknownMember(user_id)


# -- invitations ---------------------------------------------------------------------


@router.post("/orgs/{org_id}/invitations", status_code=201)
async def invite(request: Request, body: InvitationBody, access: ManageMembers) -> dict[str, Any]:
    """Emails an invitation (owners and admins; to be an owner, owners only). A pending
    invitation of the organization to the same address is replaced: its link stops
    working. At most 50 a day per organization (429)."""
    rt = runtime(request)
    email = valid_email(body.email)
    if email is None:
        raise bad_request("That is not an email address.", param="email", code="invalid_email")
    address = normalized_email(email)
    invitee = await rt.store.find_user_by_email(address)
    inviter = access.caller.user
    try:
        org = await rt.admin.get_org(access.org_id)
    except UnknownOrg:
        raise org_not_found(access.org_id) from None
    language = language_of(invitee.language if invitee is not None else inviter.language)

    async def deliver(new: NewInvitation) -> None:
        link = f"{rt.settings.public_url.rstrip('/')}{ACCEPT_PATH}?token={new.token}"
        await rt.email.send(
            invitation_message(email, org.name, inviter.name, link, language, INVITATION_DAYS)
        )

    with team_rules():
        role = check_role(body.role)
        try:
            new = await team(request).invite(
                access.actor,
                access.org_id,
                email,
                address,
                role,
                invitee.user_id if invitee is not None else None,
                deliver,
            )
        except EmailFailed as exc:
            log.warning("console: invitation email not accepted by the provider: %s", exc)
            raise ConsoleError(
                503,
                "The invitation could not be emailed right now (nothing was sent). Please"
                " retry shortly.",
                "email_unavailable",
                type="api_error",
            ) from None
    view = _invitation_view(new.invitation)
    view["replaced"] = new.replaced
    return view


@router.get("/orgs/{org_id}/invitations")
async def list_invitations(request: Request, access: ReadInvitations) -> dict[str, Any]:
    """The pending invitations (owners and admins), oldest first."""
    found = await runtime(request).store.pending_invitations(access.org_id)
    shown = sorted(found, key=lambda i: (i.created_at, i.invitation_id))
    return {"invitations": [_invitation_view(i) for i in shown]}


@router.delete("/orgs/{org_id}/invitations/{invitation_id}")
async def revoke_invitation(
    request: Request, invitation_id: str, access: ManageMembers
) -> dict[str, Any]:
    """Its link stops working at once (an invitation to be an owner: owners only)."""
    missing = not_found(
        "No pending invitation with this id in this organization.", "invitation_not_found"
    )
    if not INVITATION_ID.fullmatch(invitation_id):
        raise missing
    with team_rules():
        try:
            await team(request).revoke(access.actor, access.org_id, invitation_id)
        except UnknownInvitation:
            raise missing from None
    return {"invitation_id": invitation_id, "revoked": True}


@router.post("/invitations/accept")
async def accept_invitation(
    request: Request, body: AcceptBody, caller: SignedInCsrf
) -> dict[str, Any]:
    """Joins the invitation's organization with its role. The signed-in user's address
    must be verified and be the invited one (403); an invitation works once, until it
    expires or is revoked or replaced (400 invitation_invalid); a member already: 409."""
    rt = runtime(request)
    user = caller.user
    ip = request.client.host if request.client else None
    with team_rules():
        try:
            joined = await team(request).accept(
                user.user_id,
                normalized_email(user.email) if user.verified else None,
                body.token,
                ip,
            )
        except UnknownInvitation:
            raise bad_request(
                "This invitation is invalid, has expired, was revoked or was already used."
                " Ask for a new one.",
                param="token",
                code="invitation_invalid",
            ) from None
        except InvitationForSomeoneElse as exc:
            if exc.unverified:
                raise forbidden(
                    "Verify your email address (sign in by emailed link) before accepting"
                    " invitations.",
                    "email_not_verified",
                ) from None
            raise forbidden(
                "This invitation was sent to another email address. Sign in with that"
                " address to accept it.",
                "invitation_email_mismatch",
            ) from None
    name = ""
    with suppress(UnknownOrg):
        name = (await rt.admin.get_org(joined.org_id)).name
    return {"org_id": joined.org_id, "name": name, "role": joined.role}


def _invitation_view(found: Invitation) -> dict[str, Any]:
    return {
        "invitation_id": found.invitation_id,
        "email": found.email,
        "role": found.role,
        "invited_by": found.invited_by,
        "created_at": found.created_at,
        "expires_at": found.expires_at,
    }


# -- organizations ---------------------------------------------------------------------


@router.post("/orgs", status_code=201)
async def create_org(request: Request, body: NewOrgBody, caller: SignedInCsrf) -> dict[str, Any]:
    """A new organization owned by the caller; switch to it with its id in the path. At
    most 20 per user besides the one made at sign-up (409 too_many_orgs)."""
    rt = runtime(request)
    name = clean_name(body.name)
    if not name:
        raise bad_request(
            "The name must be 1 to 100 characters, without control characters.", param="name"
        )
    ip = request.client.host if request.client else None
    try:
        org_id = await team(request).create_org(
            rt.admin, caller.user.user_id, caller.user.email, name, ip
        )
    except TooManyOrgs:
        raise ConsoleError(
            409,
            f"You have created {ORGS_PER_USER} organizations, the most one person may.",
            "too_many_orgs",
        ) from None
    return {"org_id": org_id, "name": name, "role": "owner"}
