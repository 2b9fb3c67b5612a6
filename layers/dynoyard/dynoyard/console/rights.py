"""The user's rights in the console: `GET /api/me/export` (everything held about the user
and their organizations, one JSON document to download) and `DELETE /api/me` (the account
deleted, confirmed with its address). The rules are domain/rights.py's; the DynamoDB work
adapters/dynamo/rights_store.py's."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from dynoyard.adapters.dynamo.console_store import Membership
from dynoyard.adapters.dynamo.rights_store import RightsStore
from dynoyard.console.auth import (
    Caller,
    SignedIn,
    SignedInCsrf,
    clear_session_cookie,
    runtime,
)
from dynoyard.console.errors import ConsoleError, bad_request
from dynoyard.console.keys import _key_view
from dynoyard.console.runtime import ConsoleRuntime
from dynoyard.console.validation import normalized_email
from dynoyard.domain.administration import Actor
from dynoyard.domain.audit import MAX_PAGE, iso_at
from dynoyard.domain.money import format_usd
from dynoyard.domain.rights import (
    EXPORT_AUDIT_ENTRIES,
    EXPORT_INTERVAL_SECONDS,
    EXPORT_USAGE_RECORDS,
    AccountDeletion,
    ConfirmationMismatch,
    Person,
    audit_visible_to,
    check_confirmation,
    export_document,
)
from dynoyard.domain.usage import RETENTION_DAYS

router = APIRouter(prefix="/api")
USAGE_PAGE = 1000


def rights_store(rt: ConsoleRuntime) -> RightsStore:
    return RightsStore(
        rt.client, rt.settings.accounts_table, rt.settings.usage_table, rt.admin, rt.clock
    )


# -- the export ----------------------------------------------------------------------------


@router.get("/me/export")
async def export(request: Request, caller: SignedIn) -> Response:
    """Everything held about the user and their organizations, as one JSON document to
    download (domain/rights.py's `export_document` describes it). One per user per minute."""
    rt = runtime(request)
    rights = rights_store(rt)
    user = caller.user
    wait = await rights.take_export_slot(user.user_id, EXPORT_INTERVAL_SECONDS)
    if wait is not None:
        raise ConsoleError(
            429,
            "An export was made less than a minute ago. Retry after the time in 'retry-after'.",
            "too_many_exports",
            headers={"retry-after": str(wait)},
        )
    account = {
        "user_id": user.user_id,
        "email": user.email,
        "name": user.name,
        "language": user.language,
        "verified": user.verified,
        "created_at": user.created_at,
        "terms_accepted_at": user.terms_accepted_at,
        "sign_in_identities": await rights.identities(user.user_id),
        "pending_invitations": await _invitations_to(rt, user.email),
    }
    memberships = await rt.store.user_orgs(user.user_id)
    budget = Budget(EXPORT_USAGE_RECORDS, EXPORT_AUDIT_ENTRIES)
    organizations = []
    for membership in memberships:
        found = await _organization(rt, rights, membership, budget)
        if found is not None:
            organizations.append(found)
    now = rt.clock()
    document = export_document(
        iso_at(now),
        account,
        [{"org_id": m.org_id, "role": m.role} for m in memberships],
        organizations,
    )
    ip = request.client.host if request.client else None
    for membership in memberships:
        actor = Actor(membership.role, user.user_id, ip=ip)
        await rt.administration.record(
            actor, membership.org_id, "export", user.user_id, what="account", format="json"
        )
    day = datetime.fromtimestamp(now, UTC).date().isoformat()
    return Response(
        json.dumps(document, ensure_ascii=False, separators=(",", ":")),
        media_type="application/json",
        headers={
            "content-disposition": f'attachment; filename="dynoyard-export-{day}.json"',
            "cache-control": "no-store",
        },
    )


async def _invitations_to(rt: ConsoleRuntime, email: str) -> list[dict[str, Any]]:
    """Invitations to the user's address not yet accepted (console_store.py's lookup)."""
    shown = []
    for org_id, invitation_id in await rt.store.invitations_to(normalized_email(email)):
        found = await rt.store.get_invitation(org_id, invitation_id)
        if found is not None:
            shown.append(
                {
                    "org_id": found.org_id,
                    "invitation_id": found.invitation_id,
                    "email": found.email,
                    "role": found.role,
                    "invited_by": found.invited_by,
                    "created_at": found.created_at,
                    "expires_at": found.expires_at,
                }
            )
    return shown


async def _organization(
    rt: ConsoleRuntime, rights: RightsStore, membership: Membership, budget: Budget
) -> dict[str, Any] | None:
    org_id, role = membership.org_id, membership.role
    item = await rights.org_item(org_id)
    if item is None or item.get("closed_at"):
        return None
    org = await rt.admin.get_org(org_id)
    shown: dict[str, Any] = {
        "org_id": org_id,
        "role": role,
        "name": org.name,
        "balance_usd": format_usd(org.balance_usd),
        "settings": org.show()["settings"],
        "created_at": str(item.get("created_at", "")),
    }
    if role in ("owner", "admin"):
        shown["contact_email"] = org.email
    keys = [_key_view(k, rt.clock()) for k in await rt.store.org_keys(org_id)]
    shown["keys"] = sorted(keys, key=lambda k: (k["created_at"], k["key_id"]))
    shown["credit_movements"] = [_movement(e) for e in await rights.ledger(org_id)]
    shown["usage"] = await _usage(rt, org_id, budget)
    shown["audit_log"] = await _audit(rt, org_id, membership, budget)
    return shown


def _movement(entry: dict[str, Any]) -> dict[str, Any]:
    _, at, _ = str(entry["sk"]).split("#", 2)
    return {
        "at": at,
        "kind": str(entry.get("kind", "")),
        "amount_usd": format_usd(Decimal(entry.get("amount_usd", 0))),
        "reason": str(entry.get("reason", "")),
    }


async def _usage(rt: ConsoleRuntime, org_id: str, budget: Budget) -> dict[str, Any]:
    """The organization's records within retention, oldest first, while the document's
    budget lasts."""
    now = datetime.fromtimestamp(rt.clock(), UTC)
    start, end = now - timedelta(days=RETENTION_DAYS), now + timedelta(minutes=1)
    records: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        if budget.usage <= 0:  # is anything left out? one record's read says
            more, _ = await rt.admin.usage_page(org_id, start, end, 1, cursor)
            return {"records": records, "truncated": bool(more)}
        page, cursor = await rt.admin.usage_page(
            org_id, start, end, min(USAGE_PAGE, budget.usage), cursor
        )
        records += [r.export() for r in page]
        budget.usage -= len(page)
        if cursor is None:
            return {"records": records, "truncated": False}


async def _audit(
    rt: ConsoleRuntime, org_id: str, membership: Membership, budget: Budget
) -> dict[str, Any]:
    """Owners and admins: the organization's log; members: their own entries. The newest
    EXPORT_AUDIT_ENTRIES entries of the log are looked at, and the document holds at most
    as many in all."""
    entries: list[dict[str, Any]] = []
    looked_at, cursor, full = 0, None, False
    while looked_at < EXPORT_AUDIT_ENTRIES:
        limit = min(MAX_PAGE, EXPORT_AUDIT_ENTRIES - looked_at)
        page, cursor = await rt.admin.audit_log.entries(org_id, cursor, limit)
        looked_at += len(page)
        for entry in page:
            if audit_visible_to(membership.role, membership.user_id, entry.actor):
                if budget.audit <= 0:
                    full = True
                    break
                entries.append(entry.show())
                budget.audit -= 1
        if cursor is None or full:
            break
    scope = "organization" if membership.role in ("owner", "admin") else "own_actions"
    return {"scope": scope, "entries": entries, "truncated": full or cursor is not None}


@dataclass(slots=True)
class Budget:
    """What the document may still hold, every organization together (it must fit
    Lambda's 6 MB buffered answer: measured, 10,000 usage records are 4.0 MB of compact
    JSON, so 8,000 records and 4,000 audit entries leave room for the rest)."""

    usage: int
    audit: int


# -- the deletion --------------------------------------------------------------------------


class DeleteAccountBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    confirm_email: StrictStr | None = Field(None, max_length=400)


@router.delete("/me")
async def delete_account(
    request: Request,
    response: Response,
    caller: SignedInCsrf,
    body: DeleteAccountBody | None = None,
) -> dict[str, Any]:
    """Deletes the account (domain/rights.py says what goes, what closes and what is kept
    without personal data). The body must confirm the account's address."""
    rt = runtime(request)
    try:
        check_confirmation(body.confirm_email if body else None, caller.user.email)
    except ConfirmationMismatch:
        raise bad_request(
            'To delete the account, send {"confirm_email": <this account\'s address>}.',
            param="confirm_email",
            code="confirmation_mismatch",
        ) from None
    summary = await AccountDeletion(rights_store(rt), rt.administration).delete(_person(caller))
    await rt.store.delete_session(caller.session.session_hash)
    clear_session_cookie(response, rt.settings)
    response.headers["cache-control"] = "no-store"
    return summary.show()


def _person(caller: Caller) -> Person:
    return Person(caller.user.user_id, caller.user.email, caller.user.name)
