"""Sign-in with Google or Discord: OAuth 2.0 authorization code with state and PKCE,
through one port (adapters/oauth.py, on Authlib and httpx). Only the profile's email, name
and provider id are kept."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

ProviderName = Literal["google", "discord"]


@dataclass(frozen=True, slots=True)
class OAuthStart:
    """Where to send the browser, and what to keep (in a short-lived, signed cookie or the
    session store) until the callback: the state and the PKCE code verifier."""

    url: str
    state: str
    code_verifier: str


@dataclass(frozen=True, slots=True)
class OAuthProfile:
    provider: ProviderName
    provider_id: str
    email: str
    email_verified: bool
    name: str


class OAuthProvider(Protocol):
    name: ProviderName

    def start(self, redirect_uri: str) -> OAuthStart: ...

    async def finish(self, code: str, code_verifier: str, redirect_uri: str) -> OAuthProfile:
        """Exchanges the code (with the PKCE verifier) and reads the profile; raises
        OAuthFailed on any refusal. The caller checks the state first."""


class OAuthFailed(Exception):
    """The provider refused the exchange or answered something unusable."""
