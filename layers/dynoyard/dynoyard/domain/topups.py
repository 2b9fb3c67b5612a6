"""A top-up: the organization's Stripe customer (made once, then reused) and a Checkout
Session for the amount. Credits come later, only from the session's verified paid event
(domain/billing.py); starting a checkout grants nothing."""

from __future__ import annotations

from decimal import Decimal

from dynoyard.domain.billing import LedgerStore, PaymentsApi, topup_cents


async def customer_of(ledger: LedgerStore, payments: PaymentsApi, org_id: str) -> str:
    """The organization's customer. Two first top-ups at once may both ask Stripe (the
    customer's idempotency key makes it the same one); the conditional write keeps one."""
    known = await ledger.customer(org_id)
    if known is not None:
        return known
    # No email given to Stripe: Checkout asks the payer for the receipt's address.
    return await ledger.set_customer(org_id, await payments.create_customer(org_id, None))


async def start_topup(
    ledger: LedgerStore,
    payments: PaymentsApi,
    org_id: str,
    amount_usd: Decimal,
    success_url: str,
    cancel_url: str,
    save_card: bool = False,
) -> tuple[str, str]:
    """(session id, its URL) for a payment of `amount_usd` (InvalidTopup outside the
    bounds or not whole cents, before Stripe is asked anything)."""
    cents = topup_cents(amount_usd)
    customer = await customer_of(ledger, payments, org_id)
    return await payments.create_checkout(
        customer, org_id, cents, success_url, cancel_url, save_card
    )
