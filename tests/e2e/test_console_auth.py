"""Sign-up and sign-in by emailed link, the session cookie, CSRF and sign-out, over real
HTTP (the console app under uvicorn) against DynamoDB Local."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx
import pytest

from dynoyard.console.app import create_console_app
from dynoyard.console.settings import ConsoleSettings
from dynoyard.domain.email import Email, EmailFailed
from tests.conftest import Tables, ThreadedServer

COOKIE = "dynoyard_session"


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        import time

        return time.time() + self.offset


class Mailbox:
    """The EmailSender port, keeping what was sent."""

    def __init__(self) -> None:
        self.sent: list[Email] = []
        self.failing = False

    async def send(self, message: Email) -> None:
        if self.failing:
            raise EmailFailed("provider said no")
        self.sent.append(message)

    def last_to(self, address: str) -> Email:
        return [m for m in self.sent if m.to == address][-1]

    def token_for(self, address: str) -> str:
        found = re.search(r"callback\?token=([A-Za-z0-9_-]+)", self.last_to(address).text)
        assert found, self.last_to(address).text
        return found.group(1)


@dataclass
class Console:
    base_url: str
    mailbox: Mailbox
    clock: Clock
    settings: ConsoleSettings
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.base_url, follow_redirects=False, timeout=10)

    def request(
        self, method: str, path: str, session: str | None = None, csrf: str | None = None, **kw: Any
    ) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if session is not None:
            headers["cookie"] = f"{COOKIE}={session}"
        if csrf is not None:
            headers["x-csrf-token"] = csrf
        self.http.cookies.clear()
        return self.http.request(method, path, headers=headers, **kw)

    def sign_up(self, email: str | None = None, name: str = "Ada") -> tuple[str, str]:
        """A new user's session token and email address."""
        email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
        answer = self.request(
            "POST",
            "/api/auth/email-link",
            json={"email": email, "name": name, "accept_terms": True},
        )
        assert answer.status_code == 202, answer.text
        return self.follow(email), email

    def follow(self, email: str) -> str:
        token = self.mailbox.token_for(email)
        answer = self.request("GET", f"/api/auth/email-link/callback?token={token}")
        assert answer.status_code == 303, answer.text
        return session_from(answer)

    def me(self, session: str) -> dict[str, Any]:
        answer = self.request("GET", "/api/me", session=session)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())


def session_from(response: httpx.Response) -> str:
    cookie = SimpleCookie()
    cookie.load(response.headers["set-cookie"])
    return cookie[COOKIE].value


# Every test comes from 127.0.0.1: the per-IP limits get tests of their own
# (tests/e2e/test_console_auth_limits.py).
NO_IP_LIMITS = {"links_per_ip": 100_000, "link_callbacks_per_ip": 100_000, "oauth_per_ip": 100_000}


def settings_for(tables: Tables, **changes: Any) -> ConsoleSettings:
    return ConsoleSettings(
        accounts_table=tables.names["ACCOUNTS_TABLE"],
        usage_table=tables.names["USAGE_TABLE"],
        cache_table=tables.names["CACHE_TABLE"],
        dynamodb_endpoint=tables.env["AWS_ENDPOINT_URL_DYNAMODB"],
        **{**NO_IP_LIMITS, **changes},
    )


def serve_console(tables: Tables, **changes: Any) -> Iterator[Console]:
    mailbox, clock = Mailbox(), Clock()
    settings = settings_for(tables, **changes)
    app = create_console_app(settings, email_sender=mailbox, clock=clock)
    with ThreadedServer(app) as server:
        console = Console(f"http://127.0.0.1:{server.port}", mailbox, clock, settings)
        yield console
        console.http.close()


@pytest.fixture(scope="module")
def console(tables: Tables) -> Iterator[Console]:
    yield from serve_console(tables, session_renew_seconds=300)


# -- sign-up ----------------------------------------------------------------------------


