"""Stripe through the official `stripe` library (`PaymentsApi` of domain/billing.py).

One `stripe.StripeClient` per `StripePayments`, made on first use (never at import), with
`stripe.HTTPXClient`: every call is one of the library's `_async` methods, which go through
httpx's AsyncClient. `STRIPE_API_BASE` replaces https://api.stripe.com (the local stand-in,
dynoyard/local/stripe_standin.py, in `make dev` and the tests).

Every POST carries an idempotency key, so the library's network retries (and ours) never
make a second customer, session or payment: a customer's key is derived from the
organization, a recharge's is the caller's, a checkout's is made once per call.

Errors come out as `PaymentsError`s: `PaymentsUnavailable` (Stripe unreachable, 5xx, rate
limited, or our key refused: retry later), `CardDeclined` (a card error), `PaymentsRefused`
(Stripe refused the request as invalid). The secret key is never logged.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Awaitable
from functools import cached_property
from typing import TYPE_CHECKING, Any

from dynoyard.adapters.secrets import ProviderKeys
from dynoyard.domain.billing import CURRENCY, CardOnCharge, card_of_charge, embedded_charge

if TYPE_CHECKING:
    import stripe

log = logging.getLogger(__name__)

# Three tries of 8 s and the library's backoff (about 1.5 s) stay inside API Gateway's
# 29 s, so a Stripe that hangs is the console's 503, not the gateway's 504.
TIMEOUT_SECONDS = 8.0
NETWORK_RETRIES = 2
PRODUCT_NAME = "Dynoyard credits"


class PaymentsError(Exception):
    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class PaymentsUnavailable(PaymentsError):
    """Stripe could not be reached, answered 5xx or 429, or refused our key: try later."""


class PaymentsRefused(PaymentsError):
    """Stripe refused the request itself (an invalid request, an unknown id)."""


class CardDeclined(PaymentsError):
    """The card was declined. `payment_intent`: the failed intent's id, when Stripe made one."""

    def __init__(self, message: str, code: str | None, payment_intent: str | None) -> None:
        super().__init__(message, code)
        self.payment_intent = payment_intent


