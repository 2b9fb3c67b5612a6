"""The cleanup function's configuration, with the same variable names as the other functions."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from dynoyard.settings import DynamoSettings


class CleanupSettings(DynamoSettings):
    public_url: str = Field("http://127.0.0.1:8080", validation_alias="DYNOYARD_PUBLIC_URL")
    outbox_dir: Path = Field(Path(".local/outbox"), validation_alias="DYNOYARD_OUTBOX_DIR")