def test_sign_up_by_link_makes_a_verified_user_owning_an_org(console: Console) -> None:
    session, email = console.sign_up(name="Ada Lovelace")
    me = console.me(session)
    assert me["user"]["email"] == email and me["user"]["name"] == "Ada Lovelace"
    assert me["user"]["user_id"].startswith("usr_") and me["user"]["verified"] is True
    (org,) = me["orgs"]
    assert org["role"] == "owner" and org["org_id"].startswith("org_")
    assert org["name"] == "Ada Lovelace's organization"
    assert len(me["csrf_token"]) == 64


def test_a_sign_up_from_a_chinese_browser_is_kept_in_chinese(console: Console) -> None:
    """The browser's language at the emailed link's callback becomes the user's (their
    welcome emails follow it) and names their organization."""
    email = f"zh-{uuid.uuid4().hex[:8]}@example.com"
    chinese = {"accept-language": "zh-CN,zh;q=0.9"}
    console.request(
        "POST",
        "/api/auth/email-link",
        json={"email": email, "name": "李华", "accept_terms": True},
        headers=chinese,
    )
    token = console.mailbox.token_for(email)
    answer = console.request("GET", f"/api/auth/email-link/callback?token={token}", headers=chinese)
    assert answer.status_code == 303, answer.text
    session = SimpleCookie(answer.headers["set-cookie"])[COOKIE].value
    me = console.me(session)
    assert me["orgs"][0]["name"] == "李华的组织"
    assert me["user"]["language"] == "zh-CN"


def test_the_callback_sets_a_strict_cookie_and_redirects_to_the_console(console: Console) -> None:
    email = f"c-{uuid.uuid4().hex[:8]}@example.com"
    console.request("POST", "/api/auth/email-link", json={"email": email, "accept_terms": True})
    token = console.mailbox.token_for(email)
    answer = console.request("GET", f"/api/auth/email-link/callback?token={token}")
    assert answer.status_code == 303 and answer.headers["location"] == "/console"
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie
    assert "secure" not in cookie  # DYNOYARD_PUBLIC_URL is http://127.0.0.1...
    assert f"max-age={7 * 86400}" in cookie
    assert answer.headers["cache-control"] == "no-store"
    assert token not in session_from(answer)


def test_the_cookie_is_secure_on_a_public_https_url(tables: Tables) -> None:
    for console in serve_console(tables, public_url="https://console.example.com"):
        email = f"h-{uuid.uuid4().hex[:8]}@example.com"
        console.request("POST", "/api/auth/email-link", json={"email": email, "accept_terms": True})
        message = console.mailbox.last_to(email)
        assert "https://console.example.com/api/auth/email-link/callback?token=" in message.text
        answer = console.request(
            "GET", f"/api/auth/email-link/callback?token={console.mailbox.token_for(email)}"
        )
        assert "; secure" in answer.headers["set-cookie"].lower()


def test_a_link_works_once(console: Console) -> None:
    email = f"o-{uuid.uuid4().hex[:8]}@example.com"
    console.request("POST", "/api/auth/email-link", json={"email": email, "accept_terms": True})
    token = console.mailbox.token_for(email)
    assert console.request("GET", f"/api/auth/email-link/callback?token={token}").status_code == 303
    replay = console.request("GET", f"/api/auth/email-link/callback?token={token}")
    assert replay.status_code == 400
    assert replay.json()["error"]["code"] == "link_invalid"
    assert "set-cookie" not in replay.headers


