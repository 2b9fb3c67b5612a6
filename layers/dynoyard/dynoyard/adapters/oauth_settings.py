"""Sign-in with Google and Discord: the OAuth clients' credentials and, for tests and
`make dev`, where each provider's endpoints are (README, "Sign-in with Google and Discord").

A provider is offered only when both its client id and its client secret are set.
`GOOGLE_OAUTH_BASE` / `DISCORD_OAUTH_BASE` replace the scheme and host of all of that
provider's endpoints (keeping their paths), like `STRIPE_API_BASE`; they must be https, or
http on a loopback address (a local stand-in), so that a client secret never crosses a
network in the clear.

On AWS the client ids and secrets come from the console's secret (`DYNOYARD_CONSOLE_SECRET`,
a JSON object such as {"GOOGLE_CLIENT_ID": ..., "GOOGLE_CLIENT_SECRET": ...}, read through
Powertools Parameters like the gateway's provider keys); the environment wins over it.
"""

from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dynoyard.adapters.secrets import ProviderKeys

CREDENTIALS = (
    "GOOGLE_CLIENT_ID",
    "GOOGLE_CLIENT_SECRET",
    "DISCORD_CLIENT_ID",
    "DISCORD_CLIENT_SECRET",
)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OAuthSettings(BaseSettings):
    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore")

    google_client_id: str | None = Field(None, validation_alias="GOOGLE_CLIENT_ID")
    google_client_secret: SecretStr | None = Field(None, validation_alias="GOOGLE_CLIENT_SECRET")
    discord_client_id: str | None = Field(None, validation_alias="DISCORD_CLIENT_ID")
    discord_client_secret: SecretStr | None = Field(None, validation_alias="DISCORD_CLIENT_SECRET")
    # e.g. http://127.0.0.1:9999/google: <base>/o/oauth2/v2/auth, <base>/token,
    # <base>/v1/userinfo in place of Google's three hosts.
    google_oauth_base: str | None = Field(None, validation_alias="GOOGLE_OAUTH_BASE")
    # e.g. http://127.0.0.1:9999/discord: <base>/oauth2/authorize, <base>/api/oauth2/token,
    # <base>/api/users/@me in place of https://discord.com.
    discord_oauth_base: str | None = Field(None, validation_alias="DISCORD_OAUTH_BASE")
    # Each phase (connect, read, write, pool) of each call to a provider; a whole sign-in
    # (token exchange and profile) is bounded by twice this.
    timeout_seconds: float = Field(
        10.0, gt=0, le=60, validation_alias="DYNOYARD_OAUTH_TIMEOUT_SECONDS"
    )

    @field_validator(
        "google_client_id",
        "discord_client_id",
        "google_oauth_base",
        "discord_oauth_base",
        mode="after",
    )
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        value = value.strip() if value is not None else None
        return value or None

    @field_validator("google_client_secret", "discord_client_secret", mode="after")
    @classmethod
    def _blank_secret_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        return SecretStr(value.get_secret_value().strip())

    @field_validator("google_oauth_base", "discord_oauth_base", mode="after")
    @classmethod
    def _safe_base(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.query or parts.fragment or not parts.hostname:
            raise ValueError("must be a base URL such as http://127.0.0.1:9999/google")
        if parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(parts.hostname)):
            return value.rstrip("/")
        raise ValueError("must be https (or http on a loopback address, for a local stand-in)")


@lru_cache(maxsize=1)
def oauth_settings() -> OAuthSettings:
    """Read once per process: a changed secret is seen by new instances."""
    secret = ProviderKeys(os.environ.get("DYNOYARD_CONSOLE_SECRET") or None)
    found: dict[str, Any] = {name: value for name in CREDENTIALS if (value := secret(name))}
    return OAuthSettings(**found)
