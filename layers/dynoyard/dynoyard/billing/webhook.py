"""`POST /webhooks/stripe`: Stripe's events, verified, applied to the ledger once.

1. The `Stripe-Signature` header is checked with the `stripe` library against
   STRIPE_WEBHOOK_SECRET, with a 300-second tolerance: a bad, stale or missing signature is
   400 and nothing is recorded (no ledger entry, no idempotency record).
2. Powertools Idempotency (DynamoDB persistence on IDEMPOTENCY_TABLE, keyed by the event
   id) wraps the handling: a delivery of an event already handled answers the first
   outcome; one arriving while the same event is being handled gets 409 (Stripe retries).
   The ledger's own guards (MOVEMENT#) keep it exact even after a record expires.
3. `domain/billing.BillingEvents` maps the event to movements and applies them. A failure
   answers 500 (Stripe retries for three days), is recorded for retry (its id, type and
   error code only: `FailedEvents`) and counts in the `WebhookFailures` metric.

Only ids, the event type and the outcome are logged; the payload never is.
"""

from __future__ import annotations

import asyncio
import json
import time
import warnings
from dataclasses import asdict
from typing import Any

import stripe
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
)
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from dynoyard.adapters.dynamo.billing_store import BillingStore
from dynoyard.adapters.dynamo.client import DynamoClient
from dynoyard.adapters.secrets import ProviderKeys
from dynoyard.billing.failed_events import LoggedFailedEvents, SqsFailedEvents
from dynoyard.billing.settings import WebhookSettings
from dynoyard.domain.billing import BillingEvents, EventFailure, FailedEvents, PaymentsApi
from dynoyard.observability import logger, metrics

PATH = "/webhooks/stripe"
SIGNATURE_TOLERANCE_SECONDS = 300
# Stripe's events are a few KiB; anything far larger is not one.
MAX_PAYLOAD_BYTES = 256 * 1024
# How long a handled event answers its first outcome: past Stripe's retries (3 days), so a
# redelivery is answered, not run again (DESIGN.md: the idempotency table, > 3 days). Were it
# run again, the ledger's guards would make it a no-op.
IDEMPOTENCY_SECONDS = 4 * 86_400


def error(status: int, message: str, type_: str, code: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": type_, "code": code}}, status_code=status
    )


