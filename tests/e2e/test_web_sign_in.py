"""The sign-in page: the OAuth providers configured here (none, one, both), each button
carrying the terms box's answer, and the reason a sign-in route sent the browser back
(`?error=<code>`) in the visitor's language; an unreadable OAuth secret leaves the email
link working."""

from __future__ import annotations

import re
from typing import Any

import pytest
from markupsafe import escape
from starlette.testclient import TestClient

from dynoyard.console.app import create_console_app
from dynoyard.console.settings import ConsoleSettings
from dynoyard.domain.ports import SecretUnavailable
from dynoyard.web import i18n


def client(oauth: Any = None) -> TestClient:
    app = create_console_app(ConsoleSettings(posthog_key=None))
    if oauth is not None:
        app.state.oauth_providers = oauth  # what console/oauth_routes.providers reads
    return TestClient(app)


def buttons(html: str) -> list[str]:
    return re.findall(r'class="button secondary oauth-start" href="/api/auth/(\w+)/start"', html)


def test_only_the_configured_providers_are_offered_with_the_terms_answer() -> None:
    assert "oauth-start" not in client({}).get("/sign-in").text
    both = client({"google": object(), "discord": object()}).get("/sign-in").text
    assert buttons(both) == ["discord", "google"]
    one = client({"google": object()}).get("/sign-in?lang=zh-CN").text
    assert buttons(one) == ["google"]
    assert i18n.catalog("zh-CN")["sign_in.or"] in one


@pytest.mark.parametrize("language", i18n.LANGUAGES)
@pytest.mark.parametrize(
    ("code", "key"),
    [
        ("link_invalid", "errors.link_invalid"),
        ("terms_not_accepted", "errors.terms_not_accepted"),
        ("<script>alert(1)</script>", "common.error_generic"),
        ("", "common.error_generic"),
    ],
)
def test_the_reason_a_sign_in_came_back_is_said_in_the_visitors_language(
    language: str, code: str, key: str
) -> None:
    answer = client({}).get("/sign-in", params={"error": code, "lang": language})
    assert answer.status_code == 200
    said = re.search(r'<p id="status"[^>]*data-kind="error">([^<]*)</p>', answer.text)
    assert said is not None, answer.text
    assert said.group(1) == str(escape(i18n.catalog(language)[key]))
    assert "<script>alert" not in answer.text


def test_no_error_no_message() -> None:
    page = client({}).get("/sign-in").text
    assert '<p id="status" role="status" aria-live="polite" class="status"></p>' in page


def test_an_unreadable_oauth_secret_leaves_the_email_link_form(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def unreadable() -> Any:
        raise SecretUnavailable("GetParameterError")

    monkeypatch.setattr("dynoyard.console.oauth_routes.oauth_settings", unreadable)
    answer = client().get("/sign-in")
    assert answer.status_code == 200
    assert 'id="email-link-form"' in answer.text and "oauth-start" not in answer.text
