"""Configuration, read once from the environment with the CONTRACT's variable names."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class DynamoSettings(BaseSettings):
    """What every function reads to reach DynamoDB: the tables and where they are."""

    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore")

    accounts_table: str = Field("dynoyard-accounts", validation_alias="ACCOUNTS_TABLE")
    usage_table: str = Field("dynoyard-usage", validation_alias="USAGE_TABLE")
    cache_table: str = Field("dynoyard-cache", validation_alias="CACHE_TABLE")
    # boto3's own variables: unset on AWS, where the region is Lambda's and the endpoint
    # DynamoDB's public one.
    dynamodb_endpoint: str | None = Field(None, validation_alias="AWS_ENDPOINT_URL_DYNAMODB")
    aws_region: str = Field(
        "us-east-1", validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION")
    )


class GatewaySettings(DynamoSettings):
    idempotency_table: str = Field("dynoyard-idempotency", validation_alias="IDEMPOTENCY_TABLE")
    models_file: Path = Field(Path("config/models.yaml"), validation_alias="DYNOYARD_MODELS_FILE")
    provider_keys_secret: str | None = Field(None, validation_alias="PROVIDER_KEYS_SECRET")
    metrics_disabled: bool = Field(False, validation_alias="POWERTOOLS_METRICS_DISABLED")

    # Explicit limits (README, "Limits").
    max_body_bytes: int = Field(4 * MIB, ge=1024, validation_alias="DYNOYARD_MAX_BODY_BYTES")
    max_response_bytes: int = Field(
        6 * MIB, ge=1024, validation_alias="DYNOYARD_MAX_RESPONSE_BYTES"
    )
    key_cache_seconds: float = Field(5.0, ge=0, validation_alias="DYNOYARD_KEY_CACHE_SECONDS")
    # Per client IP, before authentication (domain/ip_guard.py says how each is counted).
    ip_requests_per_minute: int = Field(
        1200, ge=1, validation_alias="DYNOYARD_IP_REQUESTS_PER_MINUTE"
    )
    ip_failed_keys_per_minute: int = Field(
        20, ge=1, validation_alias="DYNOYARD_IP_FAILED_KEYS_PER_MINUTE"
    )
    upstream_connect_timeout: float = Field(
        5.0, gt=0, validation_alias="DYNOYARD_UPSTREAM_CONNECT_TIMEOUT"
    )
    upstream_read_timeout: float = Field(
        60.0, gt=0, validation_alias="DYNOYARD_UPSTREAM_READ_TIMEOUT"
    )
    # Across fallbacks and retries; below the function's timeout (and API Gateway's 29 s for
    # the REST entrance), so the gateway settles a request rather than Lambda killing it.
    request_deadline_seconds: float = Field(
        25.0, gt=0, le=900, validation_alias="DYNOYARD_REQUEST_DEADLINE_SECONDS"
    )
    # Retries and circuit breakers (domain/resilience.py; README, "Retries, fallbacks and
    # circuit breaking").
    upstream_retries: int = Field(2, ge=0, le=5, validation_alias="DYNOYARD_UPSTREAM_RETRIES")
    breaker_failures: int = Field(5, ge=0, validation_alias="DYNOYARD_BREAKER_FAILURES")
    breaker_open_seconds: float = Field(
        30.0, gt=0, le=3600, validation_alias="DYNOYARD_BREAKER_OPEN_SECONDS"
    )


@lru_cache(maxsize=1)
def gateway_settings() -> GatewaySettings:
    return GatewaySettings()
