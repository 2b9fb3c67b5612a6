"""The Stripe webhook function's configuration, with the CONTRACT's variable names."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WebhookSettings(BaseSettings):
    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore")

    # The endpoint's signing secret (whsec_...) and the API key for card look-ups: from the
    # environment locally, else from the Secrets Manager secret DYNOYARD_STRIPE_SECRET names.
    stripe_webhook_secret: str | None = Field(None, validation_alias="STRIPE_WEBHOOK_SECRET")
    stripe_secret_key: str | None = Field(None, validation_alias="STRIPE_SECRET_KEY")
    stripe_secret_name: str | None = Field(None, validation_alias="DYNOYARD_STRIPE_SECRET")
    # None: https://api.stripe.com; `make dev` and the tests: the stand-in's address.
    stripe_api_base: str | None = Field(None, validation_alias="STRIPE_API_BASE")
    accounts_table: str = Field("dynoyard-accounts", validation_alias="ACCOUNTS_TABLE")
    idempotency_table: str = Field("dynoyard-idempotency", validation_alias="IDEMPOTENCY_TABLE")
    # Failed events' ids go to this SQS queue; unset (local): to the log only.
    webhook_dlq_url: str | None = Field(None, validation_alias="WEBHOOK_DLQ_URL")
    dynamodb_endpoint: str | None = Field(None, validation_alias="AWS_ENDPOINT_URL_DYNAMODB")
    aws_region: str = Field(
        "us-east-1", validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION")
    )