def test_an_expired_link_is_refused(console: Console) -> None:
    email = f"e-{uuid.uuid4().hex[:8]}@example.com"
    console.request("POST", "/api/auth/email-link", json={"email": email, "accept_terms": True})
    token = console.mailbox.token_for(email)
    console.clock.offset += 15 * 60 + 1
    try:
        answer = console.request("GET", f"/api/auth/email-link/callback?token={token}")
    finally:
        console.clock.offset -= 15 * 60 + 1
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "link_invalid"


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/api/auth/email-link/callback?token=nope", "link_invalid"),
        ("/api/auth/email-link/callback?token=", "invalid_request"),
        ("/api/auth/email-link/callback", "invalid_request"),
        ("/api/auth/google/callback?code=c&state=s", "provider_not_configured"),
        ("/api/auth/discord/start", "provider_not_configured"),
    ],
)
def test_a_browser_refused_at_sign_in_goes_back_to_the_sign_in_page_with_the_reason(
    console: Console, path: str, code: str
) -> None:
    """A person's browser (Accept: text/html) is sent to /sign-in?error=<code>, which says
    why in their language; an API client keeps the JSON error."""
    page = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    answer = console.request("GET", path, headers=page)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"].startswith("/sign-in?error=")
    assert "set-cookie" not in answer.headers
    api = console.request("GET", path)
    assert api.status_code in (400, 403, 404) and "error" in api.json()
    assert api.json()["error"]["code"] == code
    assert answer.headers["location"] == f"/sign-in?error={code}"


@pytest.mark.parametrize(
    "query", ["", "?token=", "?token=nope", "?token=" + "a" * 500, "?token=%00%ff", "?x=1"]
)
def test_bad_tokens_are_400_never_500(console: Console, query: str) -> None:
    answer = console.request("GET", "/api/auth/email-link/callback" + query)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "token"


def test_sign_up_needs_the_terms_accepted_and_the_answer_never_tells(console: Console) -> None:
    new = f"n-{uuid.uuid4().hex[:8]}@example.com"
    _, known = console.sign_up()
    answers = [
        console.request("POST", "/api/auth/email-link", json={"email": address, **extra})
        for address, extra in (
            (new, {}),
            (new, {"accept_terms": False}),
            (known, {}),
            (known, {"accept_terms": True}),
        )
    ]
    assert {a.status_code for a in answers} == {202}
    assert len({a.content for a in answers}) == 1
    # The new address was told how to sign up, with no link; the known one got a link.
    assert "token=" not in console.mailbox.last_to(new).text
    assert "18" in console.mailbox.last_to(new).text
    assert "token=" in console.mailbox.last_to(known).text


def test_a_known_address_signs_in_to_the_same_user_whatever_its_case(console: Console) -> None:
    session, email = console.sign_up()
    first = console.me(session)
    console.request("POST", "/api/auth/email-link", json={"email": email.upper()})
    again = console.me(console.follow(email.upper()))
    assert again["user"]["user_id"] == first["user"]["user_id"]
    assert again["orgs"] == first["orgs"]  # no second organization


@pytest.mark.parametrize(
    "address",
    [
        "plain",
        "a@b",
        "a@@b.com",
        "a b@c.com",
        "a@b c.com",
        "<a@b.com>",
        "a@b.com\r\nBcc: x@y.com",
        "a@b.com\nBcc: x@y.com",
        ".a@b.com",
        "a..b@c.com",
        "a@-b.com",
        "a@b.c0m",
        "x" * 65 + "@b.com",
        "a@" + "b" * 250 + ".com",
        "",
    ],
)
def test_addresses_that_are_not_are_400(console: Console, address: str) -> None:
    answer = console.request(
        "POST", "/api/auth/email-link", json={"email": address, "accept_terms": True}
    )
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "email"


def test_a_name_with_control_characters_or_too_long_is_400(console: Console) -> None:
    for name in ("a\x00b", "bell\x07", "x" * 101):
        answer = console.request(
            "POST",
            "/api/auth/email-link",
            json={"email": "ok@example.com", "name": name, "accept_terms": True},
        )
        assert answer.status_code == 400 and answer.json()["error"]["param"] == "name"


def test_an_email_provider_failure_is_503_not_500(console: Console) -> None:
    console.mailbox.failing = True
    try:
        answer = console.request(
            "POST", "/api/auth/email-link", json={"email": "f@example.com", "accept_terms": True}
        )
    finally:
        console.mailbox.failing = False
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "email_unavailable"


