"""adapters/stripe.py against the Stripe stand-in over real HTTP: the official library's
async calls through httpx, one customer per organization whatever the concurrency, POSTs
replayed by their idempotency keys, the card's brand and last four read back, and every
failure as a clear PaymentsError."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import stripe
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from dynoyard.adapters.stripe import (
    CardDeclined,
    PaymentsRefused,
    PaymentsUnavailable,
    StripePayments,
)
from dynoyard.local.stripe_standin import StandIn, create_app
from tests.conftest import ThreadedServer

SECRET = "sk_test_adapter"
WEBHOOK_SECRET = "whsec_adapter_test"


@dataclass
class Receiver:
    """A webhook endpoint that keeps the verified events it got."""

    events: list[dict[str, Any]] = field(default_factory=list)

    async def receive(self, request: Request) -> JSONResponse:
        event = stripe.Webhook.construct_event(
            await request.body(), request.headers["stripe-signature"], WEBHOOK_SECRET, 300
        )
        self.events.append(event.to_dict())
        return JSONResponse({"received": True})


@dataclass
class Served:
    base: str
    state: StandIn
    receiver: Receiver

    def payments(self, **kw: Any) -> StripePayments:
        return StripePayments(SECRET, self.base, **kw)


@pytest.fixture(scope="module")
def standin() -> Iterator[Served]:
    receiver = Receiver()
    hooks = Starlette(routes=[Route("/webhooks/stripe", receiver.receive, methods=["POST"])])
    with ThreadedServer(hooks) as hook_server:
        app = create_app(
            f"http://127.0.0.1:{hook_server.port}/webhooks/stripe", WEBHOOK_SECRET, SECRET
        )
        with ThreadedServer(app) as server:
            yield Served(f"http://127.0.0.1:{server.port}", app.state.standin, receiver)


def checkout(payments: StripePayments, customer: str, org: str, **kw: Any) -> Any:
    return payments.create_checkout(
        customer, org, kw.pop("cents", 2500), "http://c/ok", "http://c/back", **kw
    )


def test_the_client_is_made_on_first_use_and_calls_go_through_httpx(standin: Served) -> None:
    payments = standin.payments()
    assert "client" not in vars(payments)  # nothing made by construction (nor at import)

    async def go() -> str:
        return await payments.create_customer("org_a000000000000001", None)

    customer = asyncio.run(go())
    assert customer.startswith("cus_") and standin.state.customers[customer]["metadata"] == {
        "org_id": "org_a000000000000001"
    }
    assert isinstance(payments.client, stripe.StripeClient)
    assert standin.state.http_libraries == {"httpx"}


def test_concurrent_customer_creations_for_one_org_make_one_customer(standin: Served) -> None:
    org = "org_a000000000000002"

    async def go() -> set[str]:
        payments = standin.payments()
        return set(await asyncio.gather(*(payments.create_customer(org, None) for _ in range(12))))

    (customer,) = asyncio.run(go())
    made = [c for c in standin.state.customers.values() if c["metadata"].get("org_id") == org]
    assert [c["id"] for c in made] == [customer]


def test_a_checkout_names_the_org_everywhere_and_a_retry_is_the_same_session(
    standin: Served,
) -> None:
    org = "org_a000000000000003"

    async def go() -> tuple[tuple[str, str], ...]:
        payments = standin.payments()
        customer = await payments.create_customer(org, None)
        first = await checkout(payments, customer, org, save_card=True, idempotency_key="k-1")
        again = await checkout(payments, customer, org, save_card=True, idempotency_key="k-1")
        other = await checkout(payments, customer, org, save_card=False)
        return first, again, other

    first, again, other = asyncio.run(go())
    assert first == again and other[0] != first[0]
    session = standin.state.sessions[first[0]]
    assert first[1] == f"{standin.base}/pay/{first[0]}"
    assert session["client_reference_id"] == org
    # save_card: the webhook keeps the card for auto-recharge; without it, nothing to keep.
    assert session["metadata"] == {"org_id": org, "save_card": "true"}
    assert standin.state.sessions[other[0]]["metadata"] == {"org_id": org}
    assert session["amount_total"] == 2500 and session["currency"] == "usd"
    assert session["customer"].startswith("cus_")


def test_the_card_of_a_paid_session_is_its_brand_and_last_four(standin: Served) -> None:
    org = "org_a000000000000004"
    payments = standin.payments()

    async def start() -> str:
        customer = await payments.create_customer(org, None)
        return (await checkout(payments, customer, org, save_card=False, cents=1999))[0]

    session_id = asyncio.run(start())
    paid = httpx.post(
        f"{standin.base}/_standin/sessions/{session_id}/pay", json={"card": "mastercard"}
    )
    assert paid.status_code == 200, paid.text
    intent_id = paid.json()["payment_intent"]

    async def look() -> tuple[Any, Any]:
        fresh = standin.payments()
        by_intent = await fresh.charge_of_payment_intent(intent_id)
        return by_intent, await fresh.charge(by_intent.charge_id)

    by_intent, by_charge = asyncio.run(look())
    assert by_intent == by_charge
    assert (by_charge.brand, by_charge.last4, by_charge.amount_cents) == (
        "mastercard",
        "4444",
        1999,
    )
    assert by_charge.org_id == org and by_charge.payment_intent == intent_id
    assert by_charge.currency == "usd"


def test_unknown_ids_are_refused_clearly(standin: Served) -> None:
    payments = standin.payments()

    async def go(call: Any) -> None:
        await call

    with pytest.raises(PaymentsRefused, match="No such charge"):
        asyncio.run(go(payments.charge("ch_missing")))
    with pytest.raises(PaymentsRefused, match="No such payment_intent"):
        asyncio.run(go(standin.payments().charge_of_payment_intent("pi_missing")))


def test_a_recharge_succeeds_once_per_key_and_a_declined_card_is_card_declined(
    standin: Served,
) -> None:
    org = "org_a000000000000005"

    async def go() -> tuple[str, str]:
        payments = standin.payments()
        customer = await payments.create_customer(org, None)
        one = await payments.recharge(customer, "pm_card_visa", 1000, org, "recharge-1")
        two = await payments.recharge(customer, "pm_card_visa", 1000, org, "recharge-1")
        with pytest.raises(CardDeclined) as declined:
            await payments.recharge(customer, "pm_card_chargeDeclined", 1000, org, "recharge-2")
        assert declined.value.code == "card_declined" and declined.value.payment_intent
        assert one == two
        return one, declined.value.payment_intent or ""

    succeeded, failed = asyncio.run(go())
    kinds = {
        (e["type"], e["data"]["object"]["id"])
        for e in standin.receiver.events
        if e["data"]["object"].get("metadata", {}).get("org_id") == org
    }
    assert kinds == {
        ("payment_intent.succeeded", succeeded),
        ("payment_intent.payment_failed", failed),
    }
    intent = standin.state.intents[succeeded]
    assert intent["metadata"] == {"org_id": org, "kind": "auto_recharge"}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("case", ["down", "wrong key", "no key"])
def test_stripe_unreachable_or_misconfigured_is_payments_unavailable(
    standin: Served, case: str
) -> None:
    payments = {
        "down": StripePayments(SECRET, f"http://127.0.0.1:{closed_port()}", network_retries=0),
        "wrong key": StripePayments("sk_test_wrong", standin.base),
        "no key": StripePayments(None, standin.base),
    }[case]

    async def go() -> None:
        await payments.create_customer("org_a000000000000006", None)

    with pytest.raises(PaymentsUnavailable) as raised:
        asyncio.run(go())
    assert SECRET not in str(raised.value) and "sk_test_wrong" not in str(raised.value)


def test_the_console_loads_the_stripe_library_only_on_its_first_call() -> None:
    code = "import sys, dynoyard.console.app; print('stripe' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_a_lost_answer_is_retried_with_the_same_key_and_makes_nothing_twice(
    standin: Served,
) -> None:
    org = "org_a000000000000007"

    async def go() -> tuple[str, str]:
        payments = standin.payments()
        standin.state.lose_answers = 1
        customer = await payments.create_customer(org, None)
        standin.state.lose_answers = 1
        session_id, _ = await checkout(payments, customer, org, save_card=False, cents=3100)
        return customer, session_id

    customer, session_id = asyncio.run(go())
    assert standin.state.lose_answers == 0  # both answers were lost once
    made = [c for c in standin.state.customers.values() if c["metadata"].get("org_id") == org]
    assert [c["id"] for c in made] == [customer]
    sessions = [s for s in standin.state.sessions.values() if s["client_reference_id"] == org]
    assert [s["id"] for s in sessions] == [session_id]


def test_without_retries_a_lost_answer_is_payments_unavailable(standin: Served) -> None:
    async def go() -> None:
        await standin.payments(network_retries=0).create_customer("org_a000000000000008", None)

    standin.state.lose_answers = 1
    with pytest.raises(PaymentsUnavailable):
        asyncio.run(go())
