"""The Stripe webhook end to end: real signed payloads (the `stripe` library's own scheme
and a test secret) over real HTTP to the served webhook app, on DynamoDB Local; the Stripe
stand-in (dynoyard/local/stripe_standin.py) for card look-ups and its own deliveries; a
running gateway for the refusal after a refund below zero.

Every event type, each replayed 10 times; out-of-order and concurrent deliveries; bad,
stale and missing signatures (400, nothing recorded); non-USD and unknown organizations
(500, recorded for retry, never a credit); only the card's brand and last four kept."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import boto3
import httpx
import pytest
import stripe
from moto import mock_aws

from dynoyard.adapters.dynamo.client import DynamoClient
from dynoyard.adapters.dynamo.store import DynamoStore
from dynoyard.adapters.stripe import StripePayments
from dynoyard.billing.failed_events import SqsFailedEvents
from dynoyard.billing.settings import WebhookSettings
from dynoyard.billing.webhook import create_webhook_app
from dynoyard.domain.reconcile import Reconciliation, reconcile_org
from dynoyard.local import stripe_standin
from tests.conftest import ROOT, GatewayProcess, Tables, ThreadedServer, ddb_endpoint

SECRET = f"whsec_test_{uuid.uuid4().hex}"
STRIPE_KEY = "sk_test_webhook"
CANARY = uuid.uuid4().hex[:12]
CARD_CANARIES = (f"fp{CANARY}FINGERPRINT", f"Ada {CANARY} Cardholder", f"{CANARY}@holder.test")


# -- the served webhook -----------------------------------------------------------------


@dataclass
class Failures:
    """The FailedEvents port as the tests see it."""

    recorded: list[tuple[str, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def record(self, event_id: str, event_type: str, error: str) -> None:
        with self.lock:
            self.recorded.append((event_id, event_type, error))

    def of(self, event_id: str) -> list[str]:
        return [error for (eid, _, error) in self.recorded if eid == event_id]


@dataclass
class Hook:
    url: str
    standin_url: str
    failures: Failures
    tables: Tables

    def send(
        self,
        event: dict[str, Any],
        secret: str = SECRET,
        timestamp: int | None = None,
        header: str | None = "sign",
        payload: str | None = None,
    ) -> httpx.Response:
        body = json.dumps(event)
        headers = {"content-type": "application/json"}
        if header == "sign":
            header = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp)
        if header is not None:
            headers["stripe-signature"] = header
        return httpx.post(self.url, content=payload or body, headers=headers, timeout=30)

    def standin(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        answer = httpx.post(
            f"{self.standin_url}{path}",
            json=body or {},
            headers={"authorization": f"Bearer {STRIPE_KEY}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        return dict(answer.json())


@pytest.fixture(scope="module")
def hook(tables: Tables) -> Iterator[Hook]:
    standin_app = stripe_standin.create_app(None, SECRET)
    with ThreadedServer(standin_app) as standin:
        standin_url = f"http://127.0.0.1:{standin.port}"
        failures = Failures()
        settings = WebhookSettings(
            stripe_webhook_secret=SECRET,
            stripe_secret_key=STRIPE_KEY,
            stripe_api_base=standin_url,
            accounts_table=tables.accounts,
            idempotency_table=tables.names["IDEMPOTENCY_TABLE"],
            dynamodb_endpoint=ddb_endpoint(),
            webhook_dlq_url=None,
        )
        app = create_webhook_app(settings, failed_events=failures)
        with ThreadedServer(app) as server:
            url = f"http://127.0.0.1:{server.port}/webhooks/stripe"
            standin_app.state.standin.webhook_url = url
            yield Hook(url, standin_url, failures, tables)


# -- Stripe's objects, as its events carry them --------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def event(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": new_id("evt"),
        "object": "event",
        "api_version": "2025-01-27.acacia",
        "created": int(time.time()),
        "livemode": False,
        "type": kind,
        "data": {"object": obj},
    }


def charge_obj(
    org: str | None,
    cents: int,
    charge_id: str | None = None,
    intent: str | None = None,
    refunded: int = 0,
    currency: str = "usd",
) -> dict[str, Any]:
    return {
        "id": charge_id or new_id("ch"),
        "object": "charge",
        "amount": cents,
        "amount_refunded": refunded,
        "currency": currency,
        "payment_intent": intent or new_id("pi"),
        "payment_method": new_id("pm"),
        "metadata": {"org_id": org} if org else {},
        "billing_details": {"name": CARD_CANARIES[1], "email": CARD_CANARIES[2]},
        "payment_method_details": {
            "type": "card",
            "card": {
                "brand": "mastercard",
                "last4": "4444",
                "exp_month": 11,
                "exp_year": 2091,
                "fingerprint": CARD_CANARIES[0],
                "country": "NZ",
                "funding": "credit",
            },
        },
        "refunds": {"object": "list", "data": []},
    }


def session_obj(
    org: str | None,
    cents: int,
    paid: bool = True,
    currency: str = "usd",
    charge: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Checkout Session whose payment intent comes expanded with its latest charge."""
    charge = charge or charge_obj(org, cents, currency=currency)
    session = {
        "id": new_id("cs_test"),
        "object": "checkout.session",
        "mode": "payment",
        "amount_total": cents,
        "currency": currency,
        "client_reference_id": org,
        "metadata": {"org_id": org} if org else {},
        "customer_details": {"email": CARD_CANARIES[2], "name": CARD_CANARIES[1]},
        "payment_status": "paid" if paid else "unpaid",
        "status": "complete",
        "payment_intent": {
            "id": charge["payment_intent"],
            "object": "payment_intent",
            "latest_charge": charge,
        },
    }
    return session, charge


