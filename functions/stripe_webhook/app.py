"""Stripe webhook Lambda: verified Stripe events to the ledger (dynoyard/billing/webhook.py),
behind API Gateway (REST, `POST /webhooks/stripe`)."""

from dynoyard.api.lambda_entry import mangum_handler
from dynoyard.billing.webhook import create_webhook_app

app = create_webhook_app()
handler = mangum_handler(app)
