"""An organization's API keys: list, create and rotate (the only answers that ever hold a
key) and revoke. Every member may read keys (names, hints, scopes, limits and the hour each
was last used, never a key); admins and owners create, rotate and revoke them
(`manage_keys`). Creating or rotating a key also needs a verified email address.
Authorization: `orgs.org_access`, as on every organization route."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from dynoyard.console.auth import runtime
from dynoyard.console.errors import ConsoleError, bad_request, forbidden, not_found
from dynoyard.console.orgs import OrgAccess, allowed, org_not_found
from dynoyard.console.validation import clean_name
from dynoyard.domain.accounts import UnknownKey, UnknownOrg
from dynoyard.domain.administration import (
    MAX_GRACE_SECONDS,
    MAX_KEY_DAYS,
    Administration,
    InvalidRequest,
    KeyNotActive,
    key_expiry,
)
from dynoyard.domain.limits import InvalidLimit, key_limits

MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}")

router = APIRouter(prefix="/api/orgs/{org_id}")

ReadKeys = Annotated[OrgAccess, allowed("read_keys", write=False)]
ManageKeys = Annotated[OrgAccess, allowed("manage_keys", write=True)]


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


class RotateKeyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # How long the old key keeps working, for clients to move over; 0: revoked at once.
    grace_seconds: StrictInt = Field(0, ge=0, le=MAX_GRACE_SECONDS)


@router.get("/keys")
async def list_keys(request: Request, access: ReadKeys) -> dict[str, Any]:
    rt = runtime(request)
    items = await rt.store.org_keys(access.org_id)
    now = rt.clock()
    keys = sorted((_key_view(i, now) for i in items), key=lambda k: (k["created_at"], k["key_id"]))
    return {"keys": keys}


@router.post("/keys", status_code=201)
async def create_key(request: Request, body: CreateKeyBody, access: ManageKeys) -> dict[str, Any]:
    """The only answer that ever holds the key."""
    _require_verified(access)
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


@router.post("/keys/{key_id}/rotate", status_code=201)
async def rotate_key(
    request: Request, key_id: str, access: ManageKeys, body: RotateKeyBody | None = None
) -> dict[str, Any]:
    """A new key in place of a live one (the rules: Administration.rotate_key); the only
    answer that ever holds the new key. A replayed rotation finds the old key rotated: 409."""
    _require_verified(access)
    rt = runtime(request)
    grace = body.grace_seconds if body is not None else 0
    try:
        rotated = await rt.administration.rotate_key(access.actor, access.org_id, key_id, grace)
    except UnknownKey:
        raise not_found("No key with this id in this organization.", "key_not_found") from None
    except KeyNotActive:
        raise ConsoleError(
            409, "This key is revoked, expired or already rotated.", "key_not_active"
        ) from None
    except InvalidRequest as exc:
        raise bad_request(f"Invalid rotation: {exc}.", param=exc.param) from None
    old = rotated.old
    return {
        "key_id": rotated.new.key_id,
        "api_key": rotated.new.secret,
        "name": old.name,
        "hint": rotated.new.hint,
        "models": sorted(old.models) or None,
        "expires_at": rotated.expires_at,
        "limits": old.limits.show(),
        "revoked": False,
        "rotated_from": old.key_id,
        # When the old key stops working (epoch seconds): now, or the grace period's end.
        "rotated_from_revoked_at": rotated.grace_ends_at or int(rt.clock()),
    }


@router.delete("/keys/{key_id}")
async def revoke_key(request: Request, key_id: str, access: ManageKeys) -> dict[str, Any]:
    rt = runtime(request)
    missing = not_found("No key with this id in this organization.", "key_not_found")
    try:
        # The use case checks the key is this organization's (another's is not found).
        await rt.administration.revoke_key(access.actor, access.org_id, key_id)
    except UnknownKey:
        raise missing from None
    return {"key_id": key_id, "revoked": True}


def _require_verified(access: OrgAccess) -> None:
    if not access.caller.user.verified:
        raise forbidden("Verify your email address before creating keys.", "email_not_verified")


def _key_view(item: dict[str, Any], now: float) -> dict[str, Any]:
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
        # A rotated key in its grace period is not revoked yet; revoked_at says when it is.
        "revoked": bool(item.get("revoked", False)) or _passed(item.get("revoke_at"), now),
        "revoked_at": str(item["revoked_at"]) if item.get("revoked_at") else None,
        "rotated_from": item.get("rotated_from"),
        "rotated_to": item.get("rotated_to"),
        "last_used_at": _hour_iso(whole("last_used_hour")),
    }


def _passed(moment: Decimal | None, now: float) -> bool:
    return moment is not None and moment <= now


def _hour_iso(hour: int | None) -> str | None:
    """The hour a key was last used, as "2026-11-25T15:00:00Z" (UTC)."""
    if hour is None:
        return None
    return datetime.fromtimestamp(hour * 3600, UTC).strftime("%Y-%m-%dT%H:00:00Z")
