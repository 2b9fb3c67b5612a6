"""Sign-in with Google and Discord (adapters/oauth.py) end to end against a fake provider
that is a real HTTP server on 127.0.0.1, in each provider's shape (tests/fakes/
oauth_provider.py): the authorize URL, the browser's round trip, the PKCE-checked token
exchange, the profile, and every way it can fail."""

from __future__ import annotations

import asyncio
import json
import os
import string
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import ValidationError

from dynoyard.adapters.oauth import DISCORD, GOOGLE, NAME_MAX, AuthlibProvider, oauth_providers
from dynoyard.adapters.oauth_settings import OAuthSettings
from dynoyard.domain.oauth import OAuthFailed, OAuthProfile, OAuthProvider, OAuthStart
from tests.conftest import ROOT, ThreadedServer, free_port
from tests.fakes.oauth_provider import PATHS, FakeOAuthProvider, FakeProfile, Shape, s256

SHAPES: tuple[Shape, ...] = ("google", "discord")
SCOPES = {"google": "openid email profile", "discord": "identify email"}
OAUTH_ENV = (
    "GOOGLE_CLIENT_ID",
    "GOOGLE_CLIENT_SECRET",
    "DISCORD_CLIENT_ID",
    "DISCORD_CLIENT_SECRET",
    "GOOGLE_OAUTH_BASE",
    "DISCORD_OAUTH_BASE",
    "DYNOYARD_OAUTH_TIMEOUT_SECONDS",
)
UNRESERVED = set(string.ascii_letters + string.digits + "-._~")


@dataclass
class Stand:
    """A fake provider of one shape, where it listens, and how to make the adapter for it."""

    shape: Shape
    fake: FakeOAuthProvider
    base: str

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:8080/api/auth/{self.shape}/callback"

    def settings(self, **overrides: Any) -> OAuthSettings:
        """Settings naming only this provider, pointed at the fake by its base URL."""
        prefix = self.shape.upper()
        values: dict[str, Any] = {
            f"{prefix}_CLIENT_ID": self.fake.client_id,
            f"{prefix}_CLIENT_SECRET": self.fake.client_secret,
            f"{prefix}_OAUTH_BASE": self.base,
            **overrides,
        }
        return OAuthSettings(**values)

    def provider(self, **overrides: Any) -> OAuthProvider:
        return oauth_providers(self.settings(**overrides))[self.shape]

    def secrets(self) -> list[str]:
        """What must never appear in an error: the client secret, every token issued."""
        return [self.fake.client_secret, *self.fake.issued_tokens]


@pytest.fixture(autouse=True)
def no_oauth_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OAUTH_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def stands() -> Iterator[dict[str, Stand]]:
    fakes = {shape: FakeOAuthProvider(shape) for shape in SHAPES}
    with (
        ThreadedServer(fakes["google"].app) as google,
        ThreadedServer(fakes["discord"].app) as discord,
    ):
        yield {
            "google": Stand("google", fakes["google"], f"http://127.0.0.1:{google.port}"),
            "discord": Stand("discord", fakes["discord"], f"http://127.0.0.1:{discord.port}"),
        }


@pytest.fixture(params=SHAPES)
def stand(request: pytest.FixtureRequest, stands: dict[str, Stand]) -> Stand:
    chosen = stands[request.param]
    chosen.fake.reset()
    return chosen


@pytest.fixture
def google(stands: dict[str, Stand]) -> Stand:
    stands["google"].fake.reset()
    return stands["google"]


@pytest.fixture
def discord(stands: dict[str, Stand]) -> Stand:
    stands["discord"].fake.reset()
    return stands["discord"]


def follow_authorize(start: OAuthStart) -> tuple[str, str]:
    """The browser's trip to the provider and back: the code and state it returns with."""
    response = httpx.get(start.url, follow_redirects=False, timeout=5)
    assert response.status_code == 302, response.text
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert "error" not in query, query
    return query["code"][0], query["state"][0]


def authorized(stand: Stand, provider: OAuthProvider) -> tuple[OAuthStart, str]:
    start = provider.start(stand.redirect_uri)
    code, state = follow_authorize(start)
    assert state == start.state
    return start, code


