"""Sign-in with Google and Discord (domain/oauth.py's port) on Authlib's httpx integration:
the authorization code flow with a random state and PKCE (S256).

`start` builds the authorize URL (Authlib's `create_authorization_url`, nothing sent);
`finish` exchanges the code with its verifier (`fetch_token`), reads the profile with the
access token, and keeps only the provider's user id, the email (lower-cased, stripped),
whether the provider verified it, and the name (at most NAME_MAX characters). The tokens are
dropped there: never stored, logged or put in an error. Every refusal, non-2xx answer,
unreadable body, timeout or network error is an OAuthFailed whose message names the
provider and a short reason, never a token, a code, a verifier or the client secret.

Authlib's httpx integration runs on `httpx2` where it is installed (in the dev venv it comes
with `openai`) and on `httpx` otherwise (the Lambda layer's pins): this adapter works with
either, and tests/integration/test_oauth.py runs it both ways.
"""

from __future__ import annotations

import asyncio
import unicodedata
import weakref
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

from dynoyard.adapters.oauth_settings import OAuthSettings
from dynoyard.domain.oauth import (
    OAuthFailed,
    OAuthProfile,
    OAuthProvider,
    OAuthStart,
    ProviderName,
)


def _http_errors() -> tuple[type[Exception], ...]:
    """The transport and status errors of whichever httpx Authlib runs on."""
    errors: list[type[Exception]] = [httpx.HTTPError]
    try:
        import httpx2
    except ImportError:
        pass
    else:
        errors.append(httpx2.HTTPError)
    return tuple(errors)


HTTP_ERRORS: Final = _http_errors()

NAME_MAX: Final = 100
EMAIL_MAX: Final = 254  # RFC 5321's path limit
PROVIDER_ID_MAX: Final = 255  # OpenID Connect's `sub`
STATE_LENGTH: Final = 43  # ~256 bits from 62 characters
VERIFIER_LENGTH: Final = 64  # RFC 7636: 43 to 128 unreserved characters
DEFAULT_TIMEOUT_SECONDS: Final = 10.0


@dataclass(frozen=True, slots=True)
class Endpoints:
    authorize_url: str
    token_url: str
    userinfo_url: str
    scopes: str

    def rebased(self, base: str | None) -> Endpoints:
        """The same paths under `base` (GOOGLE_OAUTH_BASE, DISCORD_OAUTH_BASE)."""
        if base is None:
            return self
        base = base.rstrip("/")
        return Endpoints(
            base + urlsplit(self.authorize_url).path,
            base + urlsplit(self.token_url).path,
            base + urlsplit(self.userinfo_url).path,
            self.scopes,
        )


GOOGLE: Final = Endpoints(
    authorize_url="https://accounts.google.com/o/oauth2/v2/auth",
    token_url="https://oauth2.googleapis.com/token",  # noqa: S106 (a URL, not a secret)
    userinfo_url="https://openidconnect.googleapis.com/v1/userinfo",
    scopes="openid email profile",
)
DISCORD: Final = Endpoints(
    authorize_url="https://discord.com/oauth2/authorize",
    token_url="https://discord.com/api/oauth2/token",  # noqa: S106 (a URL, not a secret)
    userinfo_url="https://discord.com/api/users/@me",
    scopes="identify email",
)


