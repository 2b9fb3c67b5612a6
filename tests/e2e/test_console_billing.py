"""Top-ups through the console, end to end over real HTTP: the console's checkout route,
the Stripe stand-in's hosted page, the signed event it delivers to the served webhook app,
the ledger in DynamoDB Local, and the transactions route. Also: hostile amounts, roles,
other organizations, CSRF, the browser's return granting nothing, an async payment granting
only once it succeeds, one Stripe customer per organization, and Stripe down (503)."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from email import policy
from email.parser import BytesParser
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx
import pytest

from dynoyard.billing.settings import WebhookSettings
from dynoyard.billing.webhook import create_webhook_app
from dynoyard.local.stripe_standin import LABEL, StandIn, create_app
from tests.conftest import Tables, ThreadedServer, free_port
from tests.e2e.test_console_auth import Console, serve_console
from tests.e2e.test_console_keys import Person, error_code, person, store_call
from tests.e2e.test_make_dev import dev_env, run_dev, stop

SECRET_KEY = "sk_test_console_billing"
WEBHOOK_SECRET = "whsec_console_billing_test"


@dataclass
class Stripe:
    base: str
    state: StandIn
    webhook_url: str

    def hook(self, path: str, **body: Any) -> dict[str, Any]:
        answer = httpx.post(f"{self.base}/_standin/{path}", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def delivered(self, kind: str, object_id: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.state.events.values()
            if e["type"] == kind and e["data"]["object"]["id"] == object_id
        ]


@pytest.fixture(scope="module")
def stripe(tables: Tables) -> Iterator[Stripe]:
    app = create_app(None, WEBHOOK_SECRET, SECRET_KEY)
    with ThreadedServer(app) as standin:
        base = f"http://127.0.0.1:{standin.port}"
        webhook = create_webhook_app(
            WebhookSettings(
                stripe_webhook_secret=WEBHOOK_SECRET,
                stripe_secret_key=SECRET_KEY,
                stripe_api_base=base,
                accounts_table=tables.accounts,
                idempotency_table=tables.names["IDEMPOTENCY_TABLE"],
                dynamodb_endpoint=tables.env["AWS_ENDPOINT_URL_DYNAMODB"],
            )
        )
        with ThreadedServer(webhook) as hooks:
            url = f"http://127.0.0.1:{hooks.port}/webhooks/stripe"
            app.state.standin.webhook_url = url
            yield Stripe(base, app.state.standin, url)


@pytest.fixture(scope="module")
def console(tables: Tables, stripe: Stripe) -> Iterator[Console]:
    yield from serve_console(
        tables,
        stripe_secret_key=SECRET_KEY,
        stripe_api_base=stripe.base,
        public_url="http://127.0.0.1:8080",
    )


def checkout(who: Person, amount: Any, org_id: str | None = None, **kw: Any) -> httpx.Response:
    body = {"amount_usd": amount} if amount is not ... else {}
    return who.call("POST", f"/api/orgs/{org_id or who.org_id}/billing/checkout", json=body, **kw)


def ledger(who: Person, org_id: str | None = None, query: str = "") -> dict[str, Any]:
    answer = who.call("GET", f"/api/orgs/{org_id or who.org_id}/billing/transactions{query}")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def balance(who: Person) -> Decimal:
    return Decimal(ledger(who)["balance_usd"])


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def session_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def test_a_top_up_end_to_end_credits_exactly_the_amount_with_the_card(
    console: Console, stripe: Stripe, tables: Tables
) -> None:
    owner = person(console)
    before = balance(owner)
    answer = checkout(owner, "25.50")
    assert answer.status_code == 201, answer.text
    (url,) = answer.json().values()
    assert url.startswith(f"{stripe.base}/pay/cs_test_")
    session_id = session_of(url)
    session = stripe.state.sessions[session_id]
    assert session["client_reference_id"] == owner.org_id
    assert session["metadata"] == {"org_id": owner.org_id} and session["amount_total"] == 2550
    assert session["success_url"].startswith("http://127.0.0.1:8080/console/billing")
    assert balance(owner) == before  # starting a checkout grants nothing

    page = httpx.get(url)
    assert page.status_code == 200 and LABEL in page.text and "Pay 25.50 USD" in page.text
    paid = httpx.post(url, data={"card": "mastercard", "choice": "pay"})
    assert paid.status_code == 303 and paid.headers["location"] == session["success_url"]
    (event,) = stripe.delivered("checkout.session.completed", session_id)
    assert [d.status for d in stripe.state.deliveries[event["id"]]] == [200]

    shown = ledger(owner)
    assert Decimal(shown["balance_usd"]) - before == Decimal("25.50")
    (topup,) = [t for t in shown["transactions"] if t["kind"] == "topup"]
    assert topup["amount_usd"] == "25.500000" and topup["currency"] == "usd"
    assert (topup["card_brand"], topup["card_last4"]) == ("mastercard", "4444")
    intent = stripe.state.sessions[session_id]["payment_intent"]
    assert topup["stripe"]["checkout_session"] == session_id
    assert topup["stripe"]["payment_intent"] == intent
    assert topup["stripe"]["charge"] == stripe.state.intents[intent]["latest_charge"]
    assert topup["stripe"]["event"] == event["id"]

    audit = owner.call("GET", f"/api/orgs/{owner.org_id}/audit").json()["entries"]
    (created,) = [e for e in audit if e["action"] == "checkout_created"]
    assert created["details"] == {"amount_usd": "25.500000", "save_card": False}
    assert created["actor"] == owner.user_id

    # A second top-up reuses the organization's customer.
    again = session_of(checkout(owner, "5").json()["url"])
    assert stripe.state.sessions[again]["customer"] == session["customer"]
    org = tables.client.get_item(
        TableName=tables.accounts, Key={"pk": {"S": f"ORG#{owner.org_id}"}, "sk": {"S": "META"}}
    )["Item"]
    assert org["stripe_customer_id"] == {"S": session["customer"]}


def test_the_browsers_return_grants_nothing_only_the_signed_event_does(
    console: Console, stripe: Stripe
) -> None:
    owner = person(console)
    before = balance(owner)
    url = checkout(owner, "12.34").json()["url"]
    session_id = session_of(url)
    stripe.state.webhook_url = f"http://127.0.0.1:{closed_port()}/webhooks/stripe"
    try:  # Stripe's delivery fails for now (it retries later)
        paid = httpx.post(url, data={"card": "visa", "choice": "pay"})
    finally:
        stripe.state.webhook_url = stripe.webhook_url
    assert paid.status_code == 303
    # The browser comes back to the success URL (on the console's host) and asks again.
    console.request("GET", "/console/billing?checkout=success", owner.session)
    assert balance(owner) == before
    assert checkout(owner, "12.34").status_code == 201 and balance(owner) == before

    cancelled = checkout(owner, "50").json()["url"]
    back = httpx.post(cancelled, data={"choice": "cancel"})
    assert back.status_code == 303 and back.headers["location"].endswith("?checkout=cancelled")
    assert stripe.state.sessions[session_of(cancelled)]["status"] == "open"

    (event,) = stripe.delivered("checkout.session.completed", session_id)
    for _ in range(3):  # Stripe's retry, then replays: credited once
        assert stripe.hook(f"events/{event['id']}/resend")["status"] == 200
    assert balance(owner) - before == Decimal("12.34")
    kinds = [t["kind"] for t in ledger(owner)["transactions"]]
    assert kinds.count("topup") == 1


def test_an_async_payment_grants_only_when_it_succeeds(console: Console, stripe: Stripe) -> None:
    owner = person(console)
    before = balance(owner)
    paying = session_of(checkout(owner, "40").json()["url"])
    failing = session_of(checkout(owner, "60").json()["url"])
    for session_id in (paying, failing):
        completed = stripe.hook(f"sessions/{session_id}/pay", **{"async": True})
        assert completed["status"] == "complete" and completed["payment_status"] == "unpaid"
    assert balance(owner) == before  # completed, not paid: nothing yet

    stripe.hook(f"sessions/{failing}/pay", fail=True)
    assert stripe.delivered("checkout.session.async_payment_failed", failing)
    assert balance(owner) == before

    stripe.hook(f"sessions/{paying}/pay", card="visa")
    (event,) = stripe.delivered("checkout.session.async_payment_succeeded", paying)
    assert [d.status for d in stripe.state.deliveries[event["id"]]] == [200]
    assert balance(owner) - before == Decimal(40)
    (topup,) = [t for t in ledger(owner)["transactions"] if t["kind"] == "topup"]
    assert (topup["card_brand"], topup["card_last4"]) == ("visa", "4242")


def test_concurrent_first_top_ups_make_one_customer(
    console: Console, stripe: Stripe, tables: Tables
) -> None:
    owner = person(console)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: checkout(owner, "7.77"), range(8)))
    assert [a.status_code for a in answers] == [201] * 8
    sessions = {session_of(a.json()["url"]) for a in answers}
    assert len(sessions) == 8
    customers = {stripe.state.sessions[s]["customer"] for s in sessions}
    made = [
        c for c in stripe.state.customers.values() if c["metadata"].get("org_id") == owner.org_id
    ]
    assert customers == {c["id"] for c in made} and len(made) == 1


@pytest.mark.parametrize(
    "amount",
    [
        25.5,
        25,
        True,
        None,
        ["25"],
        {"usd": "25"},
        "-5",
        "0",
        "0.00",
        "4.99",
        "10000.01",
        "99999999",
        "9" * 40,
        "25.001",
        "25.",
        ".5",
        "1e3",
        "NaN",
        "Infinity",
        " 25",
        "25 ",
        "",
        "\uff12\uff15"  # fullwidth digits,
        "0x19",
        ...,
    ],
)
def test_hostile_amounts_are_400_naming_amount_usd(
    console: Console, stripe: Stripe, amount: Any
) -> None:
    owner = person(console)
    made = len(stripe.state.sessions)
    answer = checkout(owner, amount)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "amount_usd", answer.text
    assert len(stripe.state.sessions) == made


@pytest.mark.parametrize("amount", ["5", "5.00", "10000", "10000.00", "19.9", "0019.99"])
def test_amounts_within_the_bounds_are_taken_exactly(
    console: Console, stripe: Stripe, amount: str
) -> None:
    owner = person(console)
    answer = checkout(owner, amount)
    assert answer.status_code == 201, answer.text
    cents = stripe.state.sessions[session_of(answer.json()["url"])]["amount_total"]
    assert cents == int(Decimal(amount) * 100)


def test_unknown_fields_are_400(console: Console) -> None:
    owner = person(console)
    answer = owner.call(
        "POST",
        f"/api/orgs/{owner.org_id}/billing/checkout",
        json={"amount_usd": "25", "org_id": "org_0000000000000000"},
    )
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "org_id"
    answer = owner.call(
        "POST",
        f"/api/orgs/{owner.org_id}/billing/checkout",
        content=b"{",
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 400 and error_code(answer) == "invalid_json"


def test_only_owners_and_admins_top_up_or_read_the_ledger(
    console: Console, stripe: Stripe, tables: Tables
) -> None:
    owner, admin, member = person(console), person(console), person(console)
    store_call(tables, "add_member", owner.org_id, admin.user_id, "admin")
    store_call(tables, "add_member", owner.org_id, member.user_id, "member")
    made = len(stripe.state.sessions)
    answer = checkout(member, "10", owner.org_id)
    assert answer.status_code == 403 and error_code(answer) == "insufficient_role"
    answer = member.call("GET", f"/api/orgs/{owner.org_id}/billing/transactions")
    assert answer.status_code == 403 and error_code(answer) == "insufficient_role"
    assert len(stripe.state.sessions) == made
    assert checkout(admin, "10", owner.org_id).status_code == 201
    assert ledger(admin, owner.org_id)["org_id"] == owner.org_id


def test_another_organizations_ids_are_404_and_writes_need_csrf(
    console: Console, stripe: Stripe
) -> None:
    alice, mallory = person(console), person(console)
    made = len(stripe.state.sessions)
    answer = checkout(mallory, "10", alice.org_id)
    assert answer.status_code == 404 and error_code(answer) == "org_not_found"
    answer = mallory.call("GET", f"/api/orgs/{alice.org_id}/billing/transactions")
    assert answer.status_code == 404 and error_code(answer) == "org_not_found"
    for org_id in ("org_0000000000000000", "ORG", "x" * 300):
        assert checkout(mallory, "10", org_id).status_code == 404
    answer = checkout(alice, "10", csrf=False)
    assert answer.status_code == 403 and error_code(answer) == "csrf_failed"
    answer = console.request(
        "POST", f"/api/orgs/{alice.org_id}/billing/checkout", json={"amount_usd": "10"}
    )
    assert answer.status_code == 401 and error_code(answer) == "not_signed_in"
    assert len(stripe.state.sessions) == made


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("?limit=0", "limit"),
        ("?limit=201", "limit"),
        ("?limit=-1", "limit"),
        ("?limit=abc", "limit"),
        ("?limit=1e3", "limit"),
        ("?limit=99999999999999999999999", "limit"),
        ("?before=not-a-cursor", "before"),
        ("?before=eyJzayI6ICJNRU1CRVIjeCJ9", "before"),  # {"sk": "MEMBER#x"}: not the ledger's
        ("?before=" + "a" * 600, "before"),
    ],
)
def test_hostile_history_queries_are_400(console: Console, query: str, param: str) -> None:
    owner = person(console)
    answer = owner.call("GET", f"/api/orgs/{owner.org_id}/billing/transactions{query}")
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param


def test_the_ledger_pages_newest_first(console: Console, stripe: Stripe) -> None:
    owner = person(console)
    for amount in ("5", "6", "7"):
        session_id = session_of(checkout(owner, amount).json()["url"])
        stripe.hook(f"sessions/{session_id}/pay")
    first = ledger(owner, query="?limit=2")
    assert [t["amount_usd"] for t in first["transactions"]] == ["7.000000", "6.000000"]
    rest = ledger(owner, query=f"?limit=2&before={first['next']}")
    assert [t["amount_usd"] for t in rest["transactions"]][:1] == ["5.000000"]
    assert first["balance_usd"] == rest["balance_usd"]


@pytest.mark.parametrize("case", ["down", "no key"])
def test_stripe_unavailable_is_503_in_the_consoles_shape(tables: Tables, case: str) -> None:
    settings: dict[str, Any] = {
        "down": {
            "stripe_secret_key": SECRET_KEY,
            "stripe_api_base": f"http://127.0.0.1:{closed_port()}",
        },
        "no key": {"stripe_secret_key": None, "stripe_secret_name": None},
    }[case]
    for console in serve_console(tables, **settings):
        owner = person(console)
        answer = checkout(owner, "10")
        assert answer.status_code == 503, answer.text
        assert error_code(answer) == "payments_unavailable"
        assert set(answer.json()["error"]) == {"message", "type", "code", "param"}
        audit = owner.call("GET", f"/api/orgs/{owner.org_id}/audit").json()["entries"]
        assert "checkout_created" not in {e["action"] for e in audit}


def test_make_dev_serves_a_top_up_end_to_end_through_its_stand_in(tmp_path: Path) -> None:
    port, ddb_port = free_port(), free_port()
    env = {k: v for k, v in dev_env(port, ddb_port).items() if not k.startswith("STRIPE_")}
    process, output = run_dev(tmp_path, env)
    base = f"http://127.0.0.1:{port}"
    try:
        found = re.search(
            r"Stripe stand-in \(local, not Stripe; no money moves\): (http://127\.0\.0\.1:\d+)",
            output,
        )
        assert found, output
        standin = found.group(1)
        assert standin != base
        email = "billing-dev@example.com"
        httpx.post(base + "/api/auth/email-link", json={"email": email, "accept_terms": True})
        (written,) = (tmp_path / ".local" / "outbox").glob("*.eml")
        mail = BytesParser(policy=policy.default).parsebytes(written.read_bytes())
        text = mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
        link = re.search(rf"{re.escape(base)}/api/auth/email-link/callback\?token=\S+", text)
        assert link, text
        cookie = SimpleCookie()
        cookie.load(httpx.get(link.group(0)).headers["set-cookie"])
        session = {"cookie": f"dynoyard_session={cookie['dynoyard_session'].value}"}
        me = httpx.get(base + "/api/me", headers=session).json()
        org = f"{base}/api/orgs/{me['orgs'][0]['org_id']}/billing"
        before = httpx.get(org + "/transactions", headers=session).json()["balance_usd"]

        made = httpx.post(
            org + "/checkout",
            headers={**session, "x-csrf-token": me["csrf_token"]},
            json={"amount_usd": "20"},
        )
        assert made.status_code == 201, made.text
        url = made.json()["url"]
        assert url.startswith(standin + "/pay/")
        assert "Stripe stand-in (local, not Stripe)" in httpx.get(url).text
        paid = httpx.post(url, data={"card": "visa", "choice": "pay"}, timeout=30)
        assert paid.status_code == 303
        assert paid.headers["location"] == f"{base}/console/billing?checkout=success"
        shown = httpx.get(org + "/transactions", headers=session).json()
        assert Decimal(shown["balance_usd"]) - Decimal(before) == 20
        (topup,) = shown["transactions"]
        assert (topup["kind"], topup["card_brand"], topup["card_last4"]) == (
            "topup",
            "visa",
            "4242",
        )
    finally:
        stop(process)
