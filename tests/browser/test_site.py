"""The public site in the browser: every page in both languages, the pricing table equal to
the catalog the gateway charges from, the quick start against the real base URL, and
analytics only after consent: nothing of PostHog (script, cookie, storage, request) before
a choice or after a decline, PostHog after an accept, nothing more once consent is
withdrawn, and never anything in the console."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Request

from dynoyard.adapters.catalog_file import load_catalog
from dynoyard.web import i18n
from dynoyard.web.assets import STATIC_DIR
from dynoyard.web.site import CONSENT_STORAGE_KEY
from tests.browser.conftest import Site, axe_violations, page_factory, sign_up
from tests.conftest import ROOT

PAGES = {
    "/": "site.hero_title",
    "/pricing": "site.pricing_title",
    "/privacy": "site.privacy_title",
    "/terms": "site.terms_title",
}
PH_NAME = re.compile(r"^(ph_|__ph|_ph)")


def analytics_chunk() -> str:
    """The analytics chunk's hashed name: what site.js imports dynamically."""
    manifest = json.loads((STATIC_DIR / "manifest.json").read_text())
    site_js = manifest["files"][manifest["entries"]["site.js"]]
    (chunk,) = [name for name in site_js["dynamic_imports"] if name.startswith("analytics-")]
    return str(chunk)


def offered_models() -> list[Any]:
    """What the pricing page lists: every model of the catalog file (the console can not
    read the gateway's provider keys, so the file is the offer)."""
    return load_catalog(ROOT / "config" / "models.yaml", lambda name: True).offered()


class NetworkLog:
    """Every request the page's browser context makes (page.on("request"))."""

    def __init__(self, page: Page) -> None:
        self.urls: list[str] = []
        page.context.on("request", self._record)

    def _record(self, request: Request) -> None:
        self.urls.append(request.url)

    def mark(self) -> int:
        return len(self.urls)

    def since(self, mark: int) -> list[str]:
        return self.urls[mark:]


def storage(page: Page) -> dict[str, list[str]]:
    return {
        "cookies": sorted(c["name"] for c in page.context.cookies()),
        "local": sorted(page.evaluate("Object.keys(localStorage)")),
        "session": sorted(page.evaluate("Object.keys(sessionStorage)")),
    }


def assert_no_analytics(page: Page, site: Site, log: NetworkLog, mark: int, seen: int) -> None:
    """Since `mark` (the page's log) and `seen` (the stand-in's): no analytics chunk, no
    request to PostHog; and nothing stored but the consent choice and the language."""
    page.wait_for_load_state("networkidle")
    urls = log.since(mark)
    assert urls, "the page made no request at all: the log is not recording"
    assert not [u for u in urls if u.startswith(site.posthog.url)]
    assert not [u for u in urls if analytics_chunk() in u]
    assert site.posthog.requests[seen:] == []
    held = storage(page)
    assert set(held["cookies"]) <= {i18n.LANG_COOKIE}
    assert set(held["local"]) <= {CONSENT_STORAGE_KEY}
    assert held["session"] == []


def consent_choice(page: Page) -> str | None:
    return page.evaluate(f"localStorage.getItem({CONSENT_STORAGE_KEY!r})")  # type: ignore[no-any-return]


def accept_and_wait_for_posthog(page: Page, site: Site) -> None:
    with (
        page.expect_response(lambda r: analytics_chunk() in r.url),
        page.expect_response(lambda r: r.url.startswith(site.posthog.url)),
    ):
        page.click("#consent-banner [data-consent=accept]")


# -- the pages ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", list(PAGES))
@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_each_public_page_renders_in_both_languages(
    site: Site, new_page: Callable[..., Page], path: str, language: str
) -> None:
    """The browser's language by default (a zh-CN locale gets Chinese), `?lang=` forces."""
    words = i18n.catalog(language)
    errors: list[str] = []
    by_locale = new_page(locale="zh-CN" if language == "zh-CN" else "en-US")
    by_locale.on("pageerror", lambda error: errors.append(str(error)))
    by_locale.goto(site.url(path))
    assert by_locale.get_attribute("html", "lang") == language
    assert by_locale.text_content("h1") == words[PAGES[path]]
    by_locale.wait_for_selector("#consent-banner", state="visible")  # no choice yet
    assert axe_violations(by_locale) == []

    forced = new_page(locale="zh-CN" if language == "en" else "en-US")
    forced.goto(site.url(f"{path}?lang={language}"))
    assert forced.get_attribute("html", "lang") == language
    assert forced.text_content("h1") == words[PAGES[path]]
    remembered = {c["name"]: c["value"] for c in forced.context.cookies()}
    assert remembered == {i18n.LANG_COOKIE: language}
    forced.goto(site.url("/terms" if path != "/terms" else "/"))
    assert forced.get_attribute("html", "lang") == language
    assert errors == []


