"""Auto-recharge's payments (domain/alerts.py's Recharger) through StripePayments: a
declined card, or a request Stripe refuses (a detached card), is `RechargeDeclined` (the
owners are told, nothing retried); Stripe unreachable stays an error (tried next run, with
the same idempotency key)."""

from __future__ import annotations

import os

from dynoyard.adapters.stripe import CardDeclined, PaymentsRefused, StripePayments
from dynoyard.domain.alerts import RechargeDeclined


class StripeRecharges:
    def __init__(self, payments: StripePayments) -> None:
        self._payments = payments

    @classmethod
    def from_environment(cls) -> StripeRecharges | None:
        """None when no Stripe key is configured (the recharges then stay due)."""
        if not (os.environ.get("STRIPE_SECRET_KEY") or os.environ.get("DYNOYARD_STRIPE_SECRET")):
            return None
        return cls(StripePayments.from_environment())

    async def recharge(
        self,
        customer_id: str,
        payment_method: str,
        amount_cents: int,
        org_id: str,
        idempotency_key: str,
    ) -> str:
        try:
            return await self._payments.recharge(
                customer_id, payment_method, amount_cents, org_id, idempotency_key
            )
        except (CardDeclined, PaymentsRefused) as exc:
            raise RechargeDeclined(str(exc)) from None