def refunded(charge: dict[str, Any], cumulative: int) -> dict[str, Any]:
    refund = {"id": new_id("re"), "object": "refund", "amount": cumulative}
    return {**charge, "amount_refunded": cumulative, "refunds": {"data": [refund]}}


def dispute_obj(
    charge: dict[str, Any], cents: int, status: str = "needs_response"
) -> dict[str, Any]:
    return {
        "id": new_id("dp"),
        "object": "dispute",
        "amount": cents,
        "currency": charge["currency"],
        "charge": charge["id"],
        "payment_intent": charge["payment_intent"],
        "status": status,
        "reason": "fraudulent",
        "metadata": {},
    }


# -- what the tables say -------------------------------------------------------------------


def new_org(tables: Tables) -> str:
    return str(tables.store.create_org(f"Pay {uuid.uuid4().hex[:6]}", "pay@example.com"))


def balance(tables: Tables, org: str) -> Decimal:
    return Decimal(tables.store.get_org(org).balance_usd)


def ledger(tables: Tables, org: str) -> list[dict[str, Any]]:
    items = [
        item
        for item in tables.scan_table(tables.accounts)
        if item["pk"]["S"] == f"ORG#{org}" and item["sk"]["S"].startswith("LEDGER#")
    ]
    return sorted(items, key=lambda item: item["sk"]["S"])


def ledger_kinds(tables: Tables, org: str) -> list[tuple[str, Decimal]]:
    return [(i["kind"]["S"], Decimal(i["amount_usd"]["N"])) for i in ledger(tables, org)]


def reconciles(tables: Tables, org: str) -> bool:
    """`dynoyard billing reconcile`'s check: balance + holds in flight = the ledger (with
    the usage not yet rolled up), to the unit; and the ledger's entries as scanned here."""

    async def run() -> Reconciliation:
        store = DynamoStore(
            DynamoClient(ddb_endpoint(), "us-east-1"), tables.accounts, tables.usage
        )
        try:
            return await reconcile_org(store, store.billing, org)
        finally:
            await store.aclose()

    found = asyncio.run(run())
    return found.difference_usd == 0 and found.held_usd == 0


