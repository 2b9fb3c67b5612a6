"""Auto-recharge's settings: `GET/PUT /api/orgs/{org_id}/billing/auto-recharge`.

Owners and admins read the settings and may turn auto-recharge off; only an owner turns it
on (the consent to charge the saved card unattended, recorded with who and when, and in the
audit log). It needs a card saved by an earlier checkout made with `save_card`. Amounts are
decimal strings of whole cents: the recharge within the checkout's bounds, the monthly cap
at least one recharge. Rules in domain/alerts.py; the recharges themselves run from the
alerts' markers (`dynoyard billing alerts`, the scheduled cleanup).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr

from dynoyard.console.auth import runtime
from dynoyard.console.errors import ConsoleError, bad_request
from dynoyard.console.orgs import OrgAccess, allowed, org_access, org_not_found
from dynoyard.domain.accounts import UnknownOrg
from dynoyard.domain.alerts import (
    AutoRecharge,
    InvalidAutoRecharge,
    NoSavedCard,
    auto_recharge_settings,
)
from dynoyard.domain.money import format_usd

ReadBilling = Annotated[OrgAccess, allowed("read_billing", write=False)]
ManageBilling = Annotated[OrgAccess, allowed("manage_billing", write=True)]
PATH = "/billing/auto-recharge"

router = APIRouter(prefix="/api/orgs/{org_id}")


class AutoRechargeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: StrictBool
    # Decimal strings ("20.00"), never JSON numbers.
    threshold_usd: StrictStr
    amount_usd: StrictStr
    monthly_cap_usd: StrictStr


@router.get(PATH)
async def get_auto_recharge(request: Request, access: ReadBilling) -> dict[str, Any]:
    admin = runtime(request).admin
    return _view(await admin.auto_recharge(access.org_id), await admin.saved_card(access.org_id))


@router.put(PATH)
async def put_auto_recharge(
    request: Request, body: AutoRechargeBody, access: ManageBilling
) -> dict[str, Any]:
    if body.enabled:  # the owner's consent: the one check, for the action that needs it
        await org_access(request, access.org_id, access.caller, "consent_auto_recharge")
    rt = runtime(request)
    saved = await rt.admin.auto_recharge(access.org_id)
    card = await rt.admin.saved_card(access.org_id)
    try:
        settings = auto_recharge_settings(
            body.enabled,
            body.threshold_usd[:32],
            body.amount_usd[:32],
            body.monthly_cap_usd[:32],
            saved,
            card,
            access.caller.user.user_id,
            rt.clock(),
        )
    except InvalidAutoRecharge as exc:
        raise bad_request(f"Invalid auto-recharge setting: {exc}.", param=exc.param) from None
    except NoSavedCard:
        raise ConsoleError(
            409,
            "Auto-recharge needs a saved card: top up once with save_card, then turn it on.",
            "no_saved_card",
            param="enabled",
        ) from None
    try:
        await rt.admin.set_auto_recharge(access.org_id, settings)
    except UnknownOrg:
        raise org_not_found(access.org_id) from None
    await rt.administration.record(
        access.actor,
        access.org_id,
        "auto_recharge_changed",
        access.org_id,
        enabled=settings.enabled,
        threshold_usd=format_usd(settings.threshold_usd),
        amount_usd=format_usd(settings.amount_usd),
        monthly_cap_usd=format_usd(settings.monthly_cap_usd),
    )
    return _view(settings, card)


def _view(settings: AutoRecharge | None, card: str | None) -> dict[str, Any]:
    """The settings (nulls before the first PUT) and whether a card is saved, never the
    card's id."""
    shown: dict[str, Any] = {
        "enabled": False,
        "threshold_usd": None,
        "amount_usd": None,
        "monthly_cap_usd": None,
        "consent_at": None,
        "consent_by": None,
    }
    if settings is not None:
        shown |= settings.show()
    return shown | {"card_saved": card is not None}