def sign_in(stand: Stand, provider: OAuthProvider | None = None) -> OAuthProfile:
    provider = provider or stand.provider()
    start, code = authorized(stand, provider)
    return asyncio.run(provider.finish(code, start.code_verifier, stand.redirect_uri))


def failed_finish(
    stand: Stand,
    provider: OAuthProvider | None = None,
    *,
    verifier: str | None = None,
    code: str | None = None,
    redirect_uri: str | None = None,
) -> OAuthFailed:
    """Runs a sign-in expected to fail; checks the error holds no secret, and returns it."""
    provider = provider or stand.provider()
    start, real_code = authorized(stand, provider)
    used_verifier = verifier if verifier is not None else start.code_verifier
    with pytest.raises(OAuthFailed) as caught:
        asyncio.run(
            provider.finish(
                code if code is not None else real_code,
                used_verifier,
                redirect_uri if redirect_uri is not None else stand.redirect_uri,
            )
        )
    error = caught.value
    shown = "".join(traceback.format_exception(error)) + repr(error)
    for secret in [*stand.secrets(), start.code_verifier, used_verifier, real_code]:
        assert secret not in shown, f"{secret!r} leaked into {error!r}"
    assert str(error).startswith(f"{stand.shape} sign-in failed: ")
    assert len(str(error)) < 200
    return error


# -- start ------------------------------------------------------------------------------


def test_given_a_provider_when_sign_in_starts_then_the_url_asks_for_a_code_with_state_and_pkce_s256(
    stand: Stand,
) -> None:
    start = stand.provider().start(stand.redirect_uri)

    url = urlsplit(start.url)
    assert f"{url.scheme}://{url.netloc}{url.path}" == stand.base + PATHS[stand.shape]["authorize"]
    query = {name: values[0] for name, values in parse_qs(url.query).items()}
    assert query == {
        "response_type": "code",
        "client_id": stand.fake.client_id,
        "redirect_uri": stand.redirect_uri,
        "scope": SCOPES[stand.shape],
        "state": start.state,
        "code_challenge": s256(start.code_verifier),
        "code_challenge_method": "S256",
    }
    assert stand.fake.client_secret not in start.url
    assert 43 <= len(start.code_verifier) <= 128 and set(start.code_verifier) <= UNRESERVED
    assert len(start.state) >= 32 and set(start.state) <= UNRESERVED


def test_given_two_sign_ins_when_started_then_each_has_its_own_state_and_verifier(
    stand: Stand,
) -> None:
    provider = stand.provider()

    first, second = provider.start(stand.redirect_uri), provider.start(stand.redirect_uri)

    assert first.state != second.state
    assert first.code_verifier != second.code_verifier
    assert first.state != first.code_verifier


def test_given_the_start_url_when_the_browser_follows_it_then_it_returns_with_a_code_and_the_state(
    stand: Stand,
) -> None:
    start = stand.provider().start(stand.redirect_uri)

    response = httpx.get(start.url, follow_redirects=False, timeout=5)

    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == stand.redirect_uri
    query = parse_qs(location.query)
    assert query["state"] == [start.state] and query["code"][0]
    seen = stand.fake.authorizations[start.state]
    assert (seen.code_challenge_method, seen.code_challenge) == ("S256", s256(start.code_verifier))


# -- finish -----------------------------------------------------------------------------


def test_given_a_signed_in_user_when_finished_then_only_email_name_and_id_are_kept(
    stand: Stand,
) -> None:
    profile = sign_in(stand)

    assert profile == OAuthProfile(
        provider=stand.shape,
        provider_id="112233445566778899",
        email="ada.lovelace@example.com",
        email_verified=True,
        name="Ada Lovelace",
    )
    assert {f.name for f in fields(profile)} == {
        "provider",
        "provider_id",
        "email",
        "email_verified",
        "name",
    }
    (token,) = stand.fake.issued_tokens
    assert token not in repr(profile)
    (exchange,) = stand.fake.exchanges
    assert exchange.outcome == "ok"


def test_given_an_unverified_email_when_finished_then_the_profile_says_so(stand: Stand) -> None:
    stand.fake.profile = FakeProfile(verified=False)

    profile = sign_in(stand)

    assert profile.email_verified is False
    assert profile.email == "ada.lovelace@example.com"