def ledger_sum_is_balance(tables: Tables, org: str) -> bool:
    entries = sum((amount for _, amount in ledger_kinds(tables, org)), Decimal(0))
    return entries == balance(tables, org)


def idempotency_count(tables: Tables) -> int:
    return len(tables.scan_table(tables.names["IDEMPOTENCY_TABLE"]))


def ten_times(hook: Hook, evt: dict[str, Any]) -> list[dict[str, Any]]:
    answers = [hook.send(evt) for _ in range(10)]
    assert [a.status_code for a in answers] == [200] * 10, answers[0].text
    return [a.json() for a in answers]


# -- every event type, each ten times ------------------------------------------------------


def test_every_event_type_delivered_ten_times_moves_the_money_once(hook: Hook) -> None:
    tables = hook.tables
    org = new_org(tables)
    session, charge = session_obj(org, 10_000)
    answers = ten_times(hook, event("checkout.session.completed", session))
    assert answers[0]["applied"] == [f"topup:{session['id']}"]
    assert all(a == answers[0] for a in answers[1:])  # Idempotency answers the first outcome
    assert balance(tables, org) == Decimal("100")

    ten_times(hook, event("charge.refunded", refunded(charge, 2_000)))
    assert balance(tables, org) == Decimal("80")

    held = dispute_obj(charge, 3_000)
    ten_times(hook, event("charge.dispute.created", held))
    assert balance(tables, org) == Decimal("50")
    ten_times(hook, event("charge.dispute.closed", {**held, "status": "won"}))
    assert balance(tables, org) == Decimal("80")

    lost = dispute_obj(charge, 1_000)
    ten_times(hook, event("charge.dispute.created", lost))
    ten_times(hook, event("charge.dispute.closed", {**lost, "status": "lost"}))
    assert balance(tables, org) == Decimal("70")

    recharge_charge = charge_obj(org, 2_500)
    intent = {
        "id": recharge_charge["payment_intent"],
        "object": "payment_intent",
        "amount": 2_500,
        "amount_received": 2_500,
        "currency": "usd",
        "metadata": {"org_id": org, "kind": "auto_recharge"},
        "latest_charge": recharge_charge,
    }
    ten_times(hook, event("payment_intent.succeeded", intent))
    assert balance(tables, org) == Decimal("95")
    # A payment intent that is not an auto-recharge (a checkout's own) moves nothing.
    other = {**intent, "id": new_id("pi"), "metadata": {"org_id": org}}
    assert ten_times(hook, event("payment_intent.succeeded", other))[0]["applied"] == []

    assert ledger_kinds(tables, org) == [
        ("topup", Decimal("100")),
        ("refund", Decimal("-20")),
        ("dispute_hold", Decimal("-30")),
        ("dispute_release", Decimal("30")),
        ("dispute_hold", Decimal("-10")),
        ("auto_recharge", Decimal("25")),
    ]
    assert len(ledger(tables, org)) == 6
    assert reconciles(tables, org) and ledger_sum_is_balance(tables, org)
    assert hook.failures.recorded == []


def test_a_handled_event_is_remembered_past_stripes_three_days_of_retries(hook: Hook) -> None:
    org = new_org(hook.tables)
    session, _ = session_obj(org, 1_000)
    evt = event("checkout.session.completed", session)
    table = hook.tables.names["IDEMPOTENCY_TABLE"]
    before = {r["id"]["S"] for r in hook.tables.scan_table(table)}
    assert hook.send(evt).status_code == 200
    records = [r for r in hook.tables.scan_table(table) if r["id"]["S"] not in before]
    assert len(records) == 1  # (the key is a hash of the event id: found as the new one)
    kept_for = int(records[0]["expiration"]["N"]) - time.time()
    assert 3 * 86_400 < kept_for <= 4 * 86_400 + 60