@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
def test_pricing_rows_are_the_catalogs_models_and_prices(
    site: Site, new_page: Callable[..., Page], locale: str
) -> None:
    page = new_page(locale=locale)
    page.goto(site.url("/pricing"))
    rows = page.eval_on_selector_all(
        "tr[data-model]",
        """rows => rows.map(row => ({
            model: row.dataset.model, input: row.dataset.input, output: row.dataset.output,
            name: row.querySelector('th').textContent.trim(),
            cells: [...row.querySelectorAll('td')].map(cell => cell.textContent.trim()),
        }))""",
    )
    expected = offered_models()
    assert expected, "make dev offers at least the demo models"
    assert [r["model"] for r in rows] == [m.id for m in expected if m.kind != "embedding"] + [
        m.id for m in expected if m.kind == "embedding"
    ]
    by_id = {m.id: m for m in expected}
    for row in rows:
        model = by_id[row["model"]]
        price_in = format(model.price.input_per_mtok, "f")
        price_out = format(model.price.output_per_mtok, "f")
        assert (row["input"], row["output"]) == (price_in, price_out)
        assert row["name"] == model.id
        assert row["cells"][0] == model.provider.name
        assert row["cells"][1] == f"${price_in}"
        if model.kind != "embedding":
            assert row["cells"][2] == f"${price_out}"
            assert row["cells"][4] == f"{model.max_output_tokens:,}"


def test_quick_start_uses_the_real_base_url(site: Site, new_page: Callable[..., Page]) -> None:
    page = new_page()
    page.goto(site.url("/"))
    base_url = site.base + "/v1"
    assert page.text_content("#base-url") == base_url
    curl = page.text_content("#example-curl") or ""
    python = page.text_content("#example-python") or ""
    assert curl.startswith(f"curl {base_url}/chat/completions ")
    assert "from openai import OpenAI" in python
    assert f'base_url="{base_url}"' in python
    chat_models = [m.id for m in offered_models() if m.kind != "embedding"]
    assert f'"model": "{chat_models[0]}"' in curl
    assert f'model="{chat_models[0]}"' in python
    assert page.get_attribute("a.button[href='/sign-in']", "href") == "/sign-in"
    assert page.locator("main a[href='/pricing']").count() >= 1


# -- analytics only after consent ----------------------------------------------------------


@pytest.fixture
def visitor_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """new_page's fresh context, looking like a person's browser: PostHog drops the events
    of a browser that says it is headless or driven by automation (its user agent, its
    brands, navigator.webdriver) as a bot's, rightly in production."""
    probe = browser.new_context()
    agent = probe.new_page().evaluate("navigator.userAgent").replace("HeadlessChrome", "Chrome")
    probe.close()
    with page_factory(browser, init_script=HUMAN_NAVIGATOR, user_agent=agent) as make:
        yield make


HUMAN_NAVIGATOR = """
Object.defineProperty(Navigator.prototype, "webdriver", { get: () => false });
Object.defineProperty(Navigator.prototype, "userAgentData", { get: () => undefined });
"""


def test_nothing_of_analytics_before_a_choice(site: Site, new_page: Callable[..., Page]) -> None:
    page = new_page()
    log, seen = NetworkLog(page), len(site.posthog.requests)
    page.goto(site.url("/"))
    page.wait_for_selector("#consent-banner", state="visible")
    assert_no_analytics(page, site, log, 0, seen)
    assert consent_choice(page) is None
    page.goto(site.url("/pricing?lang=zh-CN"))  # another page, and the language cookie
    page.wait_for_selector("#consent-banner", state="visible")
    assert_no_analytics(page, site, log, 0, seen)
    assert storage(page)["cookies"] == [i18n.LANG_COOKIE]