def test_too_many_links_for_one_address_is_429_whether_or_not_it_has_an_account(
    console: Console,
) -> None:
    import time

    # 10 s into a 15-minute window, so the test never straddles two.
    console.clock.offset = 10 - time.time() % 900
    try:
        _, known = console.sign_up()  # one link sent already
        unknown = f"z-{uuid.uuid4().hex[:8]}@example.com"
        results = {
            address: [
                console.request("POST", "/api/auth/email-link", json={"email": address})
                for _ in range(6 - sent)
            ]
            for address, sent in ((known, 1), (unknown, 0))
        }
    finally:
        console.clock.offset = 0
    for address, sent in ((known, 1), (unknown, 0)):
        answers = results[address]
        assert [a.status_code for a in answers] == [202] * (5 - sent) + [429]
        limited = answers[-1]
        assert limited.json()["error"]["code"] == "too_many_links"
        assert 1 <= int(limited.headers["retry-after"]) <= 900
    mails = [m for m in console.mailbox.sent if m.to in (known, unknown)]
    assert len(mails) == 10  # none sent past the limit


# -- the session -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cookie", [None, "", "forged", "x" * 300, "\u00e9t\u00e9", "a;b", "'; DROP"]
)
def test_without_a_valid_session_every_session_route_is_401(
    console: Console, cookie: str | None
) -> None:
    headers = {"cookie": f"{COOKIE}={cookie}".encode()} if cookie is not None else {}
    for method, path in (
        ("GET", "/api/me"),
        ("PATCH", "/api/me"),
        ("POST", "/api/auth/sign-out"),
        ("POST", "/api/auth/sign-out-everywhere"),
    ):
        answer = console.request(method, path, headers=headers, json={})
        assert answer.status_code == 401, (method, path, answer.text)
        assert answer.json()["error"]["code"] == "not_signed_in"


def test_state_changing_calls_need_the_sessions_csrf_token(console: Console) -> None:
    session, _ = console.sign_up()
    other, _ = console.sign_up()
    other_csrf = console.me(other)["csrf_token"]
    for csrf in (None, "", "0" * 64, other_csrf, console.me(session)["csrf_token"][:-1]):
        for method, path in (
            ("PATCH", "/api/me"),
            ("POST", "/api/auth/sign-out"),
            ("POST", "/api/auth/sign-out-everywhere"),
        ):
            answer = console.request(method, path, session=session, csrf=csrf, json={"name": "Eve"})
            assert answer.status_code == 403, (csrf, method, path)
            assert answer.json()["error"]["code"] == "csrf_failed"
    assert console.me(session)["user"]["name"] == "Ada"  # nothing changed


def test_patch_me_corrects_the_name_and_language(console: Console) -> None:
    session, _ = console.sign_up()
    csrf = console.me(session)["csrf_token"]
    answer = console.request(
        "PATCH", "/api/me", session, csrf, json={"name": "  Grace  ", "language": "zh-CN"}
    )
    assert answer.status_code == 200, answer.text
    user = console.me(session)["user"]
    assert user["name"] == "Grace" and user["language"] == "zh-CN"
    for body, param in (
        ({"language": "xx"}, "language"),
        ({"language": 5}, "language"),
        ({"name": None, "email": "new@example.com"}, "email"),
        ({"name": ["x"]}, "name"),
    ):
        answer = console.request("PATCH", "/api/me", session, csrf, json=body)
        assert answer.status_code == 400 and answer.json()["error"]["param"] == param


