"""Sign-in in the browser: sign-up through the emailed link lands in the console; a link
used twice brings the person back to /sign-in, told why in their language."""

from __future__ import annotations

import re
import uuid

from dynoyard.web import i18n
from tests.browser.conftest import axe_violations, read_link, sign_up
from tests.fakes.oauth_provider import FakeProfile

SIGN_IN_LINK = r"http://127\.0\.0\.1:\d+/api/auth/email-link/callback\?token=\S+"


def test_sign_up_by_link_lands_in_the_console(site, new_page) -> None:
    page = new_page()
    email = sign_up(page, site)
    assert page.text_content("#signed-in-as") == email
    assert axe_violations(page) == []


def test_a_used_link_comes_back_to_sign_in_with_the_reason(site, new_page) -> None:
    page = new_page(locale="zh-CN")
    email = sign_up(page, site)
    link = read_link(site, email, SIGN_IN_LINK)
    again = new_page(locale="zh-CN")
    again.goto(link)
    again.wait_for_url(re.compile(r".*/sign-in\?error=link_invalid$"))
    assert again.text_content("#status") == i18n.catalog("zh-CN")["errors.link_invalid"]
    assert again.context.cookies() == [] or all(
        c["name"] != "dynoyard_session" for c in again.context.cookies()
    )
    assert axe_violations(again) == []


def test_sign_up_with_google_needs_the_terms_then_lands_in_the_console(site, new_page) -> None:
    """Through the Google stand-in (make dev pointed at it by GOOGLE_OAUTH_BASE): without the
    terms box, no account and the reason on /sign-in; with it, a new account."""
    assert site.google is not None
    email = f"google-{uuid.uuid4().hex[:8]}@example.com"
    site.google.profile = FakeProfile(provider_id=uuid.uuid4().hex[:18], email=email)
    page = new_page()
    page.goto(site.url("/sign-in"))
    page.click("a.oauth-start[href^='/api/auth/google/start']")
    page.wait_for_url(re.compile(r".*/sign-in\?error=terms_not_accepted$"))
    assert page.text_content("#status") == i18n.catalog("en")["errors.terms_not_accepted"]
    page.check("#accept-terms")
    page.click("a.oauth-start[href^='/api/auth/google/start']")
    page.wait_for_url(re.compile(r".*/console$"))
    page.wait_for_selector("#app[aria-busy=false]", state="attached")
    assert page.text_content("#signed-in-as") == email