class StripeWebhook:
    """What one webhook function keeps for its life: the ledger, the Stripe client, the
    idempotency layer and the failure recorder."""

    def __init__(
        self,
        settings: WebhookSettings,
        failed_events: FailedEvents | None = None,
        payments: PaymentsApi | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = BillingStore(
            DynamoClient(settings.dynamodb_endpoint, settings.aws_region),
            settings.accounts_table,
        )
        self.events = BillingEvents(self.ledger, payments or _payments(settings))
        self.failed_events = failed_events or (
            SqsFailedEvents(settings.webhook_dlq_url)
            if settings.webhook_dlq_url
            else LoggedFailedEvents()
        )
        self._secrets = ProviderKeys(settings.stripe_secret_name)
        self.idempotency_config = IdempotencyConfig(
            event_key_jmespath="id",
            raise_on_no_idempotency_key=True,
            expires_after_seconds=IDEMPOTENCY_SECONDS,
        )
        import boto3  # made here, once: boto3 makes clients unsafely across threads

        persistence = DynamoDBPersistenceLayer(
            table_name=settings.idempotency_table,
            boto3_client=boto3.session.Session().client(
                "dynamodb",
                region_name=settings.aws_region,
                endpoint_url=settings.dynamodb_endpoint,
            ),
        )

        @idempotent_function(  # type: ignore[untyped-decorator]
            data_keyword_argument="event",
            persistence_store=persistence,
            config=self.idempotency_config,
        )
        def handle_once(event: dict[str, Any], loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
            # Powertools Idempotency is synchronous: it runs in a worker thread and the
            # ledger's coroutines on the app's own loop (its connections live there).
            outcome = asyncio.run_coroutine_threadsafe(self.events.handle(event), loop).result()
            return asdict(outcome)

        self._handle_once = handle_once

    def webhook_secret(self) -> str | None:
        return self.settings.stripe_webhook_secret or self._secrets("STRIPE_WEBHOOK_SECRET")

    async def receive(self, request: Request) -> JSONResponse:
        payload = await _read_capped(request)
        if payload is None:
            return error(
                413,
                "The payload is too large for a Stripe event.",
                "invalid_request_error",
                "payload_too_large",
            )
        secret = self.webhook_secret()
        if not secret:
            logger.error("stripe webhook: no STRIPE_WEBHOOK_SECRET configured")
            metrics.add_metric(name="WebhookFailures", unit=MetricUnit.Count, value=1)
            metrics.flush_metrics()
            return error(500, "The webhook is not configured.", "api_error", "not_configured")
        event = _verified(payload, request.headers.get("stripe-signature"), secret)
        if event is None:
            return error(
                400,
                "The Stripe-Signature header is missing, stale or does not match.",
                "invalid_request_error",
                "invalid_signature",
            )
        event_id, event_type = str(event["id"]), str(event.get("type"))
        context = request.scope.get("aws.context")
        if context is not None:  # on Lambda: an in-progress record expires with the invocation
            self.idempotency_config.register_lambda_context(context)
        try:
            outcome = await run_in_threadpool(
                self._handle_once, event=event, loop=asyncio.get_running_loop()
            )
        except IdempotencyAlreadyInProgressError:
            return error(
                409,
                "This event is being handled now; retry later.",
                "conflict",
                "event_in_progress",
            )
        except Exception as exc:  # every failure is answered 500 and recorded
            return await self._failed(event_id, event_type, exc)
        logger.info(
            "stripe event",
            extra={
                "event_id": event_id,
                "event_type": event_type,
                "applied": outcome.get("applied"),
                "already": outcome.get("already"),
                "note": outcome.get("note"),
            },
        )
        return JSONResponse({"received": True, **_shown(outcome)})

    async def _failed(self, event_id: str, event_type: str, exc: Exception) -> JSONResponse:
        code = exc.code if isinstance(exc, EventFailure) else type(exc).__name__
        logger.error(
            "stripe event failed",
            extra={"event_id": event_id, "event_type": event_type, "error": code},
        )
        metrics.add_metric(name="WebhookFailures", unit=MetricUnit.Count, value=1)
        metrics.flush_metrics()
        try:
            await self.failed_events.record(event_id, event_type, code)
        except Exception as recording:  # Stripe's retry still has the event
            logger.error(
                "stripe event failure not recorded",
                extra={"event_id": event_id, "error": type(recording).__name__},
            )
        return error(
            500, "The event could not be applied; Stripe will retry it.", "api_error", code
        )


async def _read_capped(request: Request) -> bytes | None:
    """The body, or None past MAX_PAYLOAD_BYTES (never buffered beyond it)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_PAYLOAD_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _verified(payload: bytes, header: str | None, secret: str) -> dict[str, Any] | None:
    """The event, if the signature is good and fresh and the payload an event; else None."""
    if not header or _from_the_future(header):
        return None
    try:
        text = payload.decode("utf-8")
        stripe.Webhook.construct_event(text, header, secret, tolerance=SIGNATURE_TOLERANCE_SECONDS)
        event = json.loads(text)
    except (stripe.SignatureVerificationError, ValueError):  # UnicodeDecodeError is one
        return None
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not event["id"]:
        return None
    return event


def _from_the_future(header: str) -> bool:
    """A timestamp past the tolerance ahead of our clock: the `stripe` library only checks
    for old ones, and a signature made for later would widen the replay window."""
    for part in header.split(","):
        name, _, value = part.partition("=")
        if name.strip() == "t" and value.strip().isdigit():
            return int(value) > time.time() + SIGNATURE_TOLERANCE_SECONDS
    return False


def _shown(outcome: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": outcome.get("event_id"),
        "applied": list(outcome.get("applied") or ()),
        "already": list(outcome.get("already") or ()),
        "note": outcome.get("note") or "",
    }


def _payments(settings: WebhookSettings) -> PaymentsApi | None:
    """The Stripe client for card look-ups (None: no key configured anywhere)."""
    from dynoyard.adapters.stripe import StripePayments

    if settings.stripe_secret_key:
        return StripePayments(settings.stripe_secret_key, settings.stripe_api_base)
    if settings.stripe_secret_name:
        return StripePayments.from_environment()
    return None


def create_webhook_app(
    settings: WebhookSettings | None = None,
    failed_events: FailedEvents | None = None,
    payments: PaymentsApi | None = None,
) -> FastAPI:
    """The webhook as an ASGI app with the one route `POST /webhooks/stripe` (the Lambda
    function's, and `make dev`'s beside the gateway)."""
    # Off Lambda there is no invocation deadline to give an in-progress record: it expires
    # with IDEMPOTENCY_SECONDS instead, which Powertools warns about on every event.
    warnings.filterwarnings("ignore", "Couldn't determine the remaining time", UserWarning)
    webhook = StripeWebhook(settings or WebhookSettings(), failed_events, payments)
    app = FastAPI(title="Dynoyard Stripe webhook", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.webhook = webhook

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "method_not_allowed" if exc.status_code == 405 else "not_found"
        return error(exc.status_code, str(exc.detail), "invalid_request_error", code)

    @app.post(PATH)
    async def stripe_webhook(request: Request) -> JSONResponse:
        return await webhook.receive(request)

    return app
