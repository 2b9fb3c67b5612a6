"""The web skeleton: sign-up through the emailed link lands in the console, in the browser."""

from __future__ import annotations

from tests.browser.conftest import axe_violations, sign_up


def test_sign_up_by_link_lands_in_the_console(site, new_page) -> None:
    page = new_page()
    email = sign_up(page, site)
    assert page.text_content("#signed-in-as") == email
    assert axe_violations(page) == []