def test_a_session_completed_unpaid_grants_nothing_until_paid(hook: Hook) -> None:
    tables = hook.tables
    org = new_org(tables)
    session, _ = session_obj(org, 2_500, paid=False)
    answers = ten_times(hook, event("checkout.session.completed", session))
    assert answers[0]["applied"] == [] and "unpaid" in answers[0]["note"]
    assert balance(tables, org) == 0 and ledger(tables, org) == []
    failed = ten_times(hook, event("checkout.session.async_payment_failed", session))
    assert failed[0]["applied"] == [] and failed[0]["note"].startswith("no-op")
    assert balance(tables, org) == 0

    paid = {**session, "payment_status": "paid"}
    ten_times(hook, event("checkout.session.async_payment_succeeded", paid))
    assert balance(tables, org) == Decimal("25")
    # The same session's completed-paid event (another event id) is the same movement.
    again = ten_times(hook, event("checkout.session.completed", paid))
    assert again[0]["applied"] == [] and again[0]["already"] == [f"topup:{session['id']}"]
    assert balance(tables, org) == Decimal("25") and len(ledger(tables, org)) == 1


# -- order and concurrency ----------------------------------------------------------------


def test_out_of_order_refund_before_top_up_and_dispute_closed_before_created(hook: Hook) -> None:
    tables = hook.tables
    org = new_org(tables)
    session, charge = session_obj(org, 5_000)
    assert hook.send(event("charge.refunded", refunded(charge, 1_500))).status_code == 200
    assert balance(tables, org) == Decimal("-15")
    assert hook.send(event("checkout.session.completed", session)).status_code == 200
    assert balance(tables, org) == Decimal("35")

    dispute = dispute_obj(charge, 2_000)
    closed = hook.send(event("charge.dispute.closed", {**dispute, "status": "won"}))
    assert closed.json()["applied"] == [
        f"dispute_hold:{dispute['id']}",
        f"dispute_release:{dispute['id']}",
    ]
    created = hook.send(event("charge.dispute.created", dispute))
    assert created.json()["applied"] == [] and created.json()["already"]
    assert balance(tables, org) == Decimal("35")

    lost = dispute_obj(charge, 500)
    hook.send(event("charge.dispute.closed", {**lost, "status": "lost"}))
    hook.send(event("charge.dispute.created", lost))
    assert balance(tables, org) == Decimal("30")
    assert reconciles(tables, org) and ledger_sum_is_balance(tables, org)


def test_a_refund_of_an_unknown_charge_naming_no_org_fails_until_its_top_up(hook: Hook) -> None:
    tables = hook.tables
    org = new_org(tables)
    session, charge = session_obj(org, 3_000)
    anonymous = refunded({**charge, "metadata": {}}, 3_000)
    evt = event("charge.refunded", anonymous)
    first = hook.send(evt)
    assert first.status_code == 500 and first.json()["error"]["code"] == "unknown_org"
    assert hook.failures.of(evt["id"]) == ["unknown_org"]
    assert hook.send(event("checkout.session.completed", session)).status_code == 200
    retried = hook.send(evt)  # Stripe's retry: the failure left no idempotency record
    assert retried.status_code == 200 and retried.json()["applied"]
    assert balance(tables, org) == 0 and reconciles(tables, org)
    assert ledger_sum_is_balance(tables, org)


def test_concurrent_deliveries_of_one_event_make_one_movement(hook: Hook) -> None:
    tables = hook.tables
    org = new_org(tables)
    session, _ = session_obj(org, 1_234)
    body = json.dumps(event("checkout.session.completed", session))
    header = stripe.WebhookSignature.generate_signature_header(body, SECRET)
    start = threading.Barrier(16)

    def deliver(_: int) -> int:
        start.wait()
        answer = httpx.post(
            hook.url,
            content=body,
            headers={"stripe-signature": header, "content-type": "application/json"},
            timeout=30,
        )
        return answer.status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(deliver, range(16)))
    assert set(statuses) <= {200, 409} and 200 in statuses, statuses
    # Whatever got 409 (in progress) is delivered again by Stripe: it answers the outcome.
    assert hook.send(json.loads(body)).status_code == 200
    assert balance(tables, org) == Decimal("12.34")
    assert len(ledger(tables, org)) == 1
    movement = f"MOVEMENT#topup:{session['id']}"
    assert [i for i in tables.scan_table(tables.accounts) if i["pk"]["S"] == movement]