def test_given_discord_without_a_global_name_when_finished_then_the_username_is_the_name(
    discord: Stand,
) -> None:
    discord.fake.profile = FakeProfile(global_name=None, username="ada_l")

    assert sign_in(discord).name == "ada_l"


def test_given_a_long_name_with_control_characters_when_finished_then_it_is_cleaned_and_capped(
    stand: Stand,
) -> None:
    long_name = "Ada\u0000\u202e  Lovelace\n" + "x" * 500
    stand.fake.profile = FakeProfile(name=long_name, global_name=long_name)

    name = sign_in(stand).name

    assert name.startswith("Ada Lovelace x")
    assert len(name) == NAME_MAX
    assert all(c.isprintable() for c in name)


def test_given_a_google_profile_without_a_name_when_finished_then_the_name_is_empty(
    google: Stand,
) -> None:
    google.fake.profile = FakeProfile(name="")

    assert sign_in(google).name == ""


# -- failures ---------------------------------------------------------------------------


def test_given_a_wrong_verifier_when_finished_then_the_provider_refuses_and_oauth_failed(
    stand: Stand,
) -> None:
    error = failed_finish(stand, verifier="W" * 64)

    assert "invalid_grant" in str(error)
    assert [e.outcome for e in stand.fake.exchanges] == ["invalid_grant"]


def test_given_a_code_already_used_when_finished_again_then_oauth_failed(stand: Stand) -> None:
    provider = stand.provider()
    start, code = authorized(stand, provider)
    asyncio.run(provider.finish(code, start.code_verifier, stand.redirect_uri))

    with pytest.raises(OAuthFailed, match="invalid_grant") as caught:
        asyncio.run(provider.finish(code, start.code_verifier, stand.redirect_uri))

    for secret in stand.secrets():
        assert secret not in str(caught.value)
    assert [e.outcome for e in stand.fake.exchanges] == ["ok", "invalid_grant"]


def test_given_another_redirect_uri_at_the_exchange_when_finished_then_oauth_failed(
    stand: Stand,
) -> None:
    error = failed_finish(stand, redirect_uri="http://127.0.0.1:8080/elsewhere")

    assert "invalid_grant" in str(error)


def test_given_a_wrong_client_secret_when_finished_then_oauth_failed_without_either_secret(
    stand: Stand,
) -> None:
    wrong = "WRONG-SECRET-0123456789"
    provider = stand.provider(**{f"{stand.shape.upper()}_CLIENT_SECRET": wrong})

    error = failed_finish(stand, provider)

    assert "invalid_client" in str(error) and "401" in str(error)
    assert wrong not in str(error)


@pytest.mark.parametrize(
    ("where", "fault", "reason"),
    [
        ("token", "500", "HTTP 500"),
        ("token", "garbage", "not a JSON object"),
        ("token", "list", "not a JSON object"),
        ("token", "no-token", "no access token"),
        ("userinfo", "500", "HTTP 500"),
        ("userinfo", "garbage", "not JSON"),
        ("userinfo", "list", "not a JSON object"),
    ],
)
def test_given_a_provider_answering_badly_when_finished_then_oauth_failed_with_a_short_reason(
    stand: Stand, where: str, fault: str, reason: str
) -> None:
    setattr(stand.fake, f"{where}_fault", fault)

    error = failed_finish(stand)

    assert reason in str(error)


def test_given_a_profile_without_email_when_finished_then_oauth_failed(stand: Stand) -> None:
    stand.fake.profile = FakeProfile(email=None)

    error = failed_finish(stand)

    assert "no email" in str(error)


@pytest.mark.parametrize("provider_id", ["", "   ", "9" * 256])
def test_given_a_profile_without_a_usable_user_id_when_finished_then_oauth_failed(
    stand: Stand, provider_id: str
) -> None:
    stand.fake.profile = FakeProfile(provider_id=provider_id)

    error = failed_finish(stand)

    assert "user id" in str(error)


