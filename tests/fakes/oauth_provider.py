"""A fake OAuth 2.0 provider, Google's or Discord's shape: a real HTTP server (a starlette
app, served by tests/conftest.py's ThreadedServer) at the provider's own paths, so that
`GOOGLE_OAUTH_BASE` / `DISCORD_OAUTH_BASE` pointed at it exercise the same URLs as the real
endpoints.

- authorize (GET): checks the client id, the redirect URI and the PKCE challenge (S256 only),
  records the state and the challenge, then answers 302 to the redirect URI with a fresh
  `code` and the same `state`.
- token (POST): checks the client's credentials (HTTP Basic or form fields), the grant type,
  the code (single use: consumed by its first exchange, whatever the outcome), that the
  redirect URI is the authorize request's and that SHA-256(code_verifier) is the recorded
  challenge; answers an access token (with a refresh token and, for Google, an id_token,
  neither of which the adapter may keep). Refusals are OAuth's JSON errors.
- userinfo (GET, Bearer): the profile (`profile`, a FakeProfile) in the provider's shape.

Faults (`token_fault`, `userinfo_fault`): "500" (a body quoting the client secret or the
access token, as a careless provider might), "garbage" (200, not JSON), "list" (200, a JSON
array), "slow" (answers after SLOW_SECONDS), "no-token" (token only: 200 without
access_token).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

Shape = Literal["google", "discord"]

SLOW_SECONDS = 3.0

# The real endpoints' paths; the adapter puts them after GOOGLE_OAUTH_BASE/DISCORD_OAUTH_BASE.
PATHS: dict[Shape, dict[str, str]] = {
    "google": {
        "authorize": "/o/oauth2/v2/auth",
        "token": "/token",
        "userinfo": "/v1/userinfo",
    },
    "discord": {
        "authorize": "/oauth2/authorize",
        "token": "/api/oauth2/token",
        "userinfo": "/api/users/@me",
    },
}


@dataclass
class FakeProfile:
    """Who signs in. `email=None`: Google leaves the claim out, Discord sends null.
    `global_name=None` (Discord): the username stands for the name."""

    provider_id: str = "112233445566778899"
    email: str | None = "  Ada.Lovelace@Example.COM "
    verified: bool = True
    name: str = "Ada Lovelace"
    username: str = "ada_l"
    global_name: str | None = "Ada Lovelace"


@dataclass
class Authorization:
    """What an authorize request carried."""

    state: str
    code_challenge: str
    code_challenge_method: str
    redirect_uri: str
    scope: str
    client_id: str
    response_type: str
    code: str


@dataclass
class Exchange:
    """One token request as the fake judged it (no secrets kept)."""

    code: str
    outcome: str  # "ok" or the OAuth error code
    client_port: int | None


@dataclass
class _Grant:
    authorization: Authorization
    used: bool = False


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass
class FakeOAuthProvider:
    shape: Shape
    client_id: str = ""
    client_secret: str = ""
    profile: FakeProfile = field(default_factory=FakeProfile)
    token_fault: str | None = None
    userinfo_fault: str | None = None
    authorizations: dict[str, Authorization] = field(default_factory=dict)
    exchanges: list[Exchange] = field(default_factory=list)
    issued_tokens: list[str] = field(default_factory=list)
    userinfo_ports: list[int | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.client_id = self.client_id or f"{self.shape}-client-{secrets.token_hex(4)}"
        self.client_secret = self.client_secret or f"{self.shape}-SECRET-{secrets.token_hex(8)}"
        self._grants: dict[str, _Grant] = {}
        self._tokens: dict[str, FakeProfile] = {}
        self._lock = threading.Lock()
        self._generation = 0  # one per test: a slow answer outliving its test records nothing
        paths = PATHS[self.shape]
        self.app = Starlette(
            routes=[
                Route(paths["authorize"], self.authorize, methods=["GET"]),
                Route(paths["token"], self.token, methods=["POST"]),
                Route(paths["userinfo"], self.userinfo, methods=["GET"]),
            ]
        )

    def reset(self) -> None:
        """A fresh provider for the next test: the default profile, no faults, nothing
        recorded (the client's credentials stay)."""
        with self._lock:
            self._generation += 1
            self.profile = FakeProfile()
            self.token_fault = None
            self.userinfo_fault = None
            self.authorizations.clear()
            self.exchanges.clear()
            self.issued_tokens.clear()
            self.userinfo_ports.clear()
            self._grants.clear()
            self._tokens.clear()

    async def _slept(self) -> bool:
        """Waits SLOW_SECONDS; False when the fake was reset meanwhile (its test is over)."""
        generation = self._generation
        await asyncio.sleep(SLOW_SECONDS)
        return generation == self._generation

    # -- authorize -------------------------------------------------------------------

    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        redirect_uri = q.get("redirect_uri", "")
        if q.get("client_id") != self.client_id or not redirect_uri.startswith(
            ("http://", "https://")
        ):
            # Never redirect to an unknown client's URI: an error page, as providers do.
            return PlainTextResponse("unknown client or redirect_uri", status_code=400)
        state = q.get("state", "")
        error = None
        if q.get("response_type") != "code":
            error = "unsupported_response_type"
        elif q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            error = "invalid_request"
        params: dict[str, str]
        if error is not None:
            params = {"error": error, "state": state}
        else:
            code = secrets.token_urlsafe(24)
            authorization = Authorization(
                state=state,
                code_challenge=q["code_challenge"],
                code_challenge_method=q["code_challenge_method"],
                redirect_uri=redirect_uri,
                scope=q.get("scope", ""),
                client_id=q["client_id"],
                response_type=q["response_type"],
                code=code,
            )
            with self._lock:
                self.authorizations[state] = authorization
                self._grants[code] = _Grant(authorization)
            params = {"code": code, "state": state}
        separator = "&" if urlsplit(redirect_uri).query else "?"
        return RedirectResponse(redirect_uri + separator + urlencode(params), status_code=302)

    # -- token -----------------------------------------------------------------------

    def _client_credentials(self, request: Request, form: dict[str, str]) -> tuple[str, str]:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(header[6:]).decode()
            except ValueError:
                return "", ""
            client_id, _, client_secret = decoded.partition(":")
            return unquote(client_id), unquote(client_secret)
        return form.get("client_id", ""), form.get("client_secret", "")

    async def token(self, request: Request) -> Response:
        # application/x-www-form-urlencoded, read by hand (starlette's form() needs
        # python-multipart, which the project does not install).
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        if self.token_fault == "slow" and not await self._slept():
            return PlainTextResponse("gone", status_code=503)
        if self.token_fault == "500":
            return PlainTextResponse(
                f"internal error while checking {self.client_secret} for "
                f"{form.get('code_verifier', '')}",
                status_code=500,
            )
        code = form.get("code", "")
        port = request.client.port if request.client else None
        outcome = self._judge(request, form)
        with self._lock:
            self.exchanges.append(Exchange(code, outcome, port))
        if outcome == "invalid_client":
            return JSONResponse(
                {"error": "invalid_client", "error_description": "Unauthorized"},
                status_code=401,
                headers={"www-authenticate": "Basic"},
            )
        if outcome != "ok":
            # Google's and Discord's own form; the description quotes what it got.
            return JSONResponse(
                {"error": outcome, "error_description": f"Bad request for {code}"},
                status_code=400,
            )
        if self.token_fault == "garbage":
            return PlainTextResponse("<html>rate limited</html>", status_code=200)
        if self.token_fault == "list":
            return JSONResponse(["access_token"], status_code=200)
        access_token = f"{self.shape}-ACCESS-{secrets.token_urlsafe(16)}"
        with self._lock:
            self._tokens[access_token] = self.profile
            self.issued_tokens.append(access_token)
        body: dict[str, Any] = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": 3599,
            "refresh_token": f"{self.shape}-REFRESH-{secrets.token_urlsafe(16)}",
            "scope": self._scope_of(code),
        }
        if self.shape == "google":
            body["id_token"] = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJmYWtlIn0."
        if self.token_fault == "no-token":
            del body["access_token"]
        return JSONResponse(body, headers={"cache-control": "no-store"})

    def _scope_of(self, code: str) -> str:
        with self._lock:
            grant = self._grants.get(code)
        return grant.authorization.scope if grant else ""

    def _judge(self, request: Request, form: dict[str, str]) -> str:
        client_id, client_secret = self._client_credentials(request, form)
        if client_id != self.client_id or client_secret != self.client_secret:
            return "invalid_client"
        if form.get("grant_type") != "authorization_code":
            return "unsupported_grant_type"
        with self._lock:
            grant = self._grants.get(form.get("code", ""))
            if grant is None or grant.used:
                return "invalid_grant"
            grant.used = True  # single use, even when this exchange fails
        if form.get("redirect_uri") != grant.authorization.redirect_uri:
            return "invalid_grant"
        verifier = form.get("code_verifier", "")
        if not verifier or s256(verifier) != grant.authorization.code_challenge:
            return "invalid_grant"
        return "ok"

    # -- userinfo --------------------------------------------------------------------

    async def userinfo(self, request: Request) -> Response:
        with self._lock:
            self.userinfo_ports.append(request.client.port if request.client else None)
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        if self.userinfo_fault == "slow" and not await self._slept():
            return PlainTextResponse("gone", status_code=503)
        if self.userinfo_fault == "500":
            return PlainTextResponse(f"backend error for token {token}", status_code=500)
        profile = self._tokens.get(token)
        if profile is None:
            return JSONResponse({"message": "401: Unauthorized", "code": 0}, status_code=401)
        if self.userinfo_fault == "garbage":
            return PlainTextResponse("{not json", status_code=200)
        if self.userinfo_fault == "list":
            return JSONResponse([profile.email], status_code=200)
        return JSONResponse(self.shaped(profile))

    def shaped(self, profile: FakeProfile) -> dict[str, Any]:
        """The profile as the real provider answers it."""
        if self.shape == "google":
            body: dict[str, Any] = {
                "sub": profile.provider_id,
                "name": profile.name,
                "given_name": profile.name.split(" ")[0],
                "picture": "https://lh3.googleusercontent.com/a/fake",
                "locale": "en",
            }
            if profile.email is not None:
                body["email"] = profile.email
                body["email_verified"] = profile.verified
            return body
        return {
            "id": profile.provider_id,
            "username": profile.username,
            "global_name": profile.global_name,
            "discriminator": "0",
            "avatar": "a_1269e74af4df7417b13759eae50c83dc",
            "locale": "en-US",
            "mfa_enabled": False,
            "email": profile.email,
            "verified": profile.verified,
        }
