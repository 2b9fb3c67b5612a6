"""The pages' routes. Every page is rendered on the server in the visitor's language
(`?lang=` > the remembered switch > the browser's languages); the console's pages are
shells whose script (web/src/console/) fills them from the console API. A console page
without a session cookie redirects to /sign-in before anything renders."""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from dynoyard.console.auth import SESSION_COOKIE
from dynoyard.console.oauth_routes import providers
from dynoyard.console.team import ACCEPT_PATH
from dynoyard.domain.ports import SecretUnavailable
from dynoyard.web import i18n
from dynoyard.web.assets import asset_url

TEMPLATES = Path(__file__).parent / "templates"
# Console pages: path → (template, the i18n areas its script reads, the nav key).
CONSOLE_PAGES = {
    "usage": "console/usage.html",
    "keys": "console/keys.html",
    "team": "console/team.html",
    "billing": "console/billing.html",
    "settings": "console/settings.html",
    "audit": "console/audit.html",
    "account": "console/account.html",
}
# The paths the console function answers besides /api (ConsoleBeside, template.yaml).
PAGE_PATHS = ("/", "/pricing", "/privacy", "/terms", "/sign-in")
PAGE_PREFIXES = ("/console/", "/assets/")

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)


@cache
def environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True),
        undefined=StrictUndefined,  # a missing value fails the render, never shows blank
        trim_blocks=True,
        lstrip_blocks=True,
    )


def language_of_request(request: Request) -> tuple[str, str | None]:
    """(the page's language, the language to remember in the cookie when `?lang=` chose)."""
    forced = request.query_params.get("lang")
    language = i18n.choose_language(
        forced, request.cookies.get(i18n.LANG_COOKIE), request.headers.get("accept-language")
    )
    return language, (language if forced in i18n.LANGUAGES else None)


def language_switch_url(request: Request, language: str) -> str:
    """This page in another language: its query kept (a console page's filters), `lang`
    replaced; never an invitation's token (the page takes it out of the address bar)."""
    query = [(k, v) for k, v in request.query_params.multi_items() if k not in ("lang", "token")]
    return f"{request.url.path}?{urlencode([*query, ('lang', language)])}"


def render(request: Request, template: str, **context: Any) -> HTMLResponse:
    language, remember = language_of_request(request)
    settings = request.app.state.console.settings
    html = (
        environment()
        .get_template(template)
        .render(
            t=i18n.Translator(language),
            lang=language,
            languages=i18n.LANGUAGES,
            path=request.url.path,
            switch_url=lambda code: language_switch_url(request, code),
            asset=asset_url,
            public_url=settings.public_url.rstrip("/"),
            **context,
        )
    )
    response = HTMLResponse(html, headers={"cache-control": "no-store"})
    if remember:
        response.set_cookie(
            i18n.LANG_COOKIE,
            remember,
            max_age=i18n.LANG_COOKIE_DAYS * 86_400,
            path="/",
            samesite="lax",
            secure=not settings.local_http,
        )
    return response


def strings_for(request: Request, *areas: str) -> dict[str, str]:
    language, _ = language_of_request(request)
    return i18n.area(language, *(a + "." for a in ("common", "errors", *areas)))


@router.get("/sign-in")
async def sign_in(request: Request) -> Response:
    """The sign-in page: the email-link form, the OAuth providers configured here, and, when
    a sign-in route sent the browser back (`?error=<code>`, console/errors.py), why."""
    language, _ = language_of_request(request)
    code = request.query_params.get("error")
    error_key = None
    if code is not None:
        known = f"errors.{code}"
        error_key = known if known in i18n.catalog(language) else "common.error_generic"
    try:
        offered = sorted(providers(request))
    except SecretUnavailable:  # the email link still works; the providers are left out
        log.warning("sign-in page: the OAuth providers' secret could not be read")
        offered = []
    return render(
        request,
        "sign_in.html",
        strings=strings_for(request, "sign_in"),
        error_key=error_key,
        oauth_providers=offered,
    )


@router.get("/console")
async def console_home(request: Request) -> Response:
    return console_page(request, "usage")


@router.get(ACCEPT_PATH)
async def accept_invitation(request: Request) -> Response:
    """The emailed invitation's link: the page posts its token with the session (signed
    out: to /sign-in first, and back here after)."""
    return console_page(request, "accept_invitation", "console/accept_invitation.html", "team")


@router.get("/console/{page}")
async def console_section(request: Request, page: str) -> Response:
    if page not in CONSOLE_PAGES:
        missing = render(request, "not_found.html")
        missing.status_code = 404
        return missing
    return console_page(request, page)


def console_page(
    request: Request, page: str, template: str | None = None, area: str | None = None
) -> Response:
    if not request.cookies.get(SESSION_COOKIE):
        # Back here after signing in (site/sign_in.js keeps `next`, console/main.js goes).
        query = f"?{request.url.query}" if request.url.query else ""
        target = urlencode({"next": request.url.path + query})
        return RedirectResponse(f"/sign-in?{target}", status_code=303)
    return render(
        request,
        template or CONSOLE_PAGES[page],
        page=page,
        pages=tuple(CONSOLE_PAGES),
        strings=strings_for(request, "console", area or page),
    )
