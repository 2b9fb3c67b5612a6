"""The Stripe webhook's Lambda handler (functions/stripe_webhook/app.py), driven through
Mangum with the real-shaped API Gateway events of events/stripe_webhook_*.json, as API
Gateway would call it, against DynamoDB Local.

A stored signature goes stale (Stripe's tolerance is 300 s): the stored one is refused, and
the test signs the stored body again, now, with the `stripe` library's own scheme and the
test secret (the same one the stored signature was made with)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import stripe

from tests.conftest import ROOT, FakeContext, Tables
from tests.conftest import lambda_event as event

# The secret the stored signatures were made with (a test secret, never a real one).
WEBHOOK_SECRET = "whsec_test_dynoyard_events"
OTHER_SECRET = "whsec_not_the_endpoint_secret"
CHECKOUT = "stripe_webhook_checkout_completed.json"
BAD_SIGNATURE = "stripe_webhook_bad_signature.json"
STORED_ORG = "org_0123456789abcdef"
TOLERANCE_SECONDS = 300


@contextlib.contextmanager
def loaded_webhook_handler(tables: Tables) -> Iterator[Any]:
    """functions/stripe_webhook/app.py's handler, imported as Lambda would, with the test
    tables and the test webhook secret in the environment; no Stripe key (the stored event
    carries its charge) and no queue (failures go to the log)."""
    patch = pytest.MonkeyPatch()
    for variable, value in {
        **tables.env,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "DynoyardTest",
    }.items():
        patch.setenv(variable, value)
    for variable in (
        "STRIPE_SECRET_KEY",
        "STRIPE_API_BASE",
        "DYNOYARD_STRIPE_SECRET",
        "WEBHOOK_DLQ_URL",
        "AWS_LAMBDA_FUNCTION_NAME",
    ):
        patch.delenv(variable, raising=False)
    name = "stripe_webhook_lambda_app"
    path = ROOT / "functions" / "stripe_webhook" / "app.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module.handler
    finally:
        patch.undo()
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def handler(tables: Tables) -> Iterator[Any]:
    with loaded_webhook_handler(tables) as loaded:
        yield loaded


def stored_signature(data: dict[str, Any]) -> str:
    return str(data["headers"]["Stripe-Signature"])


def with_signature(data: dict[str, Any], signature: str) -> dict[str, Any]:
    data["headers"]["Stripe-Signature"] = signature
    data["multiValueHeaders"]["Stripe-Signature"] = [signature]
    return data


def signed_now(data: dict[str, Any], secret: str = WEBHOOK_SECRET) -> dict[str, Any]:
    """The event with a fresh signature of its body (Stripe's scheme, the given secret)."""
    header = stripe.WebhookSignature.generate_signature_header(data["body"], secret)
    return with_signature(data, header)


def for_org(name: str, org_id: str) -> dict[str, Any]:
    """The stored event naming the test's organization, with ids of its own (so each test
    is a payment of its own); its stored signature no longer matches the body."""
    data = event(name)
    suffix = uuid.uuid4().hex[:10]
    body = data["body"].replace(STORED_ORG, org_id)
    for stored_id in ("evt_1QExample0CheckoutDone", "cs_test_a1Example0Session"):
        body = body.replace(stored_id, f"{stored_id}_{suffix}")
    body = body.replace("ch_3QExample0Charge", f"ch_3QExample0Charge_{suffix}")
    data["body"] = body
    return data


def redelivery(data: dict[str, Any]) -> dict[str, Any]:
    """The same delivery (same body) as a new API Gateway event."""
    return dict(
        data, headers=dict(data["headers"]), multiValueHeaders=dict(data["multiValueHeaders"])
    )


def body_of(data: dict[str, Any]) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(data["body"])
    return parsed


def error_code(response: dict[str, Any]) -> str:
    body = json.loads(response["body"])
    assert set(body) == {"error"} and {"message", "type", "code"} <= set(body["error"])
    return str(body["error"]["code"])


def ledger_items(tables: Tables, org_id: str) -> list[dict[str, Any]]:
    answer = tables.client.query(
        TableName=tables.accounts,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :ledger)",
        ExpressionAttributeValues={":pk": {"S": f"ORG#{org_id}"}, ":ledger": {"S": "LEDGER#"}},
        ConsistentRead=True,
    )
    items: list[dict[str, Any]] = answer["Items"]
    return items


def idempotency_records(tables: Tables) -> int:
    return len(tables.scan_table(tables.names["IDEMPOTENCY_TABLE"]))


