"""Sign-in with Google and Discord: `GET /api/auth/{provider}/start` and `…/callback`.

`start` keeps the OAuth state and PKCE verifier server-side (the accounts table, 10 minutes)
under a random id; the browser carries only that id, in a short-lived HttpOnly, SameSite=Lax
cookie, and the table keeps only its SHA-256. `callback` consumes that record (one use, by a
conditional delete), checks the state, exchanges the code, and signs in the user whose
address the provider verified, or signs up a new one if `accept_terms=true` was given to
`start`. Every failure is a 400 in the console's error shape; an unverified address is never
taken. Starts and callbacks are each limited per client IP (DYNOYARD_OAUTH_PER_IP per 15
minutes, then 429 too_many_requests).
"""

from __future__ import annotations

import hmac
import logging
import secrets
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from dynoyard.adapters.dynamo.console_store import OAuthPending
from dynoyard.adapters.oauth import oauth_providers
from dynoyard.adapters.oauth_settings import oauth_settings
from dynoyard.console.auth import (
    MAX_TOKEN,
    limit_per_ip,
    runtime,
    sha256,
    sign_up,
    signed_in_redirect,
)
from dynoyard.console.errors import ConsoleError, bad_request, not_found
from dynoyard.console.runtime import ConsoleRuntime
from dynoyard.console.validation import normalized_email
from dynoyard.domain.messages import language_of
from dynoyard.domain.oauth import OAuthFailed, OAuthProvider

log = logging.getLogger(__name__)

OAUTH_COOKIE = "dynoyard_oauth"
OAUTH_TTL_SECONDS = 600
COOKIE_PATH = "/api/auth/"

router = APIRouter(prefix="/api/auth")


def providers(request: Request) -> dict[str, OAuthProvider]:
    """The configured providers (OAuthSettings from the environment), made once per app;
    tests put their own in `app.state.oauth_providers`."""
    state = request.app.state
    found: dict[str, OAuthProvider] | None = getattr(state, "oauth_providers", None)
    if found is None:
        found = oauth_providers(oauth_settings())
        state.oauth_providers = found
    return found


def provider_for(request: Request, name: str) -> OAuthProvider:
    found = providers(request).get(name)
    if found is None:
        raise not_found(
            f"Sign-in with '{name[:40]}' is not available here.", code="provider_not_configured"
        )
    return found


def redirect_uri(rt: ConsoleRuntime, name: str) -> str:
    return f"{rt.settings.public_url.rstrip('/')}/api/auth/{name}/callback"


def oauth_failed(
    message: str, code: str = "oauth_failed", param: str | None = None
) -> ConsoleError:
    return bad_request(message, param=param, code=code)


@router.get("/{provider}/start", status_code=302)
async def oauth_start(
    provider: str, request: Request, accept_terms: Annotated[bool, Query()] = False
) -> Response:
    """Redirects to the provider. `accept_terms=true`: the user accepts the terms (18+), so
    that a new account may be made for them at the callback."""
    rt = runtime(request)
    client = provider_for(request, provider)
    await limit_per_ip(request, "oauth_start_ip", rt.settings.oauth_per_ip)
    start = client.start(redirect_uri(rt, provider))
    pending_id = secrets.token_urlsafe(32)
    await rt.store.put_oauth_pending(
        sha256(pending_id),
        OAuthPending(provider, start.state, start.code_verifier, accept_terms),
        OAUTH_TTL_SECONDS,
    )
    answer = Response(status_code=302, headers={"location": start.url})
    answer.headers["cache-control"] = "no-store"
    answer.headers["referrer-policy"] = "no-referrer"
    answer.set_cookie(
        OAUTH_COOKIE,
        pending_id,
        max_age=OAUTH_TTL_SECONDS,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=not rt.settings.local_http,
    )
    return answer


@router.get("/{provider}/callback", status_code=303)
async def oauth_callback(
    provider: str,
    request: Request,
    code: Annotated[str | None, Query(max_length=2048)] = None,
    state: Annotated[str | None, Query(max_length=512)] = None,
    error: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    rt = runtime(request)
    client = provider_for(request, provider)
    await limit_per_ip(request, "oauth_callback_ip", rt.settings.oauth_per_ip)
    pending_id = request.cookies.get(OAUTH_COOKIE, "")
    if not pending_id or len(pending_id) > MAX_TOKEN:
        raise oauth_failed(
            "This sign-in was not started here, has expired, or was already used. Start again.",
            code="oauth_state_invalid",
            param="state",
        )
    pending = await rt.store.consume_oauth_pending(sha256(pending_id))
    if pending is None or pending.provider != provider:
        raise oauth_failed(
            "This sign-in was not started here, has expired, or was already used. Start again.",
            code="oauth_state_invalid",
            param="state",
        )
    if not state or not hmac.compare_digest(state.encode(), pending.state.encode()):
        raise oauth_failed(
            "The sign-in's state does not match the one it was started with. Start again.",
            code="oauth_state_invalid",
            param="state",
        )
    if error is not None:
        reason = error if error.replace("_", "").isalnum() and len(error) <= 40 else "an error"
        raise oauth_failed(f"{provider} sign-in was not completed ({reason}). Start again.")
    if not code:
        raise oauth_failed(f"{provider} sent no authorization code. Start again.", param="code")
    try:
        profile = await client.finish(code, pending.code_verifier, redirect_uri(rt, provider))
    except OAuthFailed as exc:
        log.info("console: %s", exc)
        raise oauth_failed(f"{exc}. Start again.") from None
    if not profile.email_verified:
        raise oauth_failed(
            f"Your {provider} account's email address is not verified. Verify it with"
            f" {provider}, or sign in with an email link.",
            code="email_unverified",
        )
    user = await rt.store.find_user_by_email(normalized_email(profile.email))
    if user is None:
        if not pending.accept_terms:
            raise oauth_failed(
                "No account uses this address. To sign up, accept the terms (you must be 18"
                " or older): start again with accept_terms=true.",
                code="terms_not_accepted",
                param="accept_terms",
            )
        language = language_of(request.headers.get("accept-language"))
        user = await sign_up(rt, profile.email, name=profile.name, verified=True, language=language)
    elif not user.verified:  # the provider has verified the address
        user = await rt.store.update_user(user.user_id, verified=True) or user
    await rt.store.link_identity(profile.provider, profile.provider_id, user.user_id)
    answer = await signed_in_redirect(request, user, profile.provider)
    answer.delete_cookie(
        OAUTH_COOKIE,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=not rt.settings.local_http,
    )
    return answer
