"""The Stripe webhook (webhook.py): verified Stripe events applied to the ledger."""