@pytest.mark.parametrize("email", ["   ", "not-an-email", "ada@localhost", "a b@example.com"])
def test_given_an_unusable_email_when_finished_then_oauth_failed(stand: Stand, email: str) -> None:
    stand.fake.profile = FakeProfile(email=email)

    failed_finish(stand)


def test_given_a_provider_that_does_not_answer_when_finished_then_oauth_failed(
    stand: Stand,
) -> None:
    nowhere = stand.provider(
        **{f"{stand.shape.upper()}_OAUTH_BASE": f"http://127.0.0.1:{free_port()}"}
    )

    with pytest.raises(OAuthFailed, match="could not reach the provider") as caught:
        asyncio.run(nowhere.finish("some-code", "v" * 64, stand.redirect_uri))

    assert stand.fake.client_secret not in "".join(traceback.format_exception(caught.value))


@pytest.mark.parametrize("where", ["token", "userinfo"])
def test_given_a_slow_provider_when_finished_then_oauth_failed_within_the_timeout(
    stand: Stand, where: str
) -> None:
    setattr(stand.fake, f"{where}_fault", "slow")
    provider = stand.provider(DYNOYARD_OAUTH_TIMEOUT_SECONDS="0.5")

    began = time.monotonic()
    error = failed_finish(stand, provider)

    assert time.monotonic() - began < 2.0
    assert "ReadTimeout" in str(error) or "timed out" in str(error)


# -- one client, reused -----------------------------------------------------------------


def test_given_one_event_loop_when_two_users_sign_in_then_one_connection_serves_every_call(
    stand: Stand,
) -> None:
    provider = stand.provider()
    first, first_code = authorized(stand, provider)
    second, second_code = authorized(stand, provider)

    async def both() -> list[OAuthProfile]:
        return [
            await provider.finish(first_code, first.code_verifier, stand.redirect_uri),
            await provider.finish(second_code, second.code_verifier, stand.redirect_uri),
        ]

    assert len(asyncio.run(both())) == 2
    ports = {e.client_port for e in stand.fake.exchanges} | set(stand.fake.userinfo_ports)
    assert len(ports) == 1, ports


def test_given_two_event_loops_when_users_sign_in_then_both_succeed(stand: Stand) -> None:
    provider = stand.provider()

    assert sign_in(stand, provider).email == sign_in(stand, provider).email


# -- which providers are offered --------------------------------------------------------


def test_given_no_credentials_when_providers_are_listed_then_none_is_offered() -> None:
    assert oauth_providers(OAuthSettings()) == {}


