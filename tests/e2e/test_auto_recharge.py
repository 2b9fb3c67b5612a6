"""Auto-recharge end to end: the owner's consent through the console, requests through a
running gateway crossing the recharge threshold, `dynoyard billing alerts` charging the
saved card off-session at the Stripe stand-in, whose signed payment_intent.succeeded event
the served webhook app credits once. Also: the monthly cap, a declined card (owners
emailed, nothing credited), and every hostile way to change the settings."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

import pytest

from dynoyard.adapters.dynamo.client import DynamoClient
from dynoyard.adapters.dynamo.store import DynamoStore
from tests.conftest import GatewayProcess, Tables
from tests.e2e.test_console_auth import Console, serve_console
from tests.e2e.test_console_billing import (
    SECRET_KEY,
    Stripe,
    checkout,
    session_of,
)
from tests.e2e.test_console_billing import (
    stripe as stripe,  # the stand-in and the served webhook app (a fixture)
)
from tests.e2e.test_console_keys import Person, error_code, person, store_call
from tests.e2e.test_low_balance_alerts import letters, run_cli, spend, text_of

PATH = "/api/orgs/{}/billing/auto-recharge"
SETTINGS = {
    "enabled": True,
    "threshold_usd": "9.99",
    "amount_usd": "5",
    "monthly_cap_usd": "10",
}


@pytest.fixture(scope="module")
def console(tables: Tables, stripe: Stripe) -> Iterator[Console]:
    yield from serve_console(
        tables,
        stripe_secret_key=SECRET_KEY,
        stripe_api_base=stripe.base,
        public_url="http://127.0.0.1:8080",
    )


@pytest.fixture
def outbox(
    tables: Tables,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    console: Console,
    stripe: Stripe,
) -> Path:
    """The CLI's environment: the test tables, its own outbox, Stripe at the stand-in."""
    for name, value in tables.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DYNOYARD_OUTBOX_DIR", str(tmp_path))
    monkeypatch.setenv("DYNOYARD_PUBLIC_URL", "https://console.example.com")
    monkeypatch.setenv("STRIPE_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("STRIPE_API_BASE", stripe.base)
    monkeypatch.delenv("DYNOYARD_STRIPE_SECRET", raising=False)
    return tmp_path


def store_of(tables: Tables, method: str, *args: Any) -> Any:
    """A DynamoStore method (the alerts' items) on the test tables."""
    import asyncio

    async def go() -> Any:
        store = DynamoStore(
            DynamoClient(tables.env["AWS_ENDPOINT_URL_DYNAMODB"], "us-east-1"),
            tables.accounts,
            tables.usage,
        )
        try:
            return await getattr(store, method)(*args)
        finally:
            await store.aclose()

    return asyncio.run(go())


def org_item(tables: Tables, org_id: str) -> dict[str, Any]:
    item = tables.client.get_item(
        TableName=tables.accounts,
        Key={"pk": {"S": f"ORG#{org_id}"}, "sk": {"S": "META"}},
        ConsistentRead=True,
    )["Item"]
    return dict(item)


def email_of(tables: Tables, who: Person) -> str:
    return str(store_call(tables, "get_user", who.user_id).email)


class Org:
    """An org with two owners, an admin and a member, topped up once through the stand-in
    with save_card (its Stripe customer made, its card kept by the webhook); `card`: another
    one put in its place."""

    def __init__(
        self, console: Console, tables: Tables, stripe: Stripe, card: str | None = None
    ) -> None:
        self.owner = person(console)
        self.org_id = self.owner.org_id
        self.owner2, self.admin, self.member = person(console), person(console), person(console)
        store_call(tables, "add_member", self.org_id, self.owner2.user_id, "owner")
        store_call(tables, "add_member", self.org_id, self.admin.user_id, "admin")
        store_call(tables, "add_member", self.org_id, self.member.user_id, "member")
        answer = self.owner.call(
            "POST",
            f"/api/orgs/{self.org_id}/billing/checkout",
            json={"amount_usd": "10", "save_card": True},
        )
        assert answer.status_code == 201, answer.text
        stripe.hook(f"sessions/{session_of(answer.json()['url'])}/pay", card="visa")
        assert org_item(tables, self.org_id)["recharge_card"] == {"S": "pm_card_visa"}
        if card is not None:
            store_of(tables, "save_recharge_card", self.org_id, card)
        self.key = tables.store.create_key(self.org_id, "recharge", frozenset(), None).secret
        self.tables = tables

    def balance(self) -> Decimal:
        return Decimal(self.tables.store.get_org(self.org_id).balance_usd)

    def put(self, who: Person | None = None, **changes: Any) -> Any:
        body = {**SETTINGS, **changes}
        return (who or self.owner).call("PUT", PATH.format(self.org_id), json=body)

    def owners(self) -> set[str]:
        return {email_of(self.tables, p) for p in (self.owner, self.owner2)}

    def state(self) -> str | None:
        value = org_item(self.tables, self.org_id).get("recharge_state")
        return str(value["S"]) if value else None

    def fall_below(self, gateway: GatewayProcess, capsys: pytest.CaptureFixture[str]) -> None:
        """The balance taken to just under 9.99 by the operator, then one request (the
        settle that notices the crossing)."""
        assert spend(gateway, self.key, 1) == [200]  # re-arms after the last credit
        below = self.balance() - Decimal("9.98")
        run_cli(
            capsys,
            "credits",
            "grant",
            "--org",
            self.org_id,
            "--usd",
            str(-below),
            "--reason",
            "test",
        )
        assert spend(gateway, self.key, 1) == [200]


def recharges(stripe: Stripe, org_id: str) -> list[dict[str, Any]]:
    return [
        i
        for i in stripe.state.intents.values()
        if (i.get("metadata") or {}).get("kind") == "auto_recharge"
        and i["metadata"].get("org_id") == org_id
    ]


def credited(tables: Tables, org_id: str) -> list[dict[str, Any]]:
    entries = tables.client.query(
        TableName=tables.accounts,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :ledger)",
        ExpressionAttributeValues={":pk": {"S": f"ORG#{org_id}"}, ":ledger": {"S": "LEDGER#"}},
        ConsistentRead=True,
    )["Items"]
    return [e for e in entries if e["kind"]["S"] == "auto_recharge"]


