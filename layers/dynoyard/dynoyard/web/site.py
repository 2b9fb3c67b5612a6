"""The public site: `/` (what Dynoyard is, a quick start against this installation's own
base URL), `/pricing` (every offered model and its prices, from the very catalog the
gateway charges from), `/privacy` and `/terms` (every number read from the settings and the
rules' own constants at render time, so the pages can not drift from what the service does).

An operator's own legal text replaces the built-in body: `privacy.<lang>.html` or
`terms.<lang>.html` in `DYNOYARD_LEGAL_DIR` (ConsoleSettings.legal_dir), trusted HTML shown
inside the page's layout; a page in a language the folder lacks shows the operator's
English text rather than the built-in one.

Analytics: with `POSTHOG_KEY` set, these pages carry the consent banner (its key and host as
data attributes; web/src/site/consent.js loads PostHog only after the visitor accepts). The
console's pages never do."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import Response
from markupsafe import Markup

from dynoyard.adapters.catalog_file import load_catalog
from dynoyard.console.auth import RATE_WINDOW_SECONDS, SESSION_COOKIE
from dynoyard.console.oauth_routes import OAUTH_COOKIE, OAUTH_TTL_SECONDS
from dynoyard.console.settings import ConsoleSettings
from dynoyard.domain.accounts import (
    DEFAULT_CACHE_TTL_SECONDS,
    MAX_CACHE_TTL_SECONDS,
    MIN_CACHE_TTL_SECONDS,
)
from dynoyard.domain.audit import AUDIT_RETENTION_DAYS
from dynoyard.domain.billing import MAX_TOPUP_USD, MIN_TOPUP_USD
from dynoyard.domain.catalog import Catalog, Model
from dynoyard.domain.rollup import KEEP_DAYS
from dynoyard.domain.team import INVITATION_DAYS
from dynoyard.domain.usage import ERROR_HEAD_BYTES, RETENTION_DAYS
from dynoyard.settings import gateway_settings
from dynoyard.web import i18n
from dynoyard.web.pages import language_of_request, render, strings_for

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

DAY = 86_400
ANALYTICS_COOKIE_DAYS = 365  # PostHog's cookie (web/src/site/analytics.js reads it here)
CONSENT_STORAGE_KEY = "dynoyard_analytics_consent"  # web/src/site/consent.js
LEGAL_PAGES = ("privacy", "terms")
FALLBACK_EXAMPLE_MODEL = "gpt-4o-mini"


# -- the catalog, loaded the way the gateway loads it (api/runtime.py) -------------------


@cache
def catalog() -> Catalog:
    """The model catalog of DYNOYARD_MODELS_FILE (the gateway's), parsed once per process.
    Every model of the file is listed: the console function may not read the gateway's
    provider keys (its IAM role has no grant on that secret, by design), so the file is the
    offer. An operator drops a provider from the file rather than leave its key unset."""
    return load_catalog(gateway_settings().models_file, lambda _key_name: True)


def price_text(amount: Decimal) -> str:
    """A catalog price as written: the Decimal's own digits, no float, no exponent."""
    return format(amount, "f")


@dataclass(frozen=True)
class PriceRow:
    model: str
    provider: str
    kind: str | None
    input_per_mtok: str
    output_per_mtok: str
    context_window: int | None
    max_output_tokens: int


def price_rows(models: list[Model]) -> list[PriceRow]:
    return [
        PriceRow(
            model=m.id,
            provider=m.provider.name,
            kind=m.kind,
            input_per_mtok=price_text(m.price.input_per_mtok),
            output_per_mtok=price_text(m.price.output_per_mtok),
            context_window=m.context_window,
            max_output_tokens=m.max_output_tokens,
        )
        for m in models
    ]


def example_model(models: list[Model]) -> str:
    """The quick start's model: the first offered chat model, so the example works here."""
    for model in models:
        if model.kind != "embedding":
            return model.id
    return FALLBACK_EXAMPLE_MODEL


# -- numbers as people read them --------------------------------------------------------


def duration(t: i18n.Translator, seconds: int) -> str:
    """'7 days', '15 minutes', '1 day' ('7 天'...): the largest whole unit."""
    for unit, size in (("day", DAY), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            return count(t, unit, seconds // size)
    return count(t, "second", seconds)


def count(t: i18n.Translator, unit: str, n: int) -> str:
    return t(f"site.unit_{unit}_{'one' if n == 1 else 'other'}", n=f"{n:,}")


def size(t: i18n.Translator, n_bytes: int) -> str:
    if n_bytes % 1024 == 0:
        return t("site.unit_kb", n=f"{n_bytes // 1024:,}")
    return t("site.unit_bytes", n=f"{n_bytes:,}")


def facts(t: i18n.Translator, settings: ConsoleSettings) -> dict[str, str]:
    """Every number the privacy policy and the terms state, from this installation's
    settings and the rules' constants, in the page's language."""
    host = urlsplit(settings.posthog_host).netloc or settings.posthog_host
    return {
        "usage_retention": count(t, "day", RETENTION_DAYS),
        "daily_retention": count(t, "day", KEEP_DAYS),
        "audit_retention": count(t, "day", AUDIT_RETENTION_DAYS),
        "error_head": size(t, ERROR_HEAD_BYTES),
        "cache_default": duration(t, DEFAULT_CACHE_TTL_SECONDS),
        "cache_min": duration(t, MIN_CACHE_TTL_SECONDS),
        "cache_max": duration(t, MAX_CACHE_TTL_SECONDS),
        "session": duration(t, settings.session_ttl_seconds),
        "session_renew": duration(t, settings.session_renew_seconds),
        "link": duration(t, settings.link_ttl_seconds),
        "oauth": duration(t, OAUTH_TTL_SECONDS),
        "invitation": count(t, "day", INVITATION_DAYS),
        "rate_window": duration(t, RATE_WINDOW_SECONDS),
        "lang_cookie": count(t, "day", i18n.LANG_COOKIE_DAYS),
        "analytics_cookie": count(t, "day", ANALYTICS_COOKIE_DAYS),
        "analytics_host": host,
        "region": settings.aws_region,
        "min_topup": price_text(MIN_TOPUP_USD),
        "max_topup": f"{MAX_TOPUP_USD:,}",
        "session_cookie_name": SESSION_COOKIE,
        "oauth_cookie_name": OAUTH_COOKIE,
        "lang_cookie_name": i18n.LANG_COOKIE,
        "consent_key": CONSENT_STORAGE_KEY,
    }


def analytics_context(settings: ConsoleSettings) -> dict[str, Any]:
    """What the consent banner needs; no key configured: no banner at all."""
    return {
        "analytics": bool(settings.posthog_key),
        "posthog_key": settings.posthog_key or "",
        "posthog_host": settings.posthog_host.rstrip("/"),
        "analytics_cookie_days": ANALYTICS_COOKIE_DAYS,
    }


def operator_text(settings: ConsoleSettings, page: str, language: str) -> Markup | None:
    """The operator's own `<page>.<lang>.html` (else its English one), trusted HTML."""
    folder: Path | None = settings.legal_dir
    if folder is None:
        return None
    for lang in dict.fromkeys((language, "en")):  # names from fixed parts only
        path = folder / f"{page}.{lang}.html"
        if path.is_file():
            return Markup(path.read_text(encoding="utf-8"))  # noqa: S704 (the operator's)
    return None


# -- the routes -------------------------------------------------------------------------


def site_page(request: Request, template: str, **context: Any) -> Response:
    settings: ConsoleSettings = request.app.state.console.settings
    language, _ = language_of_request(request)
    return render(
        request,
        template,
        strings=script_strings(request),
        facts=facts(i18n.Translator(language), settings),
        **analytics_context(settings),
        **context,
    )


def script_strings(request: Request) -> dict[str, str]:
    """The words the public pages' script reads: strings_for's common and errors areas and
    the consent banner's site.consent_* (the rest of "site" is the server's own page text,
    ~20 KB of it, which no script needs)."""
    return {
        key: text
        for key, text in strings_for(request, "site").items()
        if not key.startswith("site.") or key.startswith("site.consent_")
    }


def offered_models() -> list[Model] | None:
    """The offered models, or None when the catalog can not be read
    (logged by the error's class only: a message may quote the file or the secret)."""
    try:
        return catalog().offered()
    except Exception as exc:  # any failure: the page says so, in words
        log.error("the model catalog could not be read", extra={"error": type(exc).__name__})
        return None


@router.get("/")
async def home(request: Request) -> Response:
    settings: ConsoleSettings = request.app.state.console.settings
    base_url = settings.public_url.rstrip("/") + "/v1"
    model = example_model(offered_models() or [])
    return site_page(
        request,
        "index.html",
        base_url=base_url,
        curl_example=curl_example(base_url, model),
        python_example=python_example(base_url, model),
    )


@router.get("/pricing")
async def pricing(request: Request) -> Response:
    offered = offered_models()
    rows = price_rows(offered or [])
    embedding = [r for r in rows if r.kind == "embedding"]
    page = site_page(
        request,
        "pricing.html",
        unavailable=offered is None,
        chat_rows=[r for r in rows if r.kind != "embedding"],
        embedding_rows=embedding,
        embedding_output=any(Decimal(r.output_per_mtok) != 0 for r in embedding),
    )
    if offered is None:
        page.status_code = 503
    return page


@router.get("/privacy")
async def privacy(request: Request) -> Response:
    return legal_page(request, "privacy")


@router.get("/terms")
async def terms(request: Request) -> Response:
    return legal_page(request, "terms")


def legal_page(request: Request, page: str) -> Response:
    settings: ConsoleSettings = request.app.state.console.settings
    language, _ = language_of_request(request)
    return site_page(request, f"{page}.html", override=operator_text(settings, page, language))


# -- the quick start's code (data for the page, never translated) ------------------------


def curl_example(base_url: str, model: str) -> str:
    return (
        f"curl {base_url}/chat/completions \\\n"
        '  -H "Authorization: Bearer $DYNOYARD_API_KEY" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        "  -d '{\n"
        f'    "model": "{model}",\n'
        '    "messages": [{"role": "user", "content": "Hello!"}]\n'
        "  }'"
    )


def python_example(base_url: str, model: str) -> str:
    return (
        "import os\n"
        "from openai import OpenAI\n"
        "\n"
        "client = OpenAI(\n"
        f'    base_url="{base_url}",\n'
        '    api_key=os.environ["DYNOYARD_API_KEY"],\n'
        ")\n"
        "reply = client.chat.completions.create(\n"
        f'    model="{model}",\n'
        '    messages=[{"role": "user", "content": "Hello!"}],\n'
        ")\n"
        "print(reply.choices[0].message.content)"
    )
