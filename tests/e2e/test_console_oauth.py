"""Sign-in with Google and Discord through the console (`/api/auth/{provider}/start` and
`…/callback`) over real HTTP, against the fake provider of each shape (a real server too)
and DynamoDB Local: sign-up, linking to an email-link account, and every refusal."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from dynoyard.adapters.oauth import oauth_providers
from dynoyard.adapters.oauth_settings import OAuthSettings
from dynoyard.console.app import create_console_app
from tests.conftest import Tables, ThreadedServer
from tests.e2e.test_console_auth import Clock, Console, Mailbox, session_from, settings_for
from tests.fakes.oauth_provider import FakeOAuthProvider, FakeProfile, Shape

SHAPES: tuple[Shape, ...] = ("google", "discord")
OAUTH_COOKIE = "dynoyard_oauth"


@dataclass
class Stands:
    console: Console
    fakes: dict[str, FakeOAuthProvider]


def settings_of(fake: FakeOAuthProvider, base: str) -> dict[str, Any]:
    prefix = fake.shape.upper()
    return {
        f"{prefix}_CLIENT_ID": fake.client_id,
        f"{prefix}_CLIENT_SECRET": fake.client_secret,
        f"{prefix}_OAUTH_BASE": base,
    }


@pytest.fixture(scope="module")
def stands(tables: Tables) -> Iterator[Stands]:
    fakes = {shape: FakeOAuthProvider(shape) for shape in SHAPES}
    app = create_console_app(settings_for(tables), email_sender=Mailbox(), clock=Clock())
    with (
        ThreadedServer(fakes["google"].app) as google,
        ThreadedServer(fakes["discord"].app) as discord,
    ):
        values = {
            **settings_of(fakes["google"], f"http://127.0.0.1:{google.port}"),
            **settings_of(fakes["discord"], f"http://127.0.0.1:{discord.port}"),
        }
        app.state.oauth_providers = oauth_providers(OAuthSettings(**values))
        with ThreadedServer(app) as server:
            console = Console(
                f"http://127.0.0.1:{server.port}",
                app.state.console.email,
                app.state.console.clock,
                app.state.console.settings,
            )
            yield Stands(console, fakes)
            console.http.close()


@pytest.fixture(params=SHAPES)
def shape(request: pytest.FixtureRequest, stands: Stands) -> Shape:
    stands.fakes[request.param].reset()
    chosen: Shape = request.param
    return chosen


def person(verified: bool = True, email: str | None = None) -> FakeProfile:
    return FakeProfile(
        provider_id=str(uuid.uuid4().int)[:18],
        email=email or f"Oauth-{uuid.uuid4().hex[:10]}@Example.com",
        verified=verified,
    )


def start(console: Console, shape: Shape, accept_terms: bool = True) -> tuple[str, str]:
    """The provider's URL the console sent the browser to, and the OAuth cookie's value."""
    query = "?accept_terms=true" if accept_terms else ""
    answer = console.request("GET", f"/api/auth/{shape}/start{query}")
    assert answer.status_code == 302, answer.text
    cookie = SimpleCookie()
    cookie.load(answer.headers["set-cookie"])
    raw = answer.headers["set-cookie"].lower()
    assert "httponly" in raw and "samesite=lax" in raw and "max-age=600" in raw
    return answer.headers["location"], cookie[OAUTH_COOKIE].value


def at_provider(url: str) -> dict[str, str]:
    """The browser at the provider and back: the callback's query."""
    answer = httpx.get(url, follow_redirects=False, timeout=5)
    assert answer.status_code == 302, answer.text
    location = urlsplit(answer.headers["location"])
    assert location.path.endswith("/callback")
    return {k: v[0] for k, v in parse_qs(location.query).items()}


def callback(console: Console, shape: Shape, query: dict[str, str], cookie: str) -> httpx.Response:
    return console.request(
        "GET",
        f"/api/auth/{shape}/callback",
        params=query,
        headers={"cookie": f"{OAUTH_COOKIE}={cookie}"},
    )


def sign_in(
    stands: Stands, shape: Shape, profile: FakeProfile, accept_terms: bool = True
) -> httpx.Response:
    stands.fakes[shape].profile = profile
    url, cookie = start(stands.console, shape, accept_terms)
    return callback(stands.console, shape, at_provider(url), cookie)