class AuthlibProvider:
    """One OAuth client. Its httpx client (an AsyncOAuth2Client) is made on first use and
    reused, one per event loop: pooled connections belong to the loop that opened them
    (adapters/http_session.py says the same of aiohttp). The client never keeps a user's
    token: `finish` sends the access token itself and clears what Authlib stored."""

    def __init__(
        self,
        name: ProviderName,
        client_id: str,
        client_secret: str,
        authorize_url: str,
        token_url: str,
        userinfo_url: str,
        scopes: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.name: ProviderName = name
        self.authorize_url = authorize_url
        self.token_url = token_url
        self.userinfo_url = userinfo_url
        self.scopes = scopes
        self._client_id = client_id
        self._client_secret = client_secret
        self._timeout = timeout
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        # Builds authorize URLs only; sends nothing, so it needs no event loop.
        self._url_client = self._new_client()

    def __repr__(self) -> str:
        return f"AuthlibProvider({self.name!r}, client_id={self._client_id!r})"

    def _new_client(self) -> Any:
        client = AsyncOAuth2Client(
            client_id=self._client_id,
            client_secret=self._client_secret,
            scope=self.scopes,
            code_challenge_method="S256",
            timeout=self._timeout,
            follow_redirects=False,
        )
        client.register_compliance_hook("access_token_response", self._check_token_response)
        return client

    def _client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None or client.is_closed:
            client = self._new_client()
            self._clients[loop] = client
        return client

    async def aclose(self) -> None:
        """Closes the running loop's client."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def start(self, redirect_uri: str) -> OAuthStart:
        state = generate_token(STATE_LENGTH)
        code_verifier = generate_token(VERIFIER_LENGTH)
        url, _ = self._url_client.create_authorization_url(
            self.authorize_url,
            state=state,
            code_verifier=code_verifier,
            redirect_uri=redirect_uri,
        )
        return OAuthStart(url=str(url), state=state, code_verifier=code_verifier)

    async def finish(self, code: str, code_verifier: str, redirect_uri: str) -> OAuthProfile:
        client = self._client()
        try:
            async with asyncio.timeout(2 * self._timeout):
                access_token = await self._exchange(client, code, code_verifier, redirect_uri)
                data = await self._userinfo(client, access_token)
        except OAuthFailed:
            raise
        except OAuthError as error:
            reason = f"the token endpoint refused the code ({_code(error.error)})"
            raise self._failed(reason) from None
        except TimeoutError:
            raise self._failed("timed out") from None
        except HTTP_ERRORS as error:
            raise self._failed(_describe(error)) from None
        except ValueError:
            raise self._failed("the token endpoint's answer is not a JSON object") from None
        return self._profile(data)

    async def _exchange(self, client: Any, code: str, code_verifier: str, redirect_uri: str) -> str:
        try:
            token = await client.fetch_token(
                self.token_url,
                grant_type="authorization_code",
                code=code,
                code_verifier=code_verifier,
                redirect_uri=redirect_uri,
            )
        finally:
            client.token = None  # Authlib keeps the last token on the client: not here
        access_token = token.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise self._failed("the token endpoint answered no access token")
        return access_token

    async def _userinfo(self, client: Any, access_token: str) -> dict[str, Any]:
        response = await client.request(
            "GET",
            self.userinfo_url,
            withhold_token=True,
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
        )
        if not 200 <= response.status_code < 300:
            raise self._failed(f"the profile endpoint answered HTTP {response.status_code}")
        try:
            data = response.json()
        except ValueError:
            raise self._failed("the profile is not JSON") from None
        if not isinstance(data, dict):
            raise self._failed("the profile is not a JSON object")
        return data

    def _check_token_response(self, response: Any) -> Any:
        """Authlib's hook on the token endpoint's answer: anything but 2xx is a refusal,
        named by OAuth's error code when the body has one."""
        status = response.status_code
        if 200 <= status < 300:
            return response
        try:
            body = response.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if 400 <= status < 500:
            reason = f"HTTP {status}" + (f", {_code(error)}" if error else "")
            raise self._failed(f"the token endpoint refused the code ({reason})")
        raise self._failed(f"the token endpoint answered HTTP {status}")

    def _failed(self, reason: str) -> OAuthFailed:
        return OAuthFailed(f"{self.name} sign-in failed: {reason}")

    def _profile(self, data: dict[str, Any]) -> OAuthProfile:
        if self.name == "google":
            provider_id = data.get("sub")
            verified = data.get("email_verified") in (True, "true")
            name = data.get("name")
        else:
            provider_id = data.get("id")
            verified = data.get("verified") is True
            name = data.get("global_name") or data.get("username")
        if isinstance(provider_id, int) and not isinstance(provider_id, bool):
            provider_id = str(provider_id)
        if (
            not isinstance(provider_id, str)
            or not provider_id.strip()
            or len(provider_id) > PROVIDER_ID_MAX
        ):
            raise self._failed("the profile has no usable user id")
        return OAuthProfile(
            provider=self.name,
            provider_id=provider_id.strip(),
            email=self._email(data.get("email")),
            email_verified=verified,
            name=clean_name(name),
        )

    def _email(self, value: object) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self._failed("the profile has no email address")
        email = value.strip().lower()
        local, at, domain = email.rpartition("@")
        if (
            not at
            or not local
            or "." not in domain
            or len(email) > EMAIL_MAX
            or any(c.isspace() or not c.isprintable() for c in email)
        ):
            raise self._failed("the profile's email address is not usable")
        return email


def clean_name(value: object) -> str:
    """A display name: printable characters, single spaces, at most NAME_MAX; "" if none."""
    if not isinstance(value, str):
        return ""
    printable = "".join(
        " " if c.isspace() else c for c in value if c.isspace() or unicodedata.category(c)[0] != "C"
    )
    return " ".join(printable.split())[:NAME_MAX].rstrip()


def _code(error: object) -> str:
    """An OAuth error code as the provider named it, if it looks like one (RFC 6749's
    error codes are short ASCII words); never its free-text description."""
    if isinstance(error, str) and 0 < len(error) <= 40 and error.replace("_", "").isalpha():
        return error
    return "unnamed error"


def _describe(error: Exception) -> str:
    """A status error says its status (Authlib raises one for a token endpoint's 5xx when
    its hook is not reached); a transport error, its kind (ConnectError, ReadTimeout, ...)."""
    status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(status, int):
        return f"the provider answered HTTP {status}"
    return f"could not reach the provider ({type(error).__name__})"


def oauth_providers(settings: OAuthSettings) -> dict[str, OAuthProvider]:
    """The providers offered: those whose client id and secret are both set."""
    providers: dict[str, OAuthProvider] = {}
    configured: tuple[tuple[ProviderName, str | None, Any, Endpoints], ...] = (
        (
            "google",
            settings.google_client_id,
            settings.google_client_secret,
            GOOGLE.rebased(settings.google_oauth_base),
        ),
        (
            "discord",
            settings.discord_client_id,
            settings.discord_client_secret,
            DISCORD.rebased(settings.discord_oauth_base),
        ),
    )
    for name, client_id, secret, endpoints in configured:
        if client_id and secret is not None:
            providers[name] = AuthlibProvider(
                name,
                client_id,
                secret.get_secret_value(),
                endpoints.authorize_url,
                endpoints.token_url,
                endpoints.userinfo_url,
                endpoints.scopes,
                timeout=settings.timeout_seconds,
            )
    return providers
