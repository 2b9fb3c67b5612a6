"""`make screenshots`: every page at desktop (1280x900) and phone (390x844) widths, in both
languages, as full-page PNGs: <folder>/<language>/<page>-<desktop|phone>.png.

It starts the same local site as the browser tests (`make dev` on a free port, in a
temporary folder), signs up one user per language, gives the organization some credits
(`dynoyard credits grant`, as an operator would), makes an API key and a few /v1 calls so
that the usage pages have data, invites a teammate, then photographs the public pages
signed out and the console's pages signed in.

    python -m tests.browser.screenshots [folder]     (default: screenshots)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, BrowserContext, Page

from dynoyard.web.pages import CONSOLE_PAGES, PAGE_PATHS
from tests.browser.conftest import Site, launched_browser, running_site, sign_up, unique_email

LOCALES = {"en": "en-US", "zh-CN": "zh-CN"}
SIZES = {"desktop": (1280, 900), "phone": (390, 844)}
NAMES = {"en": "Ada Lovelace", "zh-CN": "李华"}
DEMO_MODEL = "dynoyard-demo"
PROMPTS = ("Hello!", "Write a haiku about gateways.", "What is 2 + 2?", "Say hi in French.")


def page_name(path: str) -> str:
    """ "/" → home, "/sign-in" → sign-in, "/console/keys" → console-keys."""
    return path.strip("/").replace("/", "-") or "home"


def signed_up_context(browser: Browser, site: Site, language: str) -> tuple[BrowserContext, str]:
    """A context signed in as a new user of `language`, and their organization's id."""
    context = browser.new_context(locale=LOCALES[language])
    page = context.new_page()
    page.set_default_timeout(20_000)
    sign_up(page, site, email=unique_email(f"shots-{language.lower()}"), name=NAMES[language])
    me = page.request.get(site.url("/api/me")).json()
    page.close()
    return context, me["orgs"][0]["org_id"]


def console_call(context: BrowserContext, site: Site, method: str, path: str, body: Any) -> Any:
    """A console API call with the context's session and the CSRF token of /api/me."""
    csrf = context.request.get(site.url("/api/me")).json()["csrf_token"]
    answer = context.request.fetch(
        site.url(path), method=method, data=body, headers={"x-csrf-token": csrf}
    )
    if not answer.ok:
        raise RuntimeError(f"{method} {path}: {answer.status} {answer.text()}")
    return answer.json()


def grant_credits(site: Site, org_id: str) -> None:
    """$25 of credits, by the operator's CLI against the site's DynamoDB Local."""
    env = dict(os.environ) | {
        "AWS_ENDPOINT_URL_DYNAMODB": site.dynamodb,
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "local"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "local"),
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    }
    for name in [k for k in env if k.endswith("_TABLE")]:
        del env[name]  # make dev's tables have the default names
    command = [sys.executable, "-m", "dynoyard", "credits", "grant", "--org", org_id]
    command += ["--usd", "25.00", "--reason", "screenshots"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"credits grant failed: {done.stderr or done.stdout}")


def make_usage(context: BrowserContext, site: Site, org_id: str) -> None:
    """An API key and a few /v1 calls (one refused), so usage has records and a chart."""
    key = console_call(
        context, site, "POST", f"/api/orgs/{org_id}/keys", {"name": "Production app"}
    )["api_key"]
    console_call(context, site, "POST", f"/api/orgs/{org_id}/keys", {"name": "Staging"})
    headers = {"authorization": f"Bearer {key}"}
    with httpx.Client(base_url=site.base, headers=headers, timeout=20) as client:
        for prompt in PROMPTS:
            answer = client.post(
                "/v1/chat/completions",
                json={"model": DEMO_MODEL, "messages": [{"role": "user", "content": prompt}]},
            )
            answer.raise_for_status()
        client.post("/v1/chat/completions", json={"model": "no-such-model", "messages": []})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the records are written once each answer ends
        usage = context.request.get(site.url(f"/api/orgs/{org_id}/usage?limit=10")).json()
        if len(usage.get("records", [])) >= len(PROMPTS):
            return
        time.sleep(0.2)
    raise RuntimeError("the usage records did not appear")


def invite(context: BrowserContext, site: Site, org_id: str) -> None:
    body = {"email": unique_email("teammate"), "role": "admin"}
    console_call(context, site, "POST", f"/api/orgs/{org_id}/invitations", body)


def photograph(context: BrowserContext, site: Site, path: str, out: Path) -> list[Path]:
    """The page at each width, full length; says when it is wider than the screen."""
    written = []
    page: Page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        for size, (width, height) in SIZES.items():
            page.set_viewport_size({"width": width, "height": height})
            answer = page.goto(site.url(path))
            if answer is None or answer.status != 200:
                print(f"  {path}: {answer and answer.status}, photographed all the same")
            if path.startswith("/console"):
                page.wait_for_selector("#app[aria-busy=false]", state="attached")
            page.wait_for_load_state("networkidle")
            wide = page.evaluate("document.documentElement.scrollWidth")
            if wide > width:
                print(f"  {out.name}{path} {size}: {wide}px wide on a {width}px screen")
            file = out / f"{page_name(path)}-{size}.png"
            page.screenshot(path=str(file), full_page=True)
            written.append(file)
    finally:
        page.close()
    return written


def first_visit(context: BrowserContext, site: Site, out: Path) -> list[Path]:
    """The home page as a first visit sees it (the screen, with the consent banner when
    analytics is on), then the banner declined: the full-length shots go without it."""
    written = []
    page = context.new_page()
    try:
        for size, (width, height) in SIZES.items():
            page.set_viewport_size({"width": width, "height": height})
            page.goto(site.url("/"))
            page.wait_for_load_state("networkidle")
            file = out / f"home-first-visit-{size}.png"
            page.screenshot(path=str(file))
            written.append(file)
        decline = page.locator("[data-consent=decline]")
        if decline.count() and decline.first.is_visible():
            decline.first.click()
    finally:
        page.close()
    return written


def take(folder: Path) -> list[Path]:
    written: list[Path] = []
    with (
        tempfile.TemporaryDirectory(prefix="dynoyard-shots-") as work,
        running_site(Path(work)) as site,
        launched_browser() as browser,
    ):
        for language in LOCALES:
            out = folder / language
            out.mkdir(parents=True, exist_ok=True)
            signed_out = browser.new_context(locale=LOCALES[language])
            written += first_visit(signed_out, site, out)
            for path in PAGE_PATHS:
                written += photograph(signed_out, site, path, out)
            signed_out.close()
            signed_in, org_id = signed_up_context(browser, site, language)
            grant_credits(site, org_id)
            make_usage(signed_in, site, org_id)
            invite(signed_in, site, org_id)
            for name in CONSOLE_PAGES:
                written += photograph(signed_in, site, f"/console/{name}", out)
            signed_in.close()
            print(f"{language}: {len(list(out.glob('*.png')))} screenshots in {out}")
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0] if args else "screenshots")
    written = take(folder)
    print(f"{len(written)} screenshots in {folder}/<language>/<page>-<desktop|phone>.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
