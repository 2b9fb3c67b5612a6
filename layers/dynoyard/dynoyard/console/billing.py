"""Billing in the console: top up through Stripe Checkout, and the ledger.

`POST /api/orgs/{org_id}/billing/checkout {"amount_usd", "save_card"?}` (owners and
admins, with the CSRF token): a decimal string of USD between MIN_TOPUP_USD and
MAX_TOPUP_USD with at most 2 decimals; answers 201 `{"url"}`, Stripe's page to pay on. The
organization's Stripe customer is made once and reused. The browser's return to the success
URL grants nothing: credits come only from the verified webhook event.

`GET /api/orgs/{org_id}/billing/transactions?before&limit` (owners and admins: it shows
cards' brands and last fours and Stripe's ids): the ledger, newest first, a page at a time,
with the balance. Amounts are decimal strings.

Stripe unreachable (or misconfigured): 503 payments_unavailable, nothing recorded.
Authorization: `orgs.org_access`, as on every organization route."""

from __future__ import annotations

import logging
import re
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from dynoyard.adapters.stripe import PaymentsError
from dynoyard.console.auth import runtime
from dynoyard.console.errors import ConsoleError, bad_request
from dynoyard.console.orgs import OrgAccess, allowed, org_not_found
from dynoyard.domain.accounts import UnknownOrg
from dynoyard.domain.billing import (
    DEFAULT_HISTORY_PAGE,
    MAX_TOPUP_USD,
    MIN_TOPUP_USD,
    Entry,
    InvalidLedgerQuery,
    InvalidTopup,
)
from dynoyard.domain.money import format_usd
from dynoyard.domain.topups import start_topup

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/orgs/{org_id}/billing")

ManageBilling = Annotated[OrgAccess, allowed("manage_billing", write=True)]
ReadBilling = Annotated[OrgAccess, allowed("read_billing", write=False)]
# Digits, and at most 2 decimals: no sign, exponent, spaces, NaN or Infinity.
AMOUNT = re.compile(r"[0-9]{1,7}(\.[0-9]{1,2})?")


class CheckoutBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_usd: StrictStr = Field(max_length=32)  # a decimal string, never a JSON number
    # Keep the card for auto-recharge (Stripe's setup_future_usage=off_session).
    save_card: StrictBool = False


@router.post("/checkout", status_code=201)
async def checkout(request: Request, body: CheckoutBody, access: ManageBilling) -> dict[str, str]:
    rt = runtime(request)
    amount = _amount(body.amount_usd)
    console = rt.settings.public_url.rstrip("/") + "/console/billing"
    try:
        _, url = await start_topup(
            rt.ledger,
            rt.payments,
            access.org_id,
            amount,
            success_url=f"{console}?checkout=success",
            cancel_url=f"{console}?checkout=cancelled",
            save_card=body.save_card,
        )
    except InvalidTopup as exc:
        raise bad_request(f"Invalid amount_usd: {exc}.", param="amount_usd") from None
    except UnknownOrg:
        raise org_not_found(access.org_id) from None
    except PaymentsError as exc:
        log.warning("console: checkout not created: %s", type(exc).__name__)
        raise ConsoleError(
            503,
            "Payments are unavailable right now (Stripe could not be reached). Please retry.",
            "payments_unavailable",
            type="api_error",
            headers={"retry-after": "5"},
        ) from None
    await rt.administration.record(
        access.actor,
        access.org_id,
        "checkout_created",
        access.org_id,
        amount_usd=format_usd(amount),
        save_card=body.save_card,
    )
    return {"url": url}


@router.get("/transactions")
async def transactions(
    request: Request,
    access: ReadBilling,
    before: Annotated[str | None, Query(max_length=512)] = None,
    limit: int = DEFAULT_HISTORY_PAGE,
) -> dict[str, Any]:
    """`next`: the cursor of the following (older) page, null on the last."""
    rt = runtime(request)
    try:
        entries, cursor = await rt.ledger.history(access.org_id, before, limit)
        org = await rt.admin.get_org(access.org_id)
    except InvalidLedgerQuery as exc:
        raise bad_request(f"Invalid {exc.param}: {exc}.", param=exc.param) from None
    except UnknownOrg:
        raise org_not_found(access.org_id) from None
    return {
        "org_id": access.org_id,
        "balance_usd": format_usd(org.balance_usd),
        "transactions": [_entry_view(entry) for entry in entries],
        "next": cursor,
    }


def _amount(text: str) -> Decimal:
    if not AMOUNT.fullmatch(text):
        raise bad_request(
            "Invalid amount_usd: a decimal string of USD with at most 2 decimals"
            f' ("25" or "25.50"), between {MIN_TOPUP_USD} and {MAX_TOPUP_USD}.',
            param="amount_usd",
        )
    return Decimal(text)


def _entry_view(entry: Entry) -> dict[str, Any]:
    return {
        "movement_id": entry.movement_id,
        "kind": entry.kind,
        "amount_usd": format_usd(entry.amount_usd),
        "currency": entry.currency,
        "at": entry.at,
        "card_brand": entry.card_brand,
        "card_last4": entry.card_last4,
        "reason": entry.reason,
        "date": entry.date,
        "stripe": {
            "event": entry.stripe_event_id,
            "checkout_session": entry.stripe_checkout_session,
            "payment_intent": entry.stripe_payment_intent,
            "charge": entry.stripe_charge,
            "refund": entry.stripe_refund,
            "dispute": entry.stripe_dispute,
        },
    }