def test_a_recharge_is_charged_once_credited_once_and_capped_per_month(
    console: Console,
    tables: Tables,
    stripe: Stripe,
    gateway: GatewayProcess,
    outbox: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    org = Org(console, tables, stripe)
    answer = org.put()
    assert answer.status_code == 200, answer.text
    shown = answer.json()
    assert shown["enabled"] is True and shown["card_saved"] is True
    assert shown["consent_by"] == org.owner.user_id and shown["consent_at"]
    assert (shown["amount_usd"], shown["monthly_cap_usd"]) == ("5.000000", "10.000000")
    assert "pm_card_visa" not in answer.text  # the card's id is never shown

    # Above the threshold: nothing is due.
    assert spend(gateway, org.key, 2) == [200, 200]
    assert org.state() == "armed"
    assert run_cli(capsys, "billing", "alerts")["recharge"]["recharged"] == 0

    org.fall_below(gateway, capsys)
    assert org.state() == "due"
    before = org.balance()
    result = run_cli(capsys, "billing", "alerts")
    assert result["recharge"] == {"sent": 0, "recharged": 1, "failed": 0, "retry": 0}
    (intent,) = recharges(stripe, org.org_id)
    assert intent["amount"] == 500 and intent["payment_method"] == "pm_card_visa"
    assert org.balance() == before + 5  # the webhook credited it
    (event,) = stripe.delivered("payment_intent.succeeded", intent["id"])
    for _ in range(3):  # Stripe delivers it again: still once
        stripe.hook(f"events/{event['id']}/resend")
    assert org.balance() == before + 5 and len(credited(tables, org.org_id)) == 1
    assert run_cli(capsys, "billing", "alerts")["recharge"]["recharged"] == 0  # nothing due

    # The second this month fits the cap (5 + 5 = 10)...
    org.fall_below(gateway, capsys)
    assert run_cli(capsys, "billing", "alerts")["recharge"]["recharged"] == 1
    assert len(recharges(stripe, org.org_id)) == 2
    item = org_item(tables, org.org_id)
    assert Decimal(item["recharge_month_usd"]["N"]) == 10

    # ...the third would pass it: no charge, the owners (only) are told.
    org.fall_below(gateway, capsys)
    before = org.balance()
    assert org.state() == "due", (before, org_item(tables, org.org_id))
    result = run_cli(capsys, "billing", "alerts")
    assert result["recharge"] == {"sent": 0, "recharged": 0, "failed": 1, "retry": 0}
    assert len(recharges(stripe, org.org_id)) == 2 and org.balance() == before
    assert org.state() == "failed"
    sent = letters(outbox)
    assert {str(m["To"]) for m in sent} == org.owners() and len(sent) == 2
    assert all("monthly cap of $10.000000" in text_of(m) for m in sent)
    # Failed stays failed (no email per request) until credits lift the balance.
    assert spend(gateway, org.key, 2) == [200, 200]
    assert run_cli(capsys, "billing", "alerts")["recharge"]["failed"] == 0
    assert len(letters(outbox)) == 2


def test_a_declined_card_emails_the_owners_and_credits_nothing(
    console: Console,
    tables: Tables,
    stripe: Stripe,
    gateway: GatewayProcess,
    outbox: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    org = Org(console, tables, stripe, "pm_card_chargeDeclined")
    assert org.put().status_code == 200
    org.fall_below(gateway, capsys)
    before = org.balance()
    result = run_cli(capsys, "billing", "alerts")
    assert result["recharge"] == {"sent": 0, "recharged": 0, "failed": 1, "retry": 0}
    assert org.balance() == before and credited(tables, org.org_id) == []
    assert org.state() == "failed"
    assert (
        "recharge_month_usd" not in org_item(tables, org.org_id)
        or Decimal(org_item(tables, org.org_id)["recharge_month_usd"]["N"]) == 0
    )
    sent = letters(outbox)
    assert {str(m["To"]) for m in sent} == org.owners()
    assert all("declined" in text_of(m) for m in sent)
    assert run_cli(capsys, "billing", "alerts")["recharge"]["failed"] == 0  # told once


def test_only_owners_consent_and_the_route_checks_roles_csrf_and_orgs(
    console: Console, tables: Tables, stripe: Stripe
) -> None:
    org = Org(console, tables, stripe)
    stranger = person(console)
    path = PATH.format(org.org_id)
    assert org.member.call("GET", path).status_code == 403
    shown = org.admin.call("GET", path)
    assert shown.status_code == 200 and shown.json()["enabled"] is False
    assert shown.json()["card_saved"] is True

    answer = org.put(org.member)
    assert answer.status_code == 403 and error_code(answer) == "insufficient_role"
    answer = org.put(org.admin)
    assert answer.status_code == 403 and error_code(answer) == "insufficient_role"
    answer = org.owner.call("PUT", path, csrf=False, json=SETTINGS)
    assert answer.status_code == 403 and error_code(answer) == "csrf_failed"
    answer = stranger.call("PUT", path, json=SETTINGS)
    assert answer.status_code == 404 and error_code(answer) == "org_not_found"
    assert stranger.call("GET", path).status_code == 404
    answer = org.put(stranger)
    assert answer.status_code == 404
    assert console.request("PUT", path, json=SETTINGS).status_code == 401
    assert (
        "auto_recharge" not in org_item(tables, org.org_id)
        or "amount_usd" not in (org_item(tables, org.org_id)["auto_recharge"]["M"])
    )

    assert org.put().status_code == 200
    # An admin may turn it off (never on); the consent stays the owner's.
    off = org.put(org.admin, enabled=False)
    assert off.status_code == 200 and off.json()["enabled"] is False
    assert off.json()["consent_by"] == org.owner.user_id
    entries = org.owner.call("GET", f"/api/orgs/{org.org_id}/audit").json()["entries"]
    changes = [e for e in entries if e["action"] == "auto_recharge_changed"]
    assert [(e["actor"], e["details"]["enabled"]) for e in changes] == [
        (org.admin.user_id, False),
        (org.owner.user_id, True),
    ]
    assert changes[1]["details"]["amount_usd"] == "5.000000"


def test_turning_it_on_needs_a_saved_card(console: Console, tables: Tables, stripe: Stripe) -> None:
    owner = person(console)
    # A top-up without save_card keeps no card.
    answer = checkout(owner, "5")
    stripe.hook(f"sessions/{session_of(answer.json()['url'])}/pay", card="visa")
    assert tables.store.get_org(owner.org_id).balance_usd == 5
    assert "recharge_card" not in org_item(tables, owner.org_id)
    answer = owner.call("PUT", PATH.format(owner.org_id), json=SETTINGS)
    assert answer.status_code == 409 and error_code(answer) == "no_saved_card"
    off = owner.call("PUT", PATH.format(owner.org_id), json={**SETTINGS, "enabled": False})
    assert off.status_code == 200 and off.json()["card_saved"] is False


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount_usd", "4.99"),  # below the checkout's minimum
        ("amount_usd", "10000.01"),  # above its maximum
        ("amount_usd", "0"),
        ("amount_usd", "-5"),
        ("amount_usd", "5.001"),  # not whole cents
        ("amount_usd", 5),  # a JSON number
        ("amount_usd", "NaN"),
        ("amount_usd", "1e3"),
        ("amount_usd", "9" * 40),
        ("threshold_usd", "-1"),
        ("threshold_usd", "1000000.01"),
        ("threshold_usd", "Infinity"),
        ("threshold_usd", None),
        ("threshold_usd", True),
        ("monthly_cap_usd", "4"),  # below one recharge
        ("monthly_cap_usd", "100000.01"),
        ("monthly_cap_usd", ["10"]),
        ("enabled", "true"),
        ("enabled", 1),
        ("payment_method", "pm_card_visa"),  # not the caller's to set
    ],
)
def test_hostile_settings_are_400_and_change_nothing(
    console: Console, tables: Tables, stripe: Stripe, field: str, value: Any
) -> None:
    owner = person(console)
    store_of(tables, "save_recharge_card", owner.org_id, "pm_card_visa")
    answer = owner.call("PUT", PATH.format(owner.org_id), json={**SETTINGS, field: value})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error"
    if field in ("amount_usd", "threshold_usd", "monthly_cap_usd") and isinstance(value, str):
        assert error["param"] == field
    assert "auto_recharge" not in org_item(tables, owner.org_id)  # nothing saved