def test_concurrent_events_of_one_session_make_one_movement(hook: Hook) -> None:
    """Different events (completed-paid and async succeeded, each delivered 8 times at
    once) of one session: the ledger's guard, not Idempotency, keeps it to one top-up."""
    tables = hook.tables
    org = new_org(tables)
    session, _ = session_obj(org, 700)
    events = [event("checkout.session.completed", session)] * 8
    events += [event("checkout.session.async_payment_succeeded", session)] * 8
    with ThreadPoolExecutor(16) as pool:
        statuses = [a.status_code for a in pool.map(hook.send, events)]
    assert set(statuses) <= {200, 409}
    assert balance(tables, org) == Decimal("7") and len(ledger(tables, org)) == 1


# -- refunds ---------------------------------------------------------------------------


def test_repeated_partial_refunds_take_back_each_delta_once(hook: Hook) -> None:
    tables = hook.tables
    org = new_org(tables)
    session, charge = session_obj(org, 10_000)
    hook.send(event("checkout.session.completed", session))
    for cumulative in (1_000, 2_500, 2_500, 7_000):
        ten_times(hook, event("charge.refunded", refunded(charge, cumulative)))
    # An older cumulative arriving late is nothing new.
    stale = ten_times(hook, event("charge.refunded", refunded(charge, 2_500)))
    assert stale[0]["applied"] == [] and "no refund" in stale[0]["note"]
    assert balance(tables, org) == Decimal("30")
    ten_times(hook, event("charge.refunded", refunded(charge, 10_000)))
    assert balance(tables, org) == Decimal("0")
    refunds = [amount for kind, amount in ledger_kinds(tables, org) if kind == "refund"]
    assert sorted(refunds) == sorted(Decimal(x) for x in ("-10", "-15", "-45", "-30"))
    charge_item = next(
        i for i in tables.scan_table(tables.accounts) if i["pk"]["S"] == f"CHARGE#{charge['id']}"
    )
    assert charge_item["refunded_cents"]["N"] == "10000"
    assert charge_item["amount_cents"]["N"] == "10000"
    assert reconciles(tables, org) and ledger_sum_is_balance(tables, org)


def test_concurrent_partial_refunds_of_one_charge_add_up(hook: Hook) -> None:
    tables = hook.tables
    org = new_org(tables)
    session, charge = session_obj(org, 8_000)
    hook.send(event("checkout.session.completed", session))
    events = [event("charge.refunded", refunded(charge, c)) for c in (1_000, 2_000, 3_000, 4_000)]
    with ThreadPoolExecutor(8) as pool:
        statuses = [a.status_code for a in pool.map(hook.send, events * 2)]
    assert set(statuses) <= {200, 409}
    assert balance(tables, org) == Decimal("40") and reconciles(tables, org)


