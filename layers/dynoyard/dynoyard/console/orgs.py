"""Organization routes: the one authorization check (`org_access`), settings and the audit
log. Keys live in console/keys.py and the team in console/team.py, on the same check.

Authorization is decided in one place, `org_access`: the caller's membership of `org_id`,
read from `ORG#<org_id>/MEMBER#<user_id>`, then the account rules' one permission table
(domain/administration.py) for the route's action. Not a member (or no such organization,
or an id of the wrong shape): 404, the same answer either way, so ids of other
organizations reveal nothing. A member whose role does not allow the action: 403.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from dynoyard.console.auth import Caller, SignedIn, SignedInCsrf, runtime
from dynoyard.console.errors import ConsoleError, bad_request, forbidden, not_found
from dynoyard.console.validation import clean_name
from dynoyard.domain.accounts import (
    UNCHANGED,
    InvalidSetting,
    Org,
    Unchanged,
    UnknownOrg,
    parse_low_balance,
)
from dynoyard.domain.administration import (
    Action,
    Actor,
    InvalidRequest,
    can,
)
from dynoyard.domain.audit import InvalidAuditQuery
from dynoyard.domain.money import format_usd
from dynoyard.observability import log_context

ORG_ID = re.compile(r"org_[0-9a-f]{16}")
KEY_ID = re.compile(r"key_[0-9a-f]{16}")
MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}")

router = APIRouter(prefix="/api/orgs/{org_id}")


@dataclass(frozen=True, slots=True)
class OrgAccess:
    caller: Caller
    org_id: str
    actor: Actor


def org_not_found(org_id: str) -> ConsoleError:
    return not_found(
        "No organization with this id, or you are not one of its members.", "org_not_found"
    )


async def org_access(request: Request, org_id: str, caller: Caller, action: Action) -> OrgAccess:
    """The one authorization check of every organization route."""
    if not ORG_ID.fullmatch(org_id):
        raise org_not_found(org_id)
    log_context(org_id=org_id)  # the org asked for (an id, checked in shape only)
    membership = await runtime(request).store.membership(org_id, caller.user.user_id)
    if membership is None:
        raise org_not_found(org_id)
    ip = request.client.host if request.client else None
    actor = Actor(membership.role, caller.user.user_id, ip=ip)
    if not can(actor, action):
        raise forbidden(
            f"Your role in this organization ({membership.role}) does not allow this"
            f" ({action.replace('_', ' ')}).",
            "insufficient_role",
        )
    return OrgAccess(caller, org_id, actor)


def allowed(action: Action, *, write: bool) -> Any:
    """A dependency: the caller may do `action` in the path's organization. `write`: a
    state-changing call, which also needs the X-CSRF-Token."""
    if write:

        async def writer(request: Request, org_id: str, caller: SignedInCsrf) -> OrgAccess:
            return await org_access(request, org_id, caller, action)

        return Depends(writer)

    async def reader(request: Request, org_id: str, caller: SignedIn) -> OrgAccess:
        return await org_access(request, org_id, caller, action)

    return Depends(reader)


# -- settings and the audit log -------------------------------------------------------------

ReadOrg = Annotated[OrgAccess, allowed("read_org", write=False)]
ChangeSettings = Annotated[OrgAccess, allowed("change_settings", write=True)]


class SettingsPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cache_enabled: StrictBool | None = None
    cache_ttl_seconds: StrictInt | None = None
    # A decimal string ("5.00"), never a JSON number; null removes the threshold.
    low_balance_usd: StrictStr | None = Field(None, max_length=32)
    name: StrictStr | None = Field(None, max_length=400)


@router.get("/settings")
async def get_settings(request: Request, access: ReadOrg) -> dict[str, Any]:
    return _settings_view(await _org(request, access.org_id))


@router.patch("/settings")
async def patch_settings(
    request: Request, body: SettingsPatch, access: ChangeSettings
) -> dict[str, Any]:
    """The response cache (on/off, TTL 60..86,400 s) and the low-balance alert's threshold
    (a decimal string of USD, 0..1,000,000, at most 6 decimals; null: no alert) through the
    account rules. Turning the cache off deletes the organization's entries. The org's rpm
    limit is the operator's (read only here). `name` renames the organization (1 to 100
    characters, no control characters)."""
    rt = runtime(request)
    name = None
    if body.name is not None:
        name = clean_name(body.name)
        if not name:
            raise bad_request(
                "The name must be 1 to 100 characters, without control characters.", param="name"
            )
    low_balance: Decimal | Unchanged | None = UNCHANGED
    if "low_balance_usd" in body.model_fields_set:  # given, possibly as null
        low_balance = _threshold(body.low_balance_usd)
    try:
        org = await rt.administration.change_settings(
            access.actor,
            access.org_id,
            cache_enabled=body.cache_enabled,
            cache_ttl_seconds=body.cache_ttl_seconds,
            low_balance_usd=low_balance,
            name=name,
        )
    except InvalidRequest as exc:
        raise bad_request(f"Invalid setting: {exc}.", param=exc.param) from None
    except UnknownOrg:
        raise org_not_found(access.org_id) from None
    return _settings_view(org)


ReadAudit = Annotated[OrgAccess, allowed("read_audit", write=False)]


@router.get("/audit")
async def read_audit(
    request: Request, access: ReadAudit, before: str | None = None, limit: int = 50
) -> dict[str, Any]:
    """The organization's audit log, newest first, a page at a time (owners and admins):
    `next` is the cursor of the following page, null on the last."""
    rt = runtime(request)
    try:
        entries, cursor = await rt.administration.audit_entries(
            access.actor, access.org_id, before, limit
        )
    except InvalidAuditQuery as exc:
        raise bad_request(f"Invalid {exc.param}: {exc}.", param=exc.param) from None
    return {"entries": [entry.show() for entry in entries], "next": cursor}


async def _org(request: Request, org_id: str) -> Org:
    try:
        return await runtime(request).admin.get_org(org_id)
    except UnknownOrg:
        raise org_not_found(org_id) from None


def _threshold(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        return parse_low_balance(text)
    except InvalidSetting as exc:
        raise bad_request(f"Invalid setting: {exc}.", param="low_balance_usd") from None


def _settings_view(org: Org) -> dict[str, Any]:
    return {
        "org_id": org.org_id,
        "name": org.name,
        "cache_enabled": org.cache_enabled,
        "cache_ttl_seconds": org.cache_ttl_seconds,
        "rate_limit_rpm": org.rate_limit_rpm,
        "low_balance_usd": (
            format_usd(org.low_balance_usd) if org.low_balance_usd is not None else None
        ),
    }
