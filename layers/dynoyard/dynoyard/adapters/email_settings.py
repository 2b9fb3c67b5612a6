"""Email configuration, read from the environment (README, "Email").

`DYNOYARD_EMAIL_BACKEND` narrows the choice: `auto` (the default) takes Resend when its key is
set, else SES on Lambda with a sender address, else the outbox; `resend`, `ses` and `outbox`
consider only that one (and fall back to the outbox, which fails on Lambda, when it lacks
what it needs). On AWS the Resend key may come from the console's secret
(`DYNOYARD_CONSOLE_SECRET`, a JSON object read through Powertools Parameters, cached).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from dynoyard.adapters.email import DEFAULT_FROM, DEFAULT_OUTBOX, RESEND_API_BASE, email_sender
from dynoyard.adapters.secrets import ProviderKeys
from dynoyard.domain.email import EmailSender


class EmailSettings(BaseSettings):
    # An empty variable (`RESEND_API_KEY=`) counts as unset.
    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore", env_ignore_empty=True)

    outbox_dir: Path = Field(Path(DEFAULT_OUTBOX), validation_alias="DYNOYARD_OUTBOX_DIR")
    # SecretStr: the key never shows in a repr or a log line.
    resend_api_key: SecretStr | None = Field(None, validation_alias="RESEND_API_KEY")
    resend_api_base: str = Field(RESEND_API_BASE, validation_alias="RESEND_API_BASE")
    email_from: str = Field(DEFAULT_FROM, validation_alias="DYNOYARD_EMAIL_FROM")
    aws_region: str = Field(
        "us-east-1", validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION")
    )
    # Set by Lambda itself: how the code knows it runs on AWS.
    lambda_function_name: str | None = Field(None, validation_alias="AWS_LAMBDA_FUNCTION_NAME")
    backend: Literal["auto", "resend", "ses", "outbox"] = Field(
        "auto", validation_alias="DYNOYARD_EMAIL_BACKEND"
    )
    # The name of a Secrets Manager secret holding {"RESEND_API_KEY": ..., ...} (template.yaml's
    # ConsoleSecretName); RESEND_API_KEY in the environment wins over it.
    console_secret: str | None = Field(None, validation_alias="DYNOYARD_CONSOLE_SECRET")

    @property
    def email_from_configured(self) -> bool:
        """Whether the operator chose a sender (SES needs one it has verified)."""
        return "email_from" in self.model_fields_set

    def resend_key(self) -> str | None:
        if self.resend_api_key is not None:
            return self.resend_api_key.get_secret_value()
        return ProviderKeys(self.console_secret)("RESEND_API_KEY")

    def sender(self) -> EmailSender:
        backend = self.backend
        return email_sender(
            outbox_dir=self.outbox_dir,
            resend_api_key=self.resend_key() if backend in ("auto", "resend") else None,
            resend_api_base=self.resend_api_base,
            email_from=self.email_from if self.email_from_configured else None,
            on_aws=bool(self.lambda_function_name) and backend in ("auto", "ses"),
            aws_region=self.aws_region,
        )