def test_a_refund_after_spending_refuses_requests_until_a_top_up(
    hook: Hook, gateway: GatewayProcess, make_account: Any
) -> None:
    tables = hook.tables
    account = make_account("0")
    org = account.org_id

    def chat() -> httpx.Response:
        return httpx.post(
            f"{gateway.base_url}/v1/chat/completions",
            json={"model": "test-chat", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {account.key}"},
            timeout=20,
        )

    session, charge = session_obj(org, 1_000)
    hook.send(event("checkout.session.completed", session))
    for _ in range(3):
        assert chat().status_code == 200
    assert reconciles(tables, org)
    spent = Decimal(10) - balance(tables, org)
    assert spent > 0
    hook.send(event("charge.refunded", refunded(charge, 1_000)))
    assert balance(tables, org) == -spent < 0
    assert reconciles(tables, org)
    refused = chat()
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "insufficient_quota"
    more, _ = session_obj(org, 500)
    hook.send(event("checkout.session.completed", more))
    assert balance(tables, org) == Decimal(5) - spent > 0
    assert chat().status_code == 200
    assert reconciles(tables, org)


# -- what is refused -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    ["wrong_secret", "stale", "future", "missing", "garbled", "tampered", "empty_v1", "not_json"],
)
def test_bad_stale_and_missing_signatures_are_400_and_record_nothing(hook: Hook, bad: str) -> None:
    tables = hook.tables
    org = new_org(tables)
    session, _ = session_obj(org, 5_000)
    evt = event("checkout.session.completed", session)
    before = idempotency_count(tables)
    now = int(time.time())
    if bad == "wrong_secret":
        answer = hook.send(evt, secret=f"whsec_other_{uuid.uuid4().hex}")
    elif bad == "stale":
        answer = hook.send(evt, timestamp=now - 301)
    elif bad == "future":
        answer = hook.send(evt, timestamp=now + 3600)
    elif bad == "missing":
        answer = hook.send(evt, header=None)
    elif bad == "garbled":
        answer = hook.send(evt, header="t=abc,v1=zz")
    elif bad == "tampered":
        signed = stripe.WebhookSignature.generate_signature_header(json.dumps(evt), SECRET)
        session["amount_total"] = 5_000_000
        answer = hook.send(evt, header=signed)
    elif bad == "empty_v1":
        answer = hook.send(evt, header=f"t={now},v1=")
    else:
        text = "{not json"
        header = stripe.WebhookSignature.generate_signature_header(text, SECRET)
        answer = hook.send(evt, header=header, payload=text)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "invalid_signature"
    assert set(answer.json()["error"]) >= {"message", "type", "code"}
    assert balance(tables, org) == 0 and ledger(tables, org) == []
    assert idempotency_count(tables) == before
    assert hook.failures.of(evt["id"]) == []


def test_a_signature_within_the_tolerance_is_accepted(hook: Hook) -> None:
    org = new_org(hook.tables)
    session, _ = session_obj(org, 600)
    answer = hook.send(
        event("checkout.session.completed", session), timestamp=int(time.time()) - 250
    )
    assert answer.status_code == 200 and balance(hook.tables, org) == Decimal("6")


@pytest.mark.parametrize("kind", ["session", "refund", "dispute", "recharge"])
def test_non_usd_events_are_recorded_failures_never_credits(hook: Hook, kind: str) -> None:
    tables = hook.tables
    org = new_org(tables)
    session, charge = session_obj(org, 5_000)
    hook.send(event("checkout.session.completed", session))
    eur_charge = {**charge, "currency": "eur"}
    evt = {
        "session": event("checkout.session.completed", session_obj(org, 5_000, currency="eur")[0]),
        "refund": event("charge.refunded", refunded(eur_charge, 1_000)),
        "dispute": event("charge.dispute.created", dispute_obj(eur_charge, 1_000)),
        "recharge": event(
            "payment_intent.succeeded",
            {
                "id": new_id("pi"),
                "amount_received": 900,
                "currency": "eur",
                "metadata": {"org_id": org, "kind": "auto_recharge"},
                "latest_charge": eur_charge,
            },
        ),
    }[kind]
    for _ in range(3):
        answer = hook.send(evt)
        assert answer.status_code == 500
        assert answer.json()["error"]["code"] == "unsupported_currency"
    assert hook.failures.of(evt["id"]) == ["unsupported_currency"] * 3
    assert balance(tables, org) == Decimal("50") and len(ledger(tables, org)) == 1


