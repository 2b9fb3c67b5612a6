"""Sign-up and sign-in by emailed link, the session cookie, CSRF, and who is asking.

Tokens: a link token and a session token are 32 random bytes (URL-safe base64), stored
only as their SHA-256. The CSRF token of a session is derived from its session token
(SHA-256 of "csrf:" + token), so it is stored nowhere and is useless without the cookie.

Sign-in limits, each in fixed 15-minute windows on a counter item of its own (one
conditional write, ConsoleStore.count_in_window): link requests per address and per client
IP, email-link callbacks per IP, OAuth starts and callbacks per IP (ConsoleSettings).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import secrets
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr
from starlette.responses import RedirectResponse

from dynoyard.adapters.dynamo.codec import now_iso
from dynoyard.adapters.dynamo.console_store import EmailTaken, Session, User
from dynoyard.console.errors import (
    ConsoleError,
    bad_request,
    csrf_failed,
    not_signed_in,
)
from dynoyard.console.runtime import ConsoleRuntime
from dynoyard.console.settings import ConsoleSettings
from dynoyard.console.validation import LANGUAGES, clean_name, normalized_email, valid_email
from dynoyard.domain.accounts import Org, UnknownOrg
from dynoyard.domain.administration import Actor
from dynoyard.domain.audit import AuditAction
from dynoyard.domain.email import Email, EmailFailed
from dynoyard.domain.messages import WELCOME_DAYS, default_org_name, language_of, sign_in_link

log = logging.getLogger(__name__)

SESSION_COOKIE = "dynoyard_session"
MAX_TOKEN = 128  # longer than any token this service makes
CONSOLE_PATH = "/console"
RATE_WINDOW_SECONDS = 900  # every sign-in limit counts in fixed windows of 15 minutes
LINK_SENT = {
    "status": "sent",
    "message": "If this address can receive email, a sign-in link is on its way."
    " It works once, within 15 minutes.",
}

router = APIRouter(prefix="/api")


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token_for(session_token: str) -> str:
    return hashlib.sha256(b"csrf:" + session_token.encode()).hexdigest()


def runtime(request: Request) -> ConsoleRuntime:
    found: ConsoleRuntime = request.app.state.console
    return found


def client_ip(request: Request) -> str:
    """Whom the per-IP limits count: the connection's address as the server saw it. Under
    Mangum that is API Gateway's requestContext.identity.sourceIp, which a client can not
    set; no header (X-Forwarded-For, Forwarded, X-Real-IP) is read here. An IPv6 client
    counts by its /64 (a host commonly holds a whole /64); an address that is missing or not
    an IP address counts as one shared "unknown", never as a fresh one each time."""
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)


async def limit_per_ip(request: Request, purpose: str, limit: int) -> None:
    """429 too_many_requests once the caller's IP has made `limit` calls of `purpose` in
    this window. Counted before any other work, so it says nothing about any account."""
    subject = f"{purpose}#{client_ip(request)}"
    wait = await runtime(request).store.count_in_window(subject, limit, RATE_WINDOW_SECONDS)
    if wait is not None:
        raise ConsoleError(
            429,
            "Too many sign-in attempts from your network. Retry after the time in 'retry-after'.",
            "too_many_requests",
            headers={"retry-after": str(wait)},
        )


def set_session_cookie(response: Response, token: str, settings: ConsoleSettings) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=settings.session_ttl_seconds,
        path="/",
        httponly=True,
        samesite="lax",
        secure=not settings.local_http,
    )


def clear_session_cookie(response: Response, settings: ConsoleSettings) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=not settings.local_http
    )


@dataclass(frozen=True, slots=True)
class Caller:
    user: User
    session: Session
    csrf_token: str


async def signed_in(request: Request, response: Response) -> Caller:
    """The signed-in user, or 401. A session in use is renewed at most every
    `session_renew_seconds` (its expiry and the cookie's move to now + TTL)."""
    rt = runtime(request)
    token = request.cookies.get(SESSION_COOKIE, "")
    if not token or len(token) > MAX_TOKEN:
        raise not_signed_in()
    token_hash = sha256(token)
    session = await rt.store.get_session(token_hash)
    if session is None:
        raise not_signed_in()
    user = await rt.store.get_user(session.user_id)
    if user is None or user.sessions_epoch != session.epoch:
        raise not_signed_in()  # the user signed out everywhere since this session began
    if rt.store.now() - session.renewed_at >= rt.settings.session_renew_seconds:
        if await rt.store.renew_session(token_hash, rt.settings.session_ttl_seconds) is None:
            raise not_signed_in()
        set_session_cookie(response, token, rt.settings)
    return Caller(user, session, csrf_token_for(token))


async def signed_in_with_csrf(
    request: Request, caller: Annotated[Caller, Depends(signed_in)]
) -> Caller:
    """For every state-changing call made with the session cookie: 403 unless the
    X-CSRF-Token header is this session's csrf_token."""
    sent = request.headers.get("x-csrf-token", "")
    if not hmac.compare_digest(sent.encode(), caller.csrf_token.encode()):
        raise csrf_failed()
    return caller


SignedIn = Annotated[Caller, Depends(signed_in)]
SignedInCsrf = Annotated[Caller, Depends(signed_in_with_csrf)]


# -- sign-up and sign-in by email link -------------------------------------------------


class EmailLinkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: StrictStr = Field(max_length=320)
    name: StrictStr | None = Field(None, max_length=400)
    accept_terms: StrictBool = False


@router.post("/auth/email-link", status_code=202)
async def request_email_link(body: EmailLinkRequest, request: Request) -> dict[str, str]:
    """Always the same 202 answer, whether or not the address has an account. A known
    address gets a sign-in link; a new one a sign-up link if `accept_terms` is true (the
    terms say 18+), else an email saying how to sign up."""
    rt = runtime(request)
    email = valid_email(body.email)
    if email is None:
        raise bad_request("That is not an email address.", param="email", code="invalid_email")
    name = clean_name(body.name or "")
    if name is None:
        raise bad_request(
            "The name must be at most 100 characters, without control characters.",
            param="name",
        )
    await limit_per_ip(request, "link_ip", rt.settings.links_per_ip)
    # Any address alike, known or not; the counter's key holds the address's hash only.
    address_key = f"link_address#{sha256(normalized_email(email))}"
    wait = await rt.store.count_in_window(
        address_key, rt.settings.links_per_address, RATE_WINDOW_SECONDS
    )
    if wait is not None:
        raise ConsoleError(
            429,
            "Too many sign-in emails were asked for this address. Retry after the time in"
            " 'retry-after'.",
            "too_many_links",
            headers={"retry-after": str(wait)},
        )
    user = await rt.store.find_user_by_email(normalized_email(email))
    minutes = rt.settings.link_ttl_seconds // 60
    if user is None and not body.accept_terms:
        message = Email(
            to=email,
            subject="Dynoyard: no account uses this address",
            text=(
                "Someone (perhaps you) asked to sign in to Dynoyard with this address, but"
                " no account uses it.\n\nTo create one, sign up and accept the terms (you"
                " must be 18 or older). If it was not you, ignore this email.\n"
            ),
        )
    else:
        token = secrets.token_urlsafe(32)
        purpose = "sign_in" if user is not None else "sign_up"
        await rt.store.put_link(
            sha256(token),
            email,
            name,
            purpose,
            terms_accepted=user is None and body.accept_terms,
            ttl_seconds=rt.settings.link_ttl_seconds,
        )
        url = f"{rt.settings.public_url.rstrip('/')}/api/auth/email-link/callback?token={token}"
        language = language_of(
            user.language if user is not None else request.headers.get("accept-language")
        )
        message = sign_in_link(email, url, language, minutes, new_account=user is None)
    try:
        await rt.email.send(message)
    except EmailFailed as exc:
        log.warning("console: sign-in email not accepted by the provider: %s", exc)
        raise ConsoleError(
            503,
            "The email could not be sent right now. Please retry shortly.",
            "email_unavailable",
            type="api_error",
        ) from None
    return LINK_SENT


@router.head("/auth/email-link/callback")
async def email_link_callback_head() -> Response:
    """Mail scanners and link previews often check a link with HEAD: 200, and the link is
    neither read nor consumed (nor counted), whatever the token. Only GET signs in."""
    return Response(
        status_code=200, headers={"cache-control": "no-store", "referrer-policy": "no-referrer"}
    )


@router.get("/auth/email-link/callback", status_code=303)
async def email_link_callback(
    request: Request, token: Annotated[str, Query(min_length=1, max_length=MAX_TOKEN)]
) -> Response:
    rt = runtime(request)
    await limit_per_ip(request, "link_callback_ip", rt.settings.link_callbacks_per_ip)
    link = await rt.store.consume_link(sha256(token))
    if link is None:
        raise bad_request(
            "This sign-in link is invalid, has expired or was already used. Ask for a new one.",
            param="token",
            code="link_invalid",
        )
    normalized = normalized_email(link.email)
    user = await rt.store.find_user_by_email(normalized)
    if user is None:
        if link.purpose != "sign_up" or not link.terms_accepted:
            raise bad_request(
                "No account uses this address any more. Sign up again.",
                param="token",
                code="link_invalid",
            )
        language = language_of(request.headers.get("accept-language"))
        user = await sign_up(rt, link.email, name=link.name, verified=True, language=language)
    elif not user.verified:  # e.g. made by a provider that had not verified the address
        user = await rt.store.update_user(user.user_id, verified=True) or user
    return await signed_in_redirect(request, user, "email_link")


async def signed_in_redirect(request: Request, user: User, method: str) -> Response:
    """A new session for the user: the cookie set on a 303 to the console, and a `sign_in`
    entry (`method`: email_link, google, discord) in the audit log of each of the user's
    organizations. Every way of signing in ends here."""
    rt = runtime(request)
    session_token = secrets.token_urlsafe(32)
    await rt.store.create_session(
        sha256(session_token), user.user_id, user.sessions_epoch, rt.settings.session_ttl_seconds
    )
    await record_in_users_orgs(request, user.user_id, "sign_in", method=method)
    answer = RedirectResponse(CONSOLE_PATH, status_code=303)
    answer.headers["cache-control"] = "no-store"
    answer.headers["referrer-policy"] = "no-referrer"
    set_session_cookie(answer, session_token, rt.settings)
    return answer


async def record_in_users_orgs(
    request: Request, user_id: str, action: AuditAction, **details: object
) -> None:
    """An audit entry of what the user did to their account (signing in, signing out
    everywhere) in each organization they belong to, where its owners and admins read it."""
    rt = runtime(request)
    memberships = await rt.store.user_orgs(user_id)
    ip = request.client.host if request.client else None
    await asyncio.gather(
        *(
            rt.administration.record(
                Actor(m.role, user_id, ip=ip), m.org_id, action, user_id, **details
            )
            for m in memberships
        )
    )


async def sign_up(
    rt: ConsoleRuntime, email: str, *, name: str, verified: bool, language: str = "en"
) -> User:
    """A new user who accepted the terms, owning a new organization; the existing user
    when another request created one for the address first."""
    normalized = normalized_email(email)
    user_id = "usr_" + secrets.token_hex(8)
    try:
        user = await rt.store.create_user(
            user_id, email, normalized, name, language, verified, terms_accepted_at=now_iso()
        )
    except EmailTaken:
        found = await rt.store.find_user_by_email(normalized)  # a concurrent first sign-in
        if found is None:
            raise
        return found
    org_name = default_org_name(name or email.split("@")[0], language)
    org_id = await rt.admin.create_org(org_name, email)
    await rt.store.add_member(org_id, user_id, "owner")
    await rt.store.schedule_welcome(user_id, WELCOME_DAYS, rt.store.now())
    return user


# -- the session ---------------------------------------------------------------------


class MePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StrictStr | None = Field(None, max_length=400)
    language: StrictStr | None = None
    # False: no non-essential email (the welcome sequence); essential email still comes.
    marketing_email: StrictBool | None = None


@router.get("/me")
async def me(request: Request, response: Response, caller: SignedIn) -> dict[str, Any]:
    rt = runtime(request)
    response.headers["cache-control"] = "no-store"
    memberships = await rt.store.user_orgs(caller.user.user_id)

    async def org_of(org_id: str) -> Org | None:
        try:
            return await rt.admin.get_org(org_id)
        except UnknownOrg:
            return None

    # The organizations are read at once, not one after another (a user may be in many).
    found = await asyncio.gather(*(org_of(m.org_id) for m in memberships))
    orgs = [
        {"org_id": org.org_id, "name": org.name, "role": membership.role}
        for membership, org in zip(memberships, found, strict=True)
        if org is not None
    ]
    return {"user": _user_view(caller.user), "orgs": orgs, "csrf_token": caller.csrf_token}


@router.patch("/me")
async def patch_me(body: MePatch, request: Request, caller: SignedInCsrf) -> dict[str, Any]:
    rt = runtime(request)
    name = None
    if body.name is not None:
        name = clean_name(body.name)
        if name is None:
            raise bad_request(
                "The name must be at most 100 characters, without control characters.",
                param="name",
            )
    if body.language is not None and body.language not in LANGUAGES:
        raise bad_request(f"The language must be one of {', '.join(LANGUAGES)}.", param="language")
    opt_out = None if body.marketing_email is None else not body.marketing_email
    user = await rt.store.update_user(
        caller.user.user_id, name=name, language=body.language, email_opt_out=opt_out
    )
    if user is None:
        raise not_signed_in()
    return {"user": _user_view(user)}


@router.post("/auth/sign-out")
async def sign_out(request: Request, response: Response, caller: SignedInCsrf) -> dict[str, Any]:
    rt = runtime(request)
    await rt.store.delete_session(caller.session.session_hash)
    clear_session_cookie(response, rt.settings)
    return {"signed_out": True}


@router.post("/auth/sign-out-everywhere")
async def sign_out_everywhere(
    request: Request, response: Response, caller: SignedInCsrf
) -> dict[str, Any]:
    rt = runtime(request)
    await rt.store.end_all_sessions(caller.user.user_id)
    await rt.store.delete_session(caller.session.session_hash)
    await record_in_users_orgs(request, caller.user.user_id, "sign_out_everywhere")
    clear_session_cookie(response, rt.settings)
    return {"signed_out": True, "everywhere": True}


def _user_view(user: User) -> dict[str, Any]:
    return {
        "user_id": user.user_id,
        "email": user.email,
        "name": user.name,
        "language": user.language,
        "verified": user.verified,
        "marketing_email": not user.email_opt_out,
    }
