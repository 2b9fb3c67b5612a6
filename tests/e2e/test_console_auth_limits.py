"""The console's sign-in limits per client IP (link requests, email-link callbacks, OAuth
starts and callbacks) and per address, over real HTTP from distinct loopback addresses and
through Mangum with API Gateway events, against DynamoDB Local, on a fake clock; and HEAD
on the email-link callback, which never uses the link."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from dynoyard.adapters.oauth import oauth_providers
from dynoyard.adapters.oauth_settings import OAuthSettings
from dynoyard.api.lambda_entry import mangum_handler
from dynoyard.console.app import create_console_app
from dynoyard.console.auth import LINK_SENT, RATE_WINDOW_SECONDS, client_ip
from dynoyard.console.settings import ConsoleSettings
from tests.conftest import FakeContext, Tables, ThreadedServer, lambda_event, lambda_header
from tests.e2e.test_console_auth import Clock, Mailbox, settings_for

DEFAULTS = {
    name: ConsoleSettings.model_fields[name].default
    for name in ("links_per_ip", "link_callbacks_per_ip", "oauth_per_ip", "links_per_address")
}
LINK = "/api/auth/email-link"
CALLBACK = "/api/auth/email-link/callback"
# Headers a client may send to pass for someone else; none of them may move its counter.
SPOOFING_HEADERS = (
    "x-forwarded-for",
    "x-real-ip",
    "forwarded",
    "true-client-ip",
    "cf-connecting-ip",
    "x-client-ip",
)


def test_the_documented_limits_are_the_defaults() -> None:
    assert DEFAULTS == {
        "links_per_ip": 20,
        "link_callbacks_per_ip": 30,
        "oauth_per_ip": 30,
        "links_per_address": 5,
    }
    assert RATE_WINDOW_SECONDS == 900


@dataclass
class Stand:
    base_url: str
    mailbox: Mailbox
    clock: Clock
    app: Any

    def client(self, ip: str) -> httpx.Client:
        """A client whose connections come from `ip` (any 127.x.y.z is this host)."""
        transport = httpx.HTTPTransport(local_address=ip)
        return httpx.Client(base_url=self.base_url, transport=transport, timeout=10)

    def fresh_window(self) -> int:
        """Moves the clock 10 s into a 15-minute window no other test uses; its start."""
        start = (int(time.time()) // RATE_WINDOW_SECONDS + random.randrange(1_000, 10**6)) * 900
        self.clock.offset = start + 10 - time.time()
        return start

    def next_window(self, start: int) -> None:
        """Moves the clock to the start of the window after the one starting at `start`."""
        self.clock.offset = start + RATE_WINDOW_SECONDS - time.time()


@pytest.fixture(scope="module")
def stand(tables: Tables) -> Iterator[Stand]:
    mailbox, clock = Mailbox(), Clock()
    app = create_console_app(settings_for(tables, **DEFAULTS), email_sender=mailbox, clock=clock)
    app.state.oauth_providers = oauth_providers(
        OAuthSettings(GOOGLE_CLIENT_ID="limits-test", GOOGLE_CLIENT_SECRET="limits-secret")
    )
    # Untrusted clients: uvicorn believes X-Forwarded-For from 127.0.0.1 only (as from the
    # Lambda Web Adapter); every test here comes from another loopback address.
    with ThreadedServer(app) as server:
        yield Stand(f"http://127.0.0.1:{server.port}", mailbox, clock, app)


def new_ip() -> str:
    return f"127.{random.randrange(1, 255)}.{random.randrange(0, 255)}.{random.randrange(2, 255)}"


def new_address() -> str:
    return f"l-{uuid.uuid4().hex[:10]}@example.com"


def too_many(answer: httpx.Response | dict[str, Any], wait: int) -> None:
    if isinstance(answer, httpx.Response):
        status, body, retry_after = answer.status_code, answer.json(), answer.headers["retry-after"]
    else:
        status, body = answer["statusCode"], json.loads(answer["body"])
        retry_after = lambda_header(answer, "retry-after")
    assert status == 429, body
    assert body["error"]["code"] == "too_many_requests"
    assert set(body["error"]) == {"message", "type", "code", "param"}
    # The fake clock runs on from 10 s into the window: a second or two may have passed.
    assert wait - 5 <= int(retry_after) <= wait


# -- link requests per IP ------------------------------------------------------------------


def test_link_requests_past_20_from_one_ip_are_429_until_the_window_ends(stand: Stand) -> None:
    start = stand.fresh_window()
    ip, other_ip = new_ip(), new_ip()
    with stand.client(ip) as http:
        answers = [http.post(LINK, json={"email": new_address()}) for _ in range(20)]
        assert {a.status_code for a in answers} == {202}
        sent_before = len(stand.mailbox.sent)
        limited = http.post(LINK, json={"email": new_address(), "accept_terms": True})
        too_many(limited, 890)
        assert len(stand.mailbox.sent) == sent_before  # nothing sent past the limit
        # Another IP is counted apart.
        with stand.client(other_ip) as other:
            assert other.post(LINK, json={"email": new_address()}).status_code == 202
        # The next window starts afresh.
        stand.next_window(start)
        assert http.post(LINK, json={"email": new_address()}).status_code == 202


def test_the_ip_limit_answers_alike_for_known_and_unknown_addresses(stand: Stand) -> None:
    """Within the limit both get the same 202; past it both the same 429: no enumeration."""
    stand.fresh_window()
    known = new_address()
    with stand.client(new_ip()) as http:
        assert http.post(LINK, json={"email": known, "accept_terms": True}).status_code == 202
        token = stand.mailbox.token_for(known)
        assert http.get(CALLBACK, params={"token": token}).status_code == 303  # now a user
    with stand.client(new_ip()) as http:
        within = [http.post(LINK, json={"email": address}) for address in (known, new_address())]
        assert [a.status_code for a in within] == [202, 202]
        assert within[0].json() == within[1].json() == LINK_SENT
        for _ in range(18):
            http.post(LINK, json={"email": new_address()})
        past = [http.post(LINK, json={"email": address}) for address in (known, new_address())]
        for answer in past:
            too_many(answer, 890)
        assert past[0].content == past[1].content
        assert past[0].headers["retry-after"] == past[1].headers["retry-after"]


def test_the_address_limit_still_holds_across_ips(stand: Stand) -> None:
    stand.fresh_window()
    address = new_address()
    answers = []
    for _ in range(6):
        with stand.client(new_ip()) as http:
            answers.append(http.post(LINK, json={"email": address}))
    assert [a.status_code for a in answers] == [202] * 5 + [429]
    assert answers[-1].json()["error"]["code"] == "too_many_links"


def test_concurrent_link_requests_from_one_ip_never_pass_the_limit(stand: Stand) -> None:
    stand.fresh_window()
    ip = new_ip()

    def one(_: int) -> int:
        with stand.client(ip) as http:
            return http.post(LINK, json={"email": new_address()}).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(one, range(32)))
    assert statuses.count(202) == 20 and statuses.count(429) == 12


# -- email-link callbacks per IP -----------------------------------------------------------


def test_callbacks_past_30_from_one_ip_are_429_and_leave_the_link_unused(stand: Stand) -> None:
    start = stand.fresh_window()
    address = new_address()
    with stand.client(new_ip()) as http:
        http.post(LINK, json={"email": address, "accept_terms": True})
        token = stand.mailbox.token_for(address)
        guesses = [http.get(CALLBACK, params={"token": f"guess{n}"}) for n in range(30)]
        assert {g.status_code for g in guesses} == {400}  # wrong tokens count too
        limited = http.get(CALLBACK, params={"token": token})
        too_many(limited, 890)
        assert "set-cookie" not in limited.headers
        # Another IP may still use the link: the limited request did not consume it.
        with stand.client(new_ip()) as other:
            signed_in = other.get(CALLBACK, params={"token": token})
        assert (
            signed_in.status_code == 303 and "dynoyard_session=" in signed_in.headers["set-cookie"]
        )
        stand.next_window(start)
        assert http.get(CALLBACK, params={"token": "guess"}).status_code == 400  # reset


# -- OAuth per IP ----------------------------------------------------------------------------


def test_oauth_starts_and_callbacks_are_limited_per_ip_each_apart(stand: Stand) -> None:
    start = stand.fresh_window()
    with stand.client(new_ip()) as http:
        starts = [http.get("/api/auth/google/start") for _ in range(30)]
        assert {s.status_code for s in starts} == {302}
        too_many(http.get("/api/auth/google/start"), 890)
        callbacks = [
            http.get("/api/auth/google/callback", params={"code": "c", "state": "s"})
            for _ in range(30)
        ]
        assert {c.status_code for c in callbacks} == {400}  # not started here: counted anyway
        too_many(http.get("/api/auth/google/callback", params={"code": "c", "state": "s"}), 890)
        # An unconfigured provider is 404 and counts nothing.
        assert http.get("/api/auth/discord/start").status_code == 404
        with stand.client(new_ip()) as other:
            assert other.get("/api/auth/google/start").status_code == 302
        stand.next_window(start)
        assert http.get("/api/auth/google/start").status_code == 302


# -- hostile addresses and headers ----------------------------------------------------------


def test_spoofing_headers_over_http_do_not_move_the_counter(stand: Stand) -> None:
    stand.fresh_window()
    with stand.client(new_ip()) as http:
        answers = []
        for n in range(21):
            fake = f"203.0.113.{n}"
            headers = {name: fake for name in SPOOFING_HEADERS}
            headers["forwarded"] = f"for={fake}"
            answers.append(http.post(LINK, json={"email": new_address()}, headers=headers))
    assert [a.status_code for a in answers[:20]] == [202] * 20
    too_many(answers[20], 890)


@pytest.mark.parametrize(
    ("host", "counted_as"),
    [
        ("198.51.100.7", "198.51.100.7"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("::ffff:198.51.100.7", "198.51.100.7"),
        ("fe80::1%eth0", "fe80::/64"),
        ("", "unknown"),
        (None, "unknown"),
        ("not-an-ip", "unknown"),
        ("198.51.100.7, 10.0.0.1", "unknown"),
        ("x" * 10_000, "unknown"),
        ("RATE#x#y", "unknown"),
    ],
)
def test_the_client_ip_is_read_from_the_connection_and_normalized(
    host: str | None, counted_as: str
) -> None:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [(b"x-forwarded-for", b"203.0.113.99")],
        "client": None if host is None else (host, 0),
    }
    assert client_ip(Request(scope)) == counted_as


# -- through Mangum, as on AWS ---------------------------------------------------------------


@dataclass
class OnLambda:
    """The console app as functions/console/app.py wraps it (Mangum), on the fake clock."""

    handler: Any
    clock: Clock

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = self.handler(data, FakeContext())
        return answer

    def fresh_window(self) -> None:
        start = (int(time.time()) // RATE_WINDOW_SECONDS + random.randrange(1_000, 10**6)) * 900
        self.clock.offset = start + 10 - time.time()


@pytest.fixture(scope="module")
def on_lambda(tables: Tables) -> OnLambda:
    clock = Clock()
    app = create_console_app(settings_for(tables, **DEFAULTS), email_sender=Mailbox(), clock=clock)
    return OnLambda(mangum_handler(app), clock)


def link_event(source_ip: Any, forwarded_for: str | None = None) -> dict[str, Any]:
    data = lambda_event("console_email_link.json", email=new_address())
    if source_ip is ...:
        del data["requestContext"]["identity"]
    else:
        data["requestContext"]["identity"]["sourceIp"] = source_ip
    if forwarded_for is not None:
        data["headers"]["X-Forwarded-For"] = forwarded_for
        data["multiValueHeaders"]["X-Forwarded-For"] = [forwarded_for]
    return data


def test_on_api_gateway_the_source_ip_counts_not_x_forwarded_for(on_lambda: OnLambda) -> None:
    on_lambda.fresh_window()
    source = f"198.51.100.{random.randrange(1, 255)}"
    answers = [on_lambda(link_event(source, f"203.0.113.{n}, {source}")) for n in range(21)]
    assert [a["statusCode"] for a in answers[:20]] == [202] * 20, answers[0]["body"]
    too_many(answers[20], 890)
    other = on_lambda(link_event("192.0.2.33", source))  # claims `source`
    assert other["statusCode"] == 202


def test_on_api_gateway_an_ipv6_client_counts_by_its_64(on_lambda: OnLambda) -> None:
    on_lambda.fresh_window()
    prefix = f"2001:db8:{random.randrange(1, 65535):x}:1"
    answers = [on_lambda(link_event(f"{prefix}:{n:x}::1")) for n in range(21)]
    assert [a["statusCode"] for a in answers[:20]] == [202] * 20
    too_many(answers[20], 890)  # 21 addresses, one /64
    neighbour = on_lambda(link_event(f"{prefix[:-1]}2::1"))
    assert neighbour["statusCode"] == 202


@pytest.mark.parametrize("source_ip", [..., None, "", "not-an-ip", "1.2.3.4.5", "x" * 5000])
def test_on_api_gateway_a_missing_or_odd_source_ip_is_one_shared_bucket(
    on_lambda: OnLambda, source_ip: Any
) -> None:
    on_lambda.fresh_window()
    statuses = [on_lambda(link_event(source_ip, f"203.0.113.{n}"))["statusCode"] for n in range(21)]
    assert statuses == [202] * 20 + [429]


# -- HEAD on the callback ------------------------------------------------------------------


def test_head_on_the_callback_never_uses_the_link(stand: Stand) -> None:
    stand.fresh_window()
    address = new_address()
    with stand.client(new_ip()) as http:
        http.post(LINK, json={"email": address, "accept_terms": True})
        token = stand.mailbox.token_for(address)
        for _ in range(40):  # more than the callback limit: HEAD is not counted either
            checked = http.head(CALLBACK, params={"token": token})
            assert checked.status_code == 200 and checked.content == b""
            assert "set-cookie" not in checked.headers
            assert checked.headers["cache-control"] == "no-store"
        for query in ({}, {"token": ""}, {"token": "x" * 5000}, {"token": "%00"}):
            assert http.head(CALLBACK, params=query).status_code == 200
        signed_in = http.get(CALLBACK, params={"token": token})
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/console"
        assert http.get(CALLBACK, params={"token": token}).status_code == 400  # GET used it