def test_an_unknown_org_is_a_recorded_failure(hook: Hook) -> None:
    tables = hook.tables
    session, _ = session_obj("org_doesnotexist", 5_000)
    evt = event("checkout.session.completed", session)
    answer = hook.send(evt)
    assert answer.status_code == 500 and answer.json()["error"]["code"] == "unknown_org"
    assert hook.failures.of(evt["id"]) == ["unknown_org"]
    nobody, _ = session_obj(None, 5_000)
    nameless = event("checkout.session.completed", nobody)
    assert hook.send(nameless).status_code == 500
    assert hook.failures.of(nameless["id"]) == ["unknown_org"]
    text = tables.scan_text()
    assert session["id"] not in text and nobody["id"] not in text


@pytest.mark.parametrize(
    "change",
    [
        {"data": None},
        {"data": {"object": "not an object"}},
        {"data": {"object": {"id": 12}}},
        {"type": None},
    ],
)
def test_malformed_verified_events_fail_without_moving_money(
    hook: Hook, change: dict[str, Any]
) -> None:
    org = new_org(hook.tables)
    session, _ = session_obj(org, 5_000)
    evt = {**event("checkout.session.completed", session), **change}
    answer = hook.send(evt)
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "malformed_event"
    assert balance(hook.tables, org) == 0


@pytest.mark.parametrize(
    "session_change",
    [
        {"amount_total": "5000"},
        {"amount_total": -5},
        {"amount_total": 10**15},
        {"amount_total": 1.5},
    ],
)
def test_hostile_amounts_in_verified_events_move_no_money(
    hook: Hook, session_change: dict[str, Any]
) -> None:
    org = new_org(hook.tables)
    session, _ = session_obj(org, 5_000)
    answer = hook.send(event("checkout.session.completed", {**session, **session_change}))
    assert answer.status_code == 500 and answer.json()["error"]["code"] == "malformed_event"
    assert balance(hook.tables, org) == 0


def test_an_event_type_billing_does_not_handle_is_acknowledged(hook: Hook) -> None:
    answer = hook.send(event("customer.created", {"id": new_id("cus")}))
    assert answer.status_code == 200 and answer.json()["applied"] == []


def test_other_methods_and_oversized_bodies_are_refused_in_the_error_shape(hook: Hook) -> None:
    got = httpx.get(hook.url, timeout=10)
    assert got.status_code == 405 and got.json()["error"]["code"] == "method_not_allowed"
    huge = "x" * (300 * 1024)
    header = stripe.WebhookSignature.generate_signature_header(huge, SECRET)
    answer = httpx.post(hook.url, content=huge, headers={"stripe-signature": header}, timeout=10)
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "payload_too_large"


# -- the card ----------------------------------------------------------------------------


def test_only_the_card_brand_and_last_four_are_kept(hook: Hook) -> None:
    tables = hook.tables
    org = new_org(tables)
    session, charge = session_obj(org, 4_200)
    hook.send(event("checkout.session.completed", session))
    hook.send(event("charge.refunded", refunded(charge, 200)))
    hook.send(event("charge.dispute.created", dispute_obj(charge, 100)))
    (topup, *_) = [i for i in ledger(tables, org) if i["kind"]["S"] == "topup"]
    assert (topup["card_brand"]["S"], topup["card_last4"]["S"]) == ("mastercard", "4444")
    assert topup["stripe_charge"]["S"] == charge["id"]
    assert topup["stripe_payment_intent"]["S"] == charge["payment_intent"]
    assert topup["stripe_checkout_session"]["S"] == session["id"]
    assert topup["currency"]["S"] == "usd" and topup["stripe_event_id"]["S"].startswith("evt_")
    text = tables.scan_text()
    for canary in CARD_CANARIES:
        assert canary not in text
    for name in ("fingerprint", "exp_month", "exp_year", "billing_details", "customer_details"):
        assert f'"{name}"' not in text


