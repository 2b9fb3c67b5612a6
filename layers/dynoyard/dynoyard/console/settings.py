"""The console function's configuration, with the CONTRACT's variable names."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field

from dynoyard.settings import DynamoSettings


class ConsoleSettings(DynamoSettings):
    # The base URL put in emailed links; an http://127.0.0.1 or http://localhost one also
    # drops the session cookie's Secure flag (browsers do not send Secure cookies over http).
    public_url: str = Field("http://127.0.0.1:8080", validation_alias="DYNOYARD_PUBLIC_URL")
    outbox_dir: Path = Field(Path(".local/outbox"), validation_alias="DYNOYARD_OUTBOX_DIR")
    session_ttl_seconds: int = Field(
        7 * 86_400, ge=300, le=90 * 86_400, validation_alias="DYNOYARD_SESSION_TTL_SECONDS"
    )
    # A session in use is renewed (its expiry moved to now + TTL) at most this often.
    session_renew_seconds: int = Field(300, ge=0, validation_alias="DYNOYARD_SESSION_RENEW_SECONDS")
    link_ttl_seconds: int = Field(
        900, ge=60, le=86_400, validation_alias="DYNOYARD_LINK_TTL_SECONDS"
    )

    # Sign-in links sent to one address per 15 minutes (any address, with or without an
    # account, so the limit tells nothing): past it, 429 with retry-after.
    links_per_address: int = Field(5, ge=1, le=1000, validation_alias="DYNOYARD_LINKS_PER_ADDRESS")
    # Per client IP (API Gateway's sourceIp; an IPv6 client by its /64), per 15 minutes:
    # link requests, email-link callbacks, and OAuth starts and callbacks (each counted
    # apart). Past one, 429 too_many_requests with retry-after.
    links_per_ip: int = Field(20, ge=1, le=100_000, validation_alias="DYNOYARD_LINKS_PER_IP")
    link_callbacks_per_ip: int = Field(
        30, ge=1, le=100_000, validation_alias="DYNOYARD_LINK_CALLBACKS_PER_IP"
    )
    oauth_per_ip: int = Field(30, ge=1, le=100_000, validation_alias="DYNOYARD_OAUTH_PER_IP")

    # Stripe (console/billing.py): the secret key from STRIPE_SECRET_KEY, else from the
    # Secrets Manager secret DYNOYARD_STRIPE_SECRET names; STRIPE_API_BASE: a stand-in.
    stripe_secret_key: str | None = Field(None, validation_alias="STRIPE_SECRET_KEY", repr=False)
    stripe_secret_name: str | None = Field(None, validation_alias="DYNOYARD_STRIPE_SECRET")
    stripe_api_base: str | None = Field(None, validation_alias="STRIPE_API_BASE")

    # The web pages (dynoyard/web): PostHog analytics, loaded on the public pages only after
    # the visitor accepts (no key: no banner, no analytics); the operator's own legal text
    # (privacy.<lang>.html / terms.<lang>.html in this folder replace the built-in pages'
    # bodies); built assets served gzipped by the function (off on AWS, where API Gateway
    # compresses: template.yaml).
    posthog_key: str | None = Field(None, validation_alias="POSTHOG_KEY")
    posthog_host: str = Field("https://us.i.posthog.com", validation_alias="POSTHOG_HOST")
    legal_dir: Path | None = Field(None, validation_alias="DYNOYARD_LEGAL_DIR")
    gzip_assets: bool = Field(True, validation_alias="DYNOYARD_GZIP_ASSETS")

    @property
    def analytics_origin(self) -> str | None:
        """The origin the CSP lets analytics reach, or None with analytics off."""
        if not self.posthog_key:
            return None
        parts = urlsplit(self.posthog_host)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def local_http(self) -> bool:
        url = self.public_url.lower()
        return url.startswith(("http://127.0.0.1", "http://localhost"))