def test_a_top_up_through_the_webhook_re_arms_the_low_balance_alert_at_once(
    console: Console,
    tables: Tables,
    stripe: Stripe,
    gateway: GatewayProcess,
    outbox: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    org = Org(console, tables, stripe)
    path = f"/api/orgs/{org.org_id}/settings"
    assert org.owner.call("PATCH", path, json={"low_balance_usd": "9.999999"}).status_code == 200
    assert spend(gateway, org.key, 2) == [200, 200]
    assert run_cli(capsys, "billing", "alerts")["low_balance"]["sent"] == 1
    assert org_item(tables, org.org_id)["low_balance_state"] == {"S": "sent"}

    answer = checkout(org.owner, "5")
    stripe.hook(f"sessions/{session_of(answer.json()['url'])}/pay", card="visa")
    # No request in between: the credit itself re-armed it.
    assert org_item(tables, org.org_id)["low_balance_state"] == {"S": "armed"}
    just_below = (org.balance() - Decimal("0.000001")).quantize(Decimal("0.000001"), ROUND_DOWN)
    changed = org.owner.call("PATCH", path, json={"low_balance_usd": str(just_below)})
    assert changed.status_code == 200, changed.text
    assert spend(gateway, org.key, 1) == [200]
    assert run_cli(capsys, "billing", "alerts")["low_balance"]["sent"] == 1
    managers = org.owners() | {email_of(tables, org.admin)}
    assert sorted(str(m["To"]) for m in letters(outbox)) == sorted([*managers, *managers])
