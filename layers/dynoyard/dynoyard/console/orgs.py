"""Organization routes: API keys, the member list, settings.

Authorization is decided in one place, `org_access`: the caller's membership of `org_id`,
read from `ORG#<org_id>/MEMBER#<user_id>`, then the account rules' one permission table
(domain/administration.py) for the route's action. Not a member (or no such organization,
or an id of the wrong shape): 404, the same answer either way, so ids of other
organizations reveal nothing. A member whose role does not allow the action: 403.

Roles: every member may read keys (names, hints, scopes and limits, never a key); admins
and owners create and revoke them (`manage_keys`). Creating a key also needs a verified
email address.
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
from dynoyard.domain.accounts import Org, UnknownKey, UnknownOrg
from dynoyard.domain.administration import (
    MAX_KEY_DAYS,
    Action,
    Actor,
    Administration,
    InvalidRequest,
    can,
    key_expiry,
)
from dynoyard.domain.audit import InvalidAuditQuery
from dynoyard.domain.limits import InvalidLimit, key_limits

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


ReadKeys = Annotated[OrgAccess, allowed("read_keys", write=False)]
ManageKeys = Annotated[OrgAccess, allowed("manage_keys", write=True)]


# -- keys --------------------------------------------------------------------------------


class LimitsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rpm: StrictInt | None = None
    tpm: StrictInt | None = None
    daily_usd: StrictStr | None = Field(None, max_length=32)  # decimal strings, never floats
    monthly_usd: StrictStr | None = Field(None, max_length=32)


class CreateKeyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StrictStr = Field("", max_length=400)
    models: list[StrictStr] | None = Field(None, max_length=100)  # None or []: every model
    expires_in_days: StrictInt | None = Field(None, ge=1, le=MAX_KEY_DAYS)
    limits: LimitsBody | None = None


@router.get("/keys")
async def list_keys(request: Request, access: ReadKeys) -> dict[str, Any]:
    items = await runtime(request).store.org_keys(access.org_id)
    keys = sorted((_key_view(i) for i in items), key=lambda k: (k["created_at"], k["key_id"]))
    return {"keys": keys}


@router.post("/keys", status_code=201)
async def create_key(request: Request, body: CreateKeyBody, access: ManageKeys) -> dict[str, Any]:
    """The only answer that ever holds the key."""
    if not access.caller.user.verified:
        raise forbidden("Verify your email address before creating keys.", "email_not_verified")
    rt = runtime(request)
    name = clean_name(body.name)
    if name is None:
        raise bad_request(
            "The name must be at most 100 characters, without control characters.", param="name"
        )
    models = frozenset(body.models or ())
    for model in models:
        if not MODEL_ID.fullmatch(model):
            raise bad_request(f"Not a model id: {model[:80]!r}.", param="models")
    try:
        limits = key_limits(**(body.limits.model_dump() if body.limits else {}))
    except InvalidLimit as exc:
        raise bad_request(f"Invalid limit: {exc}.", param="limits") from None
    now = rt.clock()
    try:
        new = await Administration(rt.admin, lambda: now, rt.admin.audit_log).create_key(
            access.actor, access.org_id, name, models, body.expires_in_days, limits
        )
    except InvalidRequest as exc:
        raise bad_request(f"Invalid key: {exc}.") from None
    except UnknownOrg:
        raise org_not_found(access.org_id) from None
    expires_at = key_expiry(body.expires_in_days, now)  # as the rules computed it
    return {
        "key_id": new.key_id,
        "api_key": new.secret,
        "name": name,
        "hint": new.hint,
        "models": sorted(models) or None,
        "expires_at": expires_at,
        "limits": limits.show(),
        "revoked": False,
    }


@router.delete("/keys/{key_id}")
async def revoke_key(request: Request, key_id: str, access: ManageKeys) -> dict[str, Any]:
    rt = runtime(request)
    missing = not_found("No key with this id in this organization.", "key_not_found")
    try:
        # The use case checks the key is this organization's (another's is not found).
        await Administration(rt.admin, rt.clock, rt.admin.audit_log).revoke_key(
            access.actor, access.org_id, key_id
        )
    except UnknownKey:
        raise missing from None
    return {"key_id": key_id, "revoked": True}


def _key_view(item: dict[str, Any]) -> dict[str, Any]:
    def whole(name: str) -> int | None:
        found = item.get(name)
        return int(found) if found is not None else None

    def usd(name: str) -> str | None:
        found = item.get(name)
        return str(Decimal(found)) if found is not None else None

    return {
        "key_id": str(item.get("key_id", "")),
        "name": str(item.get("name", "")),
        "hint": str(item.get("hint", "")),
        "created_at": str(item.get("created_at", "")),
        "models": list(item["models"]) if item.get("models") else None,
        "expires_at": whole("key_expires_at"),
        "limits": {
            "rpm": whole("limit_rpm"),
            "tpm": whole("limit_tpm"),
            "daily_usd": usd("limit_daily_usd"),
            "monthly_usd": usd("limit_monthly_usd"),
        },
        "revoked": bool(item.get("revoked", False)),
        "revoked_at": str(item["revoked_at"]) if item.get("revoked_at") else None,
    }


# -- members and settings ------------------------------------------------------------------

ReadOrg = Annotated[OrgAccess, allowed("read_org", write=False)]
ChangeSettings = Annotated[OrgAccess, allowed("change_settings", write=True)]


@router.get("/members")
async def list_members(request: Request, access: ReadOrg) -> dict[str, Any]:
    """Every member's id, email, name and role (members see their team)."""
    rt = runtime(request)
    members = []
    for membership in await rt.store.org_members(access.org_id):
        user = await rt.store.get_user(membership.user_id)
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


class SettingsPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cache_enabled: StrictBool | None = None
    cache_ttl_seconds: StrictInt | None = None


@router.get("/settings")
async def get_settings(request: Request, access: ReadOrg) -> dict[str, Any]:
    return _settings_view(await _org(request, access.org_id))


@router.patch("/settings")
async def patch_settings(
    request: Request, body: SettingsPatch, access: ChangeSettings
) -> dict[str, Any]:
    """The response cache (on/off, TTL 60..86,400 s) through the account rules. Turning
    the cache off deletes the organization's entries. The org's rpm limit is the
    operator's (read only here)."""
    rt = runtime(request)
    try:
        org = await Administration(rt.admin, rt.clock, rt.admin.audit_log).change_settings(
            access.actor,
            access.org_id,
            cache_enabled=body.cache_enabled,
            cache_ttl_seconds=body.cache_ttl_seconds,
        )
    except InvalidRequest as exc:
        raise bad_request(f"Invalid setting: {exc}.", param="cache_ttl_seconds") from None
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
        entries, cursor = await Administration(
            rt.admin, rt.clock, rt.admin.audit_log
        ).audit_entries(access.actor, access.org_id, before, limit)
    except InvalidAuditQuery as exc:
        raise bad_request(f"Invalid {exc.param}: {exc}.", param=exc.param) from None
    return {"entries": [entry.show() for entry in entries], "next": cursor}


async def _org(request: Request, org_id: str) -> Org:
    try:
        return await runtime(request).admin.get_org(org_id)
    except UnknownOrg:
        raise org_not_found(org_id) from None


def _settings_view(org: Org) -> dict[str, Any]:
    return {
        "org_id": org.org_id,
        "name": org.name,
        "cache_enabled": org.cache_enabled,
        "cache_ttl_seconds": org.cache_ttl_seconds,
        "rate_limit_rpm": org.rate_limit_rpm,
    }
