"""Browser tests: the real `make dev` (DynamoDB Local, the Stripe stand-in, the outbox) on a
free port, driven by Playwright in Debian's headless Chromium (/usr/bin/chromium). Every
test makes its own user, so tests share the server but never an account.

Fixtures: `site` (the server: base URL, outbox, the PostHog stand-in), `browser`, and
`new_page(locale)` (a fresh browser context: no cookies, no storage). Helpers: `sign_up`,
`axe_violations`, `read_link`."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.browser.fake_posthog import FakePostHog
from tests.conftest import ROOT, ThreadedServer, free_port
from tests.e2e.test_make_dev import dev_env, run_dev, stop
from tests.fakes.oauth_provider import FakeOAuthProvider

CHROMIUM = "/usr/bin/chromium"
# Chromium as root in a closed network: no sandbox, no background connections.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
POSTHOG_KEY = "phc_test_dynoyard_browser"


@dataclass
class Site:
    base: str
    outbox: Path
    posthog: FakePostHog
    folder: Path
    dynamodb: str = ""  # its DynamoDB Local's endpoint (for the CLI: dynoyard credits grant)
    google: FakeOAuthProvider | None = None  # the Google stand-in sign-in with Google reaches

    def url(self, path: str) -> str:
        return self.base + path


@contextmanager
def running_site(folder: Path) -> Iterator[Site]:
    """`make dev` in `folder` on a free port (with the PostHog stand-in and a Google OAuth
    stand-in, tests/fakes/oauth_provider.py), stopped after."""
    posthog = FakePostHog()
    google = FakeOAuthProvider("google")
    port, ddb_port = free_port(), free_port()
    with ThreadedServer(google.app) as google_server:
        env = dev_env(port, ddb_port) | {
            "POSTHOG_KEY": POSTHOG_KEY,
            "POSTHOG_HOST": posthog.url,
            "GOOGLE_CLIENT_ID": google.client_id,
            "GOOGLE_CLIENT_SECRET": google.client_secret,
            "GOOGLE_OAUTH_BASE": f"http://127.0.0.1:{google_server.port}",
            # Every test browser comes from 127.0.0.1: the per-IP sign-in limits (20 links
            # and 30 callbacks per 15 minutes) would refuse the suite's sign-ups after the
            # 20th.
            "DYNOYARD_LINKS_PER_IP": "100000",
            "DYNOYARD_LINK_CALLBACKS_PER_IP": "100000",
            "DYNOYARD_OAUTH_PER_IP": "100000",
        }
        process, _ = run_dev(folder, env)
        try:
            yield Site(
                f"http://127.0.0.1:{port}",
                folder / ".local" / "outbox",
                posthog,
                folder,
                dynamodb=f"http://127.0.0.1:{ddb_port}",
                google=google,
            )
        finally:
            stop(process)
            posthog.stop()


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with running_site(tmp_path_factory.mktemp("browser-site")) as running:
        yield running


@contextmanager
def launched_browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, through Playwright."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Per module, not per session: Playwright's sync API keeps an event loop running in
    this thread while it is open, and the suite's later asyncio.run() calls would fail."""
    with launched_browser() as launched:
        yield launched


@contextmanager
def page_factory(
    browser: Browser, init_script: str | None = None, **options: Any
) -> Iterator[Callable[..., Page]]:
    """make(locale="en-US", width=1280, height=900): a page in a fresh context (no cookies,
    no storage), made with `options` besides (browser.new_context's) and running
    `init_script` before each document's own; closed after."""
    contexts: list[BrowserContext] = []

    def make(locale: str = "en-US", width: int = 1280, height: int = 900) -> Page:
        context = browser.new_context(
            locale=locale, viewport={"width": width, "height": height}, **options
        )
        if init_script:
            context.add_init_script(init_script)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        return page

    try:
        yield make
    finally:
        for context in contexts:
            context.close()


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    with page_factory(browser) as make:
        yield make


def unique_email(label: str = "user") -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}@example.com"


def read_link(site: Site, email: str, pattern: str, timeout: float = 10) -> str:
    """The first link matching `pattern` in the newest email to `email` in the outbox."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mails = sorted(site.outbox.glob("*.eml"), key=lambda p: p.stat().st_mtime, reverse=True)
        for file in mails:
            mail = BytesParser(policy=policy.default).parsebytes(file.read_bytes())
            if email.lower() not in str(mail["to"]).lower():
                continue
            body = mail.get_body(preferencelist=("plain",))
            assert body is not None
            found = re.search(pattern, body.get_content())
            if found:
                return found.group(0)
        time.sleep(0.1)
    raise AssertionError(f"no email to {email} with {pattern!r}")


def sign_up(page: Page, site: Site, email: str | None = None, name: str = "Ada") -> str:
    """Signs up through /sign-in and the emailed link, as a person would; answers the
    address. The page ends on the console."""
    email = email or unique_email()
    page.goto(site.url("/sign-in"))
    page.fill("#email", email)
    page.fill("#name", name)
    page.check("#accept-terms")
    page.click("#email-link-form button[type=submit]")
    page.wait_for_selector("#status[data-kind=ok]")
    link = read_link(
        site, email, r"http://127\.0\.0\.1:\d+/api/auth/email-link/callback\?token=\S+"
    )
    page.goto(link)
    page.wait_for_url(re.compile(r".*/console.*"))
    page.wait_for_selector("#app[aria-busy=false]", state="attached")
    return email


def axe_violations(page: Page, impacts: tuple[str, ...] = ("serious", "critical")) -> list[Any]:
    """axe-core (from npm) run in the page: its violations of the given impacts."""
    # Evaluated through the DevTools protocol, which the page's CSP does not govern (a
    # <script> tag would be refused, rightly).
    page.evaluate(AXE.read_text() + "\n;0")
    result = page.evaluate("async () => (await axe.run(document)).violations")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result
        if v["impact"] in impacts
    ]