def test_the_card_is_looked_up_through_stripe_when_the_event_lacks_it(hook: Hook) -> None:
    """The stand-in's own flow: a checkout session paid on its side, its events (payment
    intent and charge as ids only) delivered by the stand-in to the served webhook."""
    tables = hook.tables
    org = new_org(tables)
    payments = StripePayments(STRIPE_KEY, hook.standin_url)

    async def checkout() -> str:
        customer = await payments.create_customer(org, None)
        session_id, _ = await payments.create_checkout(
            customer, org, 1_500, "http://127.0.0.1/ok", "http://127.0.0.1/no", False
        )
        return session_id

    session_id = asyncio.run(checkout())
    session = hook.standin(f"/_standin/sessions/{session_id}/pay", {"card": "visa"})
    assert isinstance(session["payment_intent"], str)  # not expanded: looked up
    assert balance(tables, org) == Decimal("15")
    (topup,) = ledger(tables, org)
    assert (topup["card_brand"]["S"], topup["card_last4"]["S"]) == ("visa", "4242")
    charge_id = topup["stripe_charge"]["S"]
    hook.standin(f"/_standin/charges/{charge_id}/refund", {"amount": 500})
    dispute = hook.standin(f"/_standin/charges/{charge_id}/dispute", {"amount": 300})
    hook.standin(f"/_standin/disputes/{dispute['id']}/close", {"status": "lost"})
    assert balance(tables, org) == Decimal("7") and reconciles(tables, org)
    events = httpx.get(f"{hook.standin_url}/_standin/events", timeout=10).json()
    statuses = {d["status"] for e in events["data"] for d in e.get("deliveries", [])}
    assert statuses <= {200}


# -- the dead-letter queue and the Lambda entrance -----------------------------------------


def test_the_sqs_failed_events_adapter_records_ids_never_the_payload() -> None:
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        queue = sqs.create_queue(QueueName="webhook-dlq")["QueueUrl"]
        asyncio.run(
            SqsFailedEvents(queue, client=sqs).record("evt_1", "charge.refunded", "unknown_org")
        )
        (message,) = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    body = json.loads(message["Body"])
    assert set(body) == {"event_id", "event_type", "error", "at"}
    assert (body["event_id"], body["event_type"], body["error"]) == (
        "evt_1",
        "charge.refunded",
        "unknown_org",
    )


def test_the_lambda_entrance_applies_a_signed_event(
    tables: Tables, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util
    import sys

    for name, value in tables.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", SECRET)
    monkeypatch.delenv("WEBHOOK_DLQ_URL", raising=False)
    path = ROOT / "functions" / "stripe_webhook" / "app.py"
    spec = importlib.util.spec_from_file_location("stripe_webhook_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["stripe_webhook_app"] = module
    try:
        spec.loader.exec_module(module)
        org = new_org(tables)
        session, _ = session_obj(org, 2_000)
        body = json.dumps(event("checkout.session.completed", session))
        signature = stripe.WebhookSignature.generate_signature_header(body, SECRET)
        api_event = json.loads((ROOT / "events" / "healthz.json").read_text())
        api_event.update(
            {
                "path": "/webhooks/stripe",
                "resource": "/webhooks/stripe",
                "httpMethod": "POST",
                "body": body,
                "isBase64Encoded": False,
                "headers": {"Stripe-Signature": signature, "Content-Type": "application/json"},
                "multiValueHeaders": {
                    "Stripe-Signature": [signature],
                    "Content-Type": ["application/json"],
                },
            }
        )
        from tests.conftest import FakeContext

        answer = module.handler(api_event, FakeContext())
        assert answer["statusCode"] == 200, answer
        assert balance(tables, org) == Decimal("20")
        stale = dict(api_event, body=body.replace("2000", "2001"))
        assert module.handler(stale, FakeContext())["statusCode"] == 400
        assert balance(tables, org) == Decimal("20")
    finally:
        sys.modules.pop("stripe_webhook_app", None)
