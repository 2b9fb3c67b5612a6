"""The cleanup function's configuration, with the same variable names as the other functions."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CleanupSettings(BaseSettings):
    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore")

    accounts_table: str = Field("dynoyard-accounts", validation_alias="ACCOUNTS_TABLE")
    usage_table: str = Field("dynoyard-usage", validation_alias="USAGE_TABLE")
    cache_table: str = Field("dynoyard-cache", validation_alias="CACHE_TABLE")
    dynamodb_endpoint: str | None = Field(None, validation_alias="AWS_ENDPOINT_URL_DYNAMODB")
    aws_region: str = Field(
        "us-east-1", validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION")
    )
    public_url: str = Field("http://127.0.0.1:8080", validation_alias="DYNOYARD_PUBLIC_URL")
    outbox_dir: Path = Field(Path(".local/outbox"), validation_alias="DYNOYARD_OUTBOX_DIR")