def new_org(tables: Tables) -> str:
    org_id: str = tables.store.create_org(f"Webhook {uuid.uuid4().hex[:6]}", "ops@example.com")
    return org_id


def test_given_the_stored_event_when_delivered_as_stored_then_its_stale_signature_is_400(
    handler: Any, tables: Tables
) -> None:
    data = event(CHECKOUT)
    header = stored_signature(data)
    # The stored signature is right for the stored body and secret, only too old.
    stripe.WebhookSignature.verify_header(data["body"], header, WEBHOOK_SECRET, tolerance=None)
    timestamp = int(header.split(",")[0].removeprefix("t="))
    assert timestamp < time.time() - TOLERANCE_SECONDS
    records = idempotency_records(tables)

    response = handler(data, FakeContext())

    assert response["statusCode"] == 400, response["body"]
    assert error_code(response) == "invalid_signature"
    assert idempotency_records(tables) == records
    guard = tables.client.get_item(
        TableName=tables.accounts,
        Key={"pk": {"S": "MOVEMENT#topup:cs_test_a1Example0Session"}, "sk": {"S": "MOVEMENT"}},
    )
    assert "Item" not in guard


def test_given_the_checkout_event_signed_now_when_delivered_then_the_org_is_credited_once(
    handler: Any, tables: Tables
) -> None:
    org_id = new_org(tables)
    data = for_org(CHECKOUT, org_id)
    session = body_of(data)["data"]["object"]
    assert session["amount_total"] == 2500 and session["currency"] == "usd"

    response = handler(signed_now(data), FakeContext())

    assert response["statusCode"] == 200, response["body"]
    answer = json.loads(response["body"])
    assert answer["received"] is True
    assert answer["applied"] == [f"topup:{session['id']}"]
    assert tables.store.get_org(org_id).balance_usd == Decimal("25.00")
    (entry,) = ledger_items(tables, org_id)
    assert entry["kind"] == {"S": "topup"}
    assert Decimal(entry["amount_usd"]["N"]) == Decimal("25")
    assert entry["stripe_checkout_session"] == {"S": session["id"]}
    assert entry["stripe_event_id"] == {"S": body_of(data)["id"]}
    assert (entry["card_brand"], entry["card_last4"]) == ({"S": "visa"}, {"S": "4242"})
    # Brand and last four only: nothing else of the card, nor the customer, is kept.
    kept = tables.scan_text()
    # Field names, not values: a bare "2030" also turns up by chance in random hex ids.
    for never in ("exp_month", "exp_year", "funding", "pm_1QExample0Card", "cus_Example0Customer"):
        assert never not in kept, never

    # Stripe delivers it again (signed anew each time): answered 200, credited once.
    for _ in range(3):
        again = handler(signed_now(redelivery(data)), FakeContext())
        assert again["statusCode"] == 200, again["body"]
    assert tables.store.get_org(org_id).balance_usd == Decimal("25.00")
    assert len(ledger_items(tables, org_id)) == 1


def test_given_the_bad_signature_event_when_delivered_then_400_and_nothing_is_recorded(
    handler: Any, tables: Tables
) -> None:
    org_id = new_org(tables)
    records = idempotency_records(tables)
    stored = event(BAD_SIGNATURE)
    assert stored["body"] == event(CHECKOUT)["body"]  # only its signature differs
    for data in (
        stored,  # as stored: made with another secret, and stale
        signed_now(for_org(BAD_SIGNATURE, org_id), OTHER_SECRET),  # fresh, another secret
        with_signature(for_org(BAD_SIGNATURE, org_id), ""),  # no signature
        with_signature(for_org(BAD_SIGNATURE, org_id), "t=1,v1=00"),
    ):
        response = handler(data, FakeContext())
        assert response["statusCode"] == 400, response["body"]
        assert error_code(response) == "invalid_signature"

    # Signed right, then changed in flight: the amount no longer matches its signature.
    tampered = signed_now(for_org(CHECKOUT, org_id))
    tampered["body"] = tampered["body"].replace('"amount_total":2500', '"amount_total":250000')
    assert '"amount_total":250000' in tampered["body"]
    response = handler(tampered, FakeContext())
    assert response["statusCode"] == 400 and error_code(response) == "invalid_signature"

    assert tables.store.get_org(org_id).balance_usd == Decimal(0)
    assert ledger_items(tables, org_id) == []
    assert idempotency_records(tables) == records
