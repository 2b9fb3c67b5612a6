"""Sign-in in the browser: sign-up through the emailed link lands in the console; a link
used twice brings the person back to /sign-in, told why in their language."""

from __future__ import annotations

import re

from dynoyard.web import i18n
from tests.browser.conftest import axe_violations, read_link, sign_up

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