def test_sign_out_ends_this_session_only(console: Console) -> None:
    _, email = console.sign_up()
    console.request("POST", "/api/auth/email-link", json={"email": email})
    one = console.follow(email)
    console.request("POST", "/api/auth/email-link", json={"email": email})
    two = console.follow(email)
    answer = console.request("POST", "/api/auth/sign-out", one, console.me(one)["csrf_token"])
    assert answer.status_code == 200
    assert (
        f"{COOKIE}=" in answer.headers["set-cookie"]
        and "max-age=0" in answer.headers["set-cookie"].lower()
    )
    assert console.request("GET", "/api/me", one).status_code == 401
    assert console.request("GET", "/api/me", two).status_code == 200


def test_sign_out_everywhere_ends_every_session_and_later_ones_work(console: Console) -> None:
    one, email = console.sign_up()
    console.request("POST", "/api/auth/email-link", json={"email": email})
    two = console.follow(email)
    answer = console.request(
        "POST", "/api/auth/sign-out-everywhere", two, console.me(two)["csrf_token"]
    )
    assert answer.status_code == 200
    assert console.request("GET", "/api/me", one).status_code == 401
    assert console.request("GET", "/api/me", two).status_code == 401
    console.request("POST", "/api/auth/email-link", json={"email": email})
    assert console.me(console.follow(email))["user"]["email"] == email


def test_sessions_expire_and_are_renewed_on_use(console: Console) -> None:
    session, _ = console.sign_up()
    day = 86400
    try:
        console.clock.offset += 6 * day  # used within its 7 days: renewed for 7 more
        answer = console.request("GET", "/api/me", session)
        assert answer.status_code == 200
        assert session_from(answer) == session  # the cookie's Max-Age starts again
        console.clock.offset += 6 * day
        assert console.request("GET", "/api/me", session).status_code == 200
        console.clock.offset += 7 * day + 1
        assert console.request("GET", "/api/me", session).status_code == 401
    finally:
        console.clock.offset = 0


def test_the_session_is_not_renewed_on_every_call(console: Console) -> None:
    session, _ = console.sign_up()
    answer = console.request("GET", "/api/me", session)
    assert "set-cookie" not in answer.headers


def test_no_secret_is_stored_in_the_clear(console: Console, tables: Tables) -> None:
    email = f"p-{uuid.uuid4().hex[:8]}@example.com"
    console.request("POST", "/api/auth/email-link", json={"email": email, "accept_terms": True})
    link = console.mailbox.token_for(email)
    dump = str(tables.scan_table(tables.accounts))
    assert link not in dump
    answer = console.request("GET", f"/api/auth/email-link/callback?token={link}")
    session = session_from(answer)
    csrf = console.me(session)["csrf_token"]
    dump = str(tables.scan_table(tables.accounts))
    for secret in (link, session, csrf):
        assert secret not in dump


def test_without_a_provider_the_link_is_written_to_the_outbox(
    tables: Tables, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("RESEND_API_KEY", "AWS_LAMBDA_FUNCTION_NAME"):
        monkeypatch.delenv(variable, raising=False)
    outbox = tmp_path / "outbox"
    app = create_console_app(settings_for(tables, outbox_dir=outbox))
    email = f"x-{uuid.uuid4().hex[:8]}@example.com"
    with ThreadedServer(app) as server, httpx.Client() as http:
        base = f"http://127.0.0.1:{server.port}"
        answer = http.post(
            base + "/api/auth/email-link",
            json={"email": email, "accept_terms": True},
            headers={"accept-language": "zh-CN,zh;q=0.9"},
        )
        assert answer.status_code == 202
        (written,) = outbox.glob("*.eml")
        message = BytesParser(policy=policy.default).parsebytes(written.read_bytes())
        assert message["To"] == email
        assert "Dynoyard" in str(message["Subject"]) and "确认" in str(message["Subject"])
        text = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
        found = re.search(r"callback\?token=([A-Za-z0-9_-]+)", text)
        assert found and "18" in text
        signed_in = http.get(f"{base}/api/auth/email-link/callback?token={found.group(1)}")
        assert signed_in.status_code == 303 and COOKIE in signed_in.headers["set-cookie"]