@pytest.mark.parametrize(
    "env",
    [
        {"GOOGLE_CLIENT_ID": "id.apps.googleusercontent.com"},
        {"GOOGLE_CLIENT_SECRET": "GOCSPX-secret"},
        {"GOOGLE_CLIENT_ID": "id", "GOOGLE_CLIENT_SECRET": "   "},
        {"GOOGLE_CLIENT_ID": " ", "GOOGLE_CLIENT_SECRET": "GOCSPX-secret"},
        {"DISCORD_CLIENT_ID": "1234", "GOOGLE_CLIENT_SECRET": "GOCSPX-secret"},
    ],
)
def test_given_half_a_client_when_providers_are_listed_then_it_is_not_offered(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    assert oauth_providers(OAuthSettings()) == {}


def test_given_both_clients_in_the_environment_when_listed_then_both_use_the_real_endpoints(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GOOGLE_CLIENT_ID", "g-id")
    monkeypatch.setenv("GOOGLE_CLIENT_SECRET", "g-SECRET")
    monkeypatch.setenv("DISCORD_CLIENT_ID", "d-id")
    monkeypatch.setenv("DISCORD_CLIENT_SECRET", "d-SECRET")

    providers = oauth_providers(OAuthSettings())

    assert sorted(providers) == ["discord", "google"]
    for name, endpoints in (("google", GOOGLE), ("discord", DISCORD)):
        provider = providers[name]
        assert isinstance(provider, AuthlibProvider) and provider.name == name
        assert (provider.token_url, provider.userinfo_url) == (
            endpoints.token_url,
            endpoints.userinfo_url,
        )
        assert provider.start("https://dynoyard.example/cb").url.startswith(
            endpoints.authorize_url + "?"
        )
        assert "SECRET" not in repr(provider)
    assert GOOGLE.authorize_url == "https://accounts.google.com/o/oauth2/v2/auth"
    assert DISCORD.userinfo_url == "https://discord.com/api/users/@me"


def test_given_only_discord_when_listed_then_only_discord_is_offered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DISCORD_CLIENT_ID", "d-id")
    monkeypatch.setenv("DISCORD_CLIENT_SECRET", "d-SECRET")

    assert list(oauth_providers(OAuthSettings())) == ["discord"]


@pytest.mark.parametrize(
    "base", ["http://oauth.example.com", "ftp://127.0.0.1/x", "http://127.0.0.1/x?y=1", "nope"]
)
def test_given_a_base_url_in_the_clear_off_loopback_when_read_then_it_is_refused(
    monkeypatch: pytest.MonkeyPatch, base: str
) -> None:
    monkeypatch.setenv("GOOGLE_OAUTH_BASE", base)

    with pytest.raises(ValidationError, match="GOOGLE_OAUTH_BASE"):
        OAuthSettings()


def test_given_base_urls_in_the_environment_when_a_user_signs_in_then_the_stand_in_answers(
    monkeypatch: pytest.MonkeyPatch, stand: Stand
) -> None:
    prefix = stand.shape.upper()
    monkeypatch.setenv(f"{prefix}_CLIENT_ID", stand.fake.client_id)
    monkeypatch.setenv(f"{prefix}_CLIENT_SECRET", stand.fake.client_secret)
    monkeypatch.setenv(f"{prefix}_OAUTH_BASE", stand.base + "/")

    providers = oauth_providers(OAuthSettings())

    assert list(providers) == [stand.shape]
    assert sign_in(stand, providers[stand.shape]).email == "ada.lovelace@example.com"


# -- on Lambda: Authlib on plain httpx --------------------------------------------------

HTTPX_ONLY = """
import asyncio, json, sys, warnings
sys.modules["httpx2"] = None  # as in the Lambda layer, where httpx2 is not installed
warnings.simplefilter("ignore")
from urllib.parse import parse_qs, urlsplit
import httpx
from authlib.integrations.httpx_client import AsyncOAuth2Client
from dynoyard.adapters.oauth import oauth_providers
from dynoyard.adapters.oauth_settings import OAuthSettings
from dynoyard.domain.oauth import OAuthFailed

redirect_uri, unreachable = sys.argv[1], sys.argv[2]
provider = oauth_providers(OAuthSettings())["google"]
out = {"client": [c.__module__ for c in AsyncOAuth2Client.__mro__]}
start = provider.start(redirect_uri)
location = httpx.get(start.url, follow_redirects=False).headers["location"]
code = parse_qs(urlsplit(location).query)["code"][0]
out["profile"] = asyncio.run(provider.finish(code, start.code_verifier, redirect_uri)).email
for label, verifier, base in (("wrong", "W" * 64, None), ("down", "v" * 64, unreachable)):
    p = oauth_providers(OAuthSettings(GOOGLE_OAUTH_BASE=base))["google"] if base else provider
    start = p.start(redirect_uri)
    try:
        asyncio.run(p.finish(code, verifier, redirect_uri))
    except OAuthFailed as error:
        out[label] = str(error)
print(json.dumps(out))
"""


def test_given_only_httpx_as_on_lambda_when_a_user_signs_in_then_it_works_and_fails_cleanly(
    google: Stand,
) -> None:
    env = {
        **os.environ,
        "GOOGLE_CLIENT_ID": google.fake.client_id,
        "GOOGLE_CLIENT_SECRET": google.fake.client_secret,
        "GOOGLE_OAUTH_BASE": google.base,
    }
    unreachable = f"http://127.0.0.1:{free_port()}"

    run = subprocess.run(
        [sys.executable, "-c", HTTPX_ONLY, google.redirect_uri, unreachable],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert "httpx2" not in " ".join(out["client"]) and "httpx._client" in out["client"]
    assert out["profile"] == "ada.lovelace@example.com"
    assert "invalid_grant" in out["wrong"]
    assert "could not reach the provider (ConnectError)" in out["down"]
    assert google.fake.client_secret not in run.stdout + run.stderr