class StripePayments:
    def __init__(
        self,
        secret_key: str | None,
        api_base: str | None = None,
        *,
        timeout: float = TIMEOUT_SECONDS,
        network_retries: int = NETWORK_RETRIES,
    ) -> None:
        self._secret_key = secret_key
        self._api_base = api_base or None
        self._timeout = timeout
        self._retries = network_retries

    @classmethod
    def configured(
        cls, secret_key: str | None, secret_name: str | None, api_base: str | None
    ) -> StripePayments:
        """With `secret_key`, else the STRIPE_SECRET_KEY of the environment or of the
        Secrets Manager secret `secret_name` (read on first use)."""
        if secret_key:
            return cls(secret_key, api_base)
        return _FromSecret(secret_name, api_base)

    @classmethod
    def from_environment(cls) -> StripePayments:
        """STRIPE_SECRET_KEY or the secret DYNOYARD_STRIPE_SECRET names; STRIPE_API_BASE."""
        return cls.configured(
            os.environ.get("STRIPE_SECRET_KEY"),
            os.environ.get("DYNOYARD_STRIPE_SECRET"),
            os.environ.get("STRIPE_API_BASE"),
        )

    def secret_key(self) -> str | None:
        return self._secret_key

    @cached_property
    def client(self) -> stripe.StripeClient:
        # The library loads here, on the first call, not in every function's cold start.
        import stripe

        key = self.secret_key()
        if not key:
            raise PaymentsUnavailable("Stripe is not configured (no STRIPE_SECRET_KEY).")
        return stripe.StripeClient(
            key,
            http_client=stripe.HTTPXClient(timeout=self._timeout),
            base_addresses={"api": self._api_base} if self._api_base else None,
            max_network_retries=self._retries,
        )

    # -- PaymentsApi -----------------------------------------------------------------------

    async def create_customer(self, org_id: str, email: str | None) -> str:
        """A customer named by the organization; the key makes concurrent or repeated calls
        for one organization (within Stripe's 24 hours, with the same `email`) answer the
        same customer."""
        params: dict[str, Any] = {"metadata": {"org_id": org_id}}
        if email:
            params["email"] = email
        customer = await self._call(
            self.client.v1.customers.create_async(
                params,  # type: ignore[arg-type]
                {"idempotency_key": f"dynoyard-customer-{org_id}"},
            )
        )
        return str(customer.id)

    async def create_checkout(
        self,
        customer_id: str,
        org_id: str,
        amount_cents: int,
        success_url: str,
        cancel_url: str,
        save_card: bool,
        idempotency_key: str | None = None,
    ) -> tuple[str, str]:
        """A one-off payment of `amount_cents` USD naming the organization in
        client_reference_id and in the session's and payment's metadata (so charges,
        refunds and disputes name it too). `save_card`: keep the card for auto-recharge."""
        intent_data: dict[str, Any] = {"metadata": {"org_id": org_id}}
        if save_card:
            intent_data["setup_future_usage"] = "off_session"
        params: dict[str, Any] = {
            "mode": "payment",
            "customer": customer_id,
            "client_reference_id": org_id,
            # save_card: the webhook keeps the card for auto-recharge (domain/billing.py).
            "metadata": {"org_id": org_id, **({"save_card": "true"} if save_card else {})},
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": CURRENCY,
                        "unit_amount": amount_cents,
                        "product_data": {"name": PRODUCT_NAME},
                    },
                }
            ],
            "payment_intent_data": intent_data,
            "success_url": success_url,
            "cancel_url": cancel_url,
        }
        key = idempotency_key or f"dynoyard-checkout-{org_id}-{uuid.uuid4().hex}"
        session = await self._call(
            self.client.v1.checkout.sessions.create_async(
                params,  # type: ignore[arg-type]
                {"idempotency_key": key},
            )
        )
        if not session.url:
            raise PaymentsRefused("Stripe answered a checkout session without a URL.")
        return str(session.id), str(session.url)

    async def charge(self, charge_id: str) -> CardOnCharge:
        found = await self._call(self.client.v1.charges.retrieve_async(charge_id))
        return card_of_charge(found.to_dict())

    async def charge_of_payment_intent(self, payment_intent_id: str) -> CardOnCharge:
        intent = await self._call(
            self.client.v1.payment_intents.retrieve_async(
                payment_intent_id, {"expand": ["latest_charge"]}
            )
        )
        card = embedded_charge(intent.to_dict())
        if card is None:
            raise PaymentsRefused(f"The payment intent {payment_intent_id} has no charge yet.")
        return card

    async def recharge(
        self,
        customer_id: str,
        payment_method: str,
        amount_cents: int,
        org_id: str,
        idempotency_key: str,
    ) -> str:
        """An off-session payment with the saved card (auto-recharge); its
        payment_intent.succeeded event credits it (metadata.kind "auto_recharge")."""
        params: dict[str, Any] = {
            "amount": amount_cents,
            "currency": CURRENCY,
            "customer": customer_id,
            "payment_method": payment_method,
            "payment_method_types": ["card"],
            "confirm": True,
            "off_session": True,
            "metadata": {"org_id": org_id, "kind": "auto_recharge"},
        }
        intent = await self._call(
            self.client.v1.payment_intents.create_async(
                params,  # type: ignore[arg-type]
                {"idempotency_key": idempotency_key},
            )
        )
        return str(intent.id)

    # -- errors ----------------------------------------------------------------------------

    async def _call(self, pending: Awaitable[Any]) -> Any:
        import stripe  # loaded already by `client`

        try:
            return await pending
        except stripe.CardError as exc:
            intent = getattr(exc.error, "payment_intent", None) if exc.error else None
            intent_id = getattr(intent, "id", None)
            raise CardDeclined(_said(exc), exc.code, intent_id) from None
        except (stripe.InvalidRequestError, stripe.IdempotencyError) as exc:
            log.warning("stripe: refused (%s, %s)", type(exc).__name__, exc.request_id)
            raise PaymentsRefused(_said(exc), getattr(exc, "code", None)) from None
        except stripe.StripeError as exc:
            # Connection errors, 5xx, 429, and our key refused (401/403) alike: not the caller's.
            log.warning("stripe: unavailable (%s, %s)", type(exc).__name__, exc.request_id)
            raise PaymentsUnavailable(_said(exc), getattr(exc, "code", None)) from None


class _FromSecret(StripePayments):
    """The secret key read on first use from the environment or Secrets Manager."""

    def __init__(self, secret_name: str | None, api_base: str | None) -> None:
        super().__init__(None, api_base)
        self._keys = ProviderKeys(secret_name)

    def secret_key(self) -> str | None:
        return self._keys("STRIPE_SECRET_KEY")


def _said(exc: stripe.StripeError) -> str:
    """Stripe's own message, one line (it never holds the key)."""
    return " ".join(str(exc.user_message or type(exc).__name__).split())[:300]