def assert_error(answer: httpx.Response, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code and error["message"] and error["type"]
    assert "dynoyard_session" not in answer.headers.get("set-cookie", "")


def test_a_new_user_signs_up_and_the_session_works(stands: Stands, shape: Shape) -> None:
    profile = person()
    answer = sign_in(stands, shape, profile)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/console"
    me = stands.console.me(session_from(answer))
    assert me["user"]["email"] == str(profile.email).strip().lower()
    assert me["user"]["verified"] is True and me["user"]["user_id"].startswith("usr_")
    (org,) = me["orgs"]
    assert org["role"] == "owner"
    # Signing in again is the same user, with no second organization.
    again = stands.console.me(session_from(sign_in(stands, shape, profile, accept_terms=False)))
    assert again["user"]["user_id"] == me["user"]["user_id"] and again["orgs"] == me["orgs"]


def test_a_verified_address_signs_in_to_its_email_link_account(
    stands: Stands, shape: Shape
) -> None:
    link_session, email = stands.console.sign_up(name="Grace")
    before = stands.console.me(link_session)
    answer = sign_in(stands, shape, person(email=email.upper()), accept_terms=False)
    assert answer.status_code == 303, answer.text
    after = stands.console.me(session_from(answer))
    assert after["user"]["user_id"] == before["user"]["user_id"]
    assert after["orgs"] == before["orgs"]


def test_sign_up_needs_the_terms_accepted(stands: Stands, shape: Shape) -> None:
    answer = sign_in(stands, shape, person(), accept_terms=False)
    assert_error(answer, 400, "terms_not_accepted")
    assert "accept_terms" in answer.json()["error"]["message"]


def test_an_unverified_address_is_refused_and_never_taken(stands: Stands, shape: Shape) -> None:
    session, email = stands.console.sign_up()
    answer = sign_in(stands, shape, person(verified=False, email=email))
    assert_error(answer, 400, "email_unverified")
    fresh = sign_in(stands, shape, person(verified=False))
    assert_error(fresh, 400, "email_unverified")
    assert stands.console.me(session)["user"]["email"] == email


def test_a_state_that_does_not_match_is_refused(stands: Stands, shape: Shape) -> None:
    stands.fakes[shape].profile = person()
    url, cookie = start(stands.console, shape)
    query = at_provider(url)
    forged = {**query, "state": "x" + query["state"][1:]}
    assert_error(callback(stands.console, shape, forged, cookie), 400, "oauth_state_invalid")
    # The attempt is used up: the right state with the same cookie no longer works.
    assert_error(callback(stands.console, shape, query, cookie), 400, "oauth_state_invalid")


def test_a_callback_works_once(stands: Stands, shape: Shape) -> None:
    stands.fakes[shape].profile = person()
    url, cookie = start(stands.console, shape)
    query = at_provider(url)
    assert callback(stands.console, shape, query, cookie).status_code == 303
    assert_error(callback(stands.console, shape, query, cookie), 400, "oauth_state_invalid")


@pytest.mark.parametrize(
    "cookie", [None, "", "forged", "x" * 300, "\u00e9t\u00e9"], ids=lambda c: repr(c)[:12]
)
def test_a_missing_or_unknown_cookie_is_refused(
    stands: Stands, shape: Shape, cookie: str | None
) -> None:
    stands.fakes[shape].profile = person()
    url, _ = start(stands.console, shape)
    query = at_provider(url)
    headers = {"cookie": f"{OAUTH_COOKIE}={cookie}".encode()} if cookie is not None else {}
    answer = stands.console.request(
        "GET", f"/api/auth/{shape}/callback", params=query, headers=headers
    )
    assert_error(answer, 400, "oauth_state_invalid")


def test_a_cookie_of_the_other_provider_is_refused(stands: Stands, shape: Shape) -> None:
    other: Shape = "discord" if shape == "google" else "google"
    stands.fakes[shape].profile = person()
    url, cookie = start(stands.console, shape)
    answer = callback(stands.console, other, at_provider(url), cookie)
    assert_error(answer, 400, "oauth_state_invalid")


def test_an_expired_start_is_refused(stands: Stands, shape: Shape) -> None:
    stands.fakes[shape].profile = person()
    url, cookie = start(stands.console, shape)
    query = at_provider(url)
    stands.console.clock.offset += 601
    try:
        answer = callback(stands.console, shape, query, cookie)
    finally:
        stands.console.clock.offset -= 601
    assert_error(answer, 400, "oauth_state_invalid")


@pytest.mark.parametrize("fault", ["500", "garbage", "no-token"])
def test_a_provider_failure_is_400_not_500(stands: Stands, shape: Shape, fault: str) -> None:
    fake = stands.fakes[shape]
    fake.profile = person()
    fake.token_fault = fault
    try:
        url, cookie = start(stands.console, shape)
        answer = callback(stands.console, shape, at_provider(url), cookie)
    finally:
        fake.token_fault = None
    assert_error(answer, 400, "oauth_failed")
    assert fake.client_secret not in answer.text


def test_a_refusal_at_the_provider_is_400(stands: Stands, shape: Shape) -> None:
    url, cookie = start(stands.console, shape)
    state = parse_qs(urlsplit(url).query)["state"][0]
    answer = callback(stands.console, shape, {"error": "access_denied", "state": state}, cookie)
    assert_error(answer, 400, "oauth_failed")
    assert "access_denied" in answer.json()["error"]["message"]


def test_a_bad_code_is_400(stands: Stands, shape: Shape) -> None:
    for query in ({}, {"code": "made-up"}):
        url, cookie = start(stands.console, shape)
        state = parse_qs(urlsplit(url).query)["state"][0]
        answer = callback(stands.console, shape, {**query, "state": state}, cookie)
        assert_error(answer, 400, "oauth_failed")


def test_the_redirect_uri_is_the_public_callback(stands: Stands, shape: Shape) -> None:
    url, _ = start(stands.console, shape)
    query = parse_qs(urlsplit(url).query)
    assert query["redirect_uri"] == [f"http://127.0.0.1:8080/api/auth/{shape}/callback"]
    assert query["code_challenge_method"] == ["S256"]


def test_no_secret_of_the_sign_in_is_stored_in_the_clear(
    stands: Stands, shape: Shape, tables: Tables
) -> None:
    _, cookie = start(stands.console, shape)
    assert cookie not in str(tables.scan_table(tables.accounts))


def test_an_unconfigured_or_unknown_provider_is_404(tables: Tables) -> None:
    app = create_console_app(settings_for(tables), email_sender=Mailbox(), clock=Clock())
    app.state.oauth_providers = {}
    with ThreadedServer(app) as server, httpx.Client() as http:
        base = f"http://127.0.0.1:{server.port}"
        for path in (
            "/api/auth/google/start",
            "/api/auth/discord/start?accept_terms=true",
            "/api/auth/discord/callback?code=x&state=y",
            "/api/auth/github/start",
        ):
            answer = http.get(base + path)
            assert answer.status_code == 404, (path, answer.text)
            error = answer.json()["error"]
            assert error["code"] == "provider_not_configured" and error["message"]