def test_nothing_of_analytics_after_decline_and_after_reload(
    site: Site, new_page: Callable[..., Page]
) -> None:
    page = new_page(locale="zh-CN")
    log, seen = NetworkLog(page), len(site.posthog.requests)
    page.goto(site.url("/"))
    accept = page.locator("#consent-banner [data-consent=accept]")
    decline = page.locator("#consent-banner [data-consent=decline]")
    assert accept.bounding_box()["height"] == decline.bounding_box()["height"]  # type: ignore[index]
    assert accept.bounding_box()["width"] == decline.bounding_box()["width"]  # type: ignore[index]
    decline.focus()
    page.keyboard.press("Enter")  # the keyboard alone
    page.wait_for_selector("#consent-banner", state="hidden")
    assert consent_choice(page) == "declined"
    assert_no_analytics(page, site, log, 0, seen)

    page.reload()
    assert page.is_hidden("#consent-banner")  # the choice is remembered
    assert page.is_visible("#consent-settings")
    page.goto(site.url("/privacy"))
    assert page.is_hidden("#consent-banner")
    assert_no_analytics(page, site, log, 0, seen)
    assert storage(page)["local"] == [CONSENT_STORAGE_KEY]


def test_accept_loads_posthog_and_withdrawing_stops_it(
    site: Site, visitor_page: Callable[..., Page]
) -> None:
    page = visitor_page()
    log = NetworkLog(page)
    page.goto(site.url("/pricing"))
    seen = len(site.posthog.requests)
    accept_and_wait_for_posthog(page, site)
    assert consent_choice(page) == "accepted"
    assert page.is_hidden("#consent-banner")
    assert len(site.posthog.requests) > seen
    assert any(u.startswith(site.posthog.url) for u in log.urls)
    held = storage(page)
    assert [n for n in held["cookies"] + held["local"] if PH_NAME.match(n)]  # PostHog's own

    # Remembered: the next page loads analytics without asking.
    with page.expect_response(lambda r: r.url.startswith(site.posthog.url)):
        page.goto(site.url("/"))
    assert page.is_hidden("#consent-banner")

    # Changed back from the footer: PostHog is opted out, its storage cleared, the page
    # reloaded, and nothing more is sent.
    page.click("#consent-settings")
    page.wait_for_selector("#consent-banner", state="visible")
    assert page.evaluate("document.activeElement.id") == "consent-banner"
    assert (
        page.text_content("#consent-current") == i18n.catalog("en")["site.consent_current_accepted"]
    )
    mark, seen = log.mark(), len(site.posthog.requests)  # from the click on: nothing
    with page.expect_navigation():
        page.click("#consent-banner [data-consent=decline]")
    page.wait_for_load_state("networkidle")
    assert consent_choice(page) == "declined"
    held = storage(page)
    assert not [n for n in held["cookies"] + held["local"] + held["session"] if PH_NAME.match(n)]
    page.goto(site.url("/pricing"))
    page.reload()
    assert_no_analytics(page, site, log, mark, seen)


def test_escape_closes_the_reopened_banner_and_focus_returns(
    site: Site, new_page: Callable[..., Page]
) -> None:
    page = new_page(locale="zh-CN", width=390, height=844)
    page.goto(site.url("/terms"))
    page.click("#consent-banner [data-consent=decline]")
    page.wait_for_selector("#consent-banner", state="hidden")
    page.focus("#consent-settings")
    page.keyboard.press("Enter")
    page.wait_for_selector("#consent-banner", state="visible")
    assert (
        page.text_content("#consent-current")
        == i18n.catalog("zh-CN")["site.consent_current_declined"]
    )
    page.keyboard.press("Escape")
    page.wait_for_selector("#consent-banner", state="hidden")
    assert page.evaluate("document.activeElement.id") == "consent-settings"
    assert consent_choice(page) == "declined"
    assert axe_violations(page) == []


def test_the_console_never_loads_analytics_even_after_consent(
    site: Site, visitor_page: Callable[..., Page]
) -> None:
    page = visitor_page()
    log = NetworkLog(page)
    page.goto(site.url("/"))
    accept_and_wait_for_posthog(page, site)
    sign_up(page, site)  # through /sign-in (no banner there) into the console
    page.wait_for_load_state("networkidle")
    mark, seen = log.mark(), len(site.posthog.requests)
    for section in ("keys", "usage", "account"):
        page.goto(site.url(f"/console/{section}"))
        page.wait_for_selector("#app[aria-busy=false]", state="attached")
        page.wait_for_load_state("networkidle")
    urls = log.since(mark)
    assert [u for u in urls if "/console/" in u]
    assert not [u for u in urls if u.startswith(site.posthog.url)]
    assert not [u for u in urls if analytics_chunk() in u]
    assert site.posthog.requests[seen:] == []
    assert page.locator("#consent-banner").count() == 0
    assert page.locator("#consent-settings").count() == 0
