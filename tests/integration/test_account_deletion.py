"""Deleting an account (DELETE /api/me) through the console over real HTTP, against
DynamoDB Local and a running gateway: an org owned alone closes (its keys stop working at the
gateway), an org with another owner stays, a membership ends; then every table is scanned
for the person's address, name and IP. Money stays: the ledger, the usage records and the
balance are as they were. The address can sign up again, as a new user."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from dynoyard.adapters.dynamo.client import DynamoClient
from dynoyard.adapters.dynamo.store import DynamoStore
from dynoyard.domain.accounts import UnknownOrg
from dynoyard.domain.administration import OPERATOR, Actor, Administration
from dynoyard.domain.rights import ERASED, Scrubber, plan_deletion, scrub_audit_entry
from dynoyard.domain.usage import UsageRecord
from tests.conftest import GatewayProcess, Tables
from tests.e2e.test_console_auth import Console, serve_console
from tests.e2e.test_console_keys import Person, error_code, store_call


@pytest.fixture(scope="module")
def console(tables: Tables) -> Iterator[Console]:
    yield from serve_console(tables)


def with_admin(tables: Tables, use: Any) -> Any:
    """`use(administration, store)` on a DynamoStore with its audit log."""

    async def go() -> Any:
        store = DynamoStore(
            DynamoClient(tables.env["AWS_ENDPOINT_URL_DYNAMODB"], "us-east-1"),
            tables.accounts,
            tables.usage,
            cache_table=tables.names["CACHE_TABLE"],
        )
        try:
            return await use(Administration(store, audit=store.audit_log), store)
        finally:
            await store.aclose()

    return asyncio.run(go())


def audit_as(tables: Tables, org_id: str, actor: Actor, target: str) -> None:
    with_admin(
        tables,
        lambda admin, _: admin.record(
            actor, org_id, "settings_changed", target, cache_enabled=True
        ),
    )


def raw_items(tables: Tables, table: str, pk: str) -> list[dict[str, Any]]:
    answer = tables.client.query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": pk}},
        ConsistentRead=True,
    )
    return list(answer["Items"])


def chat(gateway: GatewayProcess, key: str) -> httpx.Response:
    return httpx.post(
        gateway.base_url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": "test-chat", "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )


def models(gateway: GatewayProcess, key: str) -> int:
    """The gateway's answer to a key (200 or 401), whatever the org's balance."""
    auth = {"authorization": f"Bearer {key}"}
    return httpx.get(gateway.base_url + "/v1/models", headers=auth, timeout=10).status_code


def signed_up(console: Console, email: str | None = None, name: str = "Someone") -> Person:
    return Person(console, console.sign_up(email=email, name=name)[0])


def test_a_deleted_account_leaves_no_personal_data_and_the_money_reconciles(
    console: Console, tables: Tables, gateway: GatewayProcess
) -> None:
    tag = uuid.uuid4().hex[:10]
    canary = f"Canary{tag}"  # the name: found nowhere afterwards
    email = f"Del.Me-{tag}@Example.com"  # any case of it: found nowhere afterwards
    ip = str(ipaddress.ip_address(f"2001:db8::{secrets.token_hex(2)}:{secrets.token_hex(2)}"))
    alice = signed_up(console, email, canary)
    bob, carol, dave = (signed_up(console) for _ in range(3))

    # A: Alice's own org, with Bob as a second owner (stays). D: owned by Alice alone,
    # Dave a member (closes). C: Carol's, Alice a member (Alice leaves).
    a_org, c_org = alice.org_id, carol.org_id
    store_call(tables, "add_member", a_org, bob.user_id, "owner")
    d_org = tables.store.create_org(f"{canary} Labs", email)
    store_call(tables, "add_member", d_org, alice.user_id, "owner")
    store_call(tables, "add_member", d_org, dave.user_id, "member")
    store_call(tables, "add_member", c_org, alice.user_id, "member")

    # What Alice leaves behind: identities, a second session, a pending sign-in link,
    # keys (one named after her), credits whose reason names her, usage, cached answers,
    # audit entries from her IP.
    store_call(tables, "link_identity", "google", f"g-{tag}", alice.user_id)
    store_call(tables, "link_identity", "discord", f"d-{tag}", alice.user_id)
    # An unsubscribe link sent to her, and her welcome emails still to come (since sign-up).
    store_call(tables, "put_unsubscribe_token", secrets.token_hex(32), alice.user_id, 2**31)
    console.request("POST", "/api/auth/email-link", json={"email": email})
    second_session = console.follow(email)
    console.request("POST", "/api/auth/email-link", json={"email": email, "name": canary})
    guest = f"guest-{tag}@example.com"  # invited to D, which closes: invitation dropped
    for who, org_id, address in ((bob, bob.org_id, email.upper()), (alice, d_org, guest)):
        invited = who.call("POST", f"/api/orgs/{org_id}/invitations", json={"email": address})
        assert invited.status_code == 201, invited.text
    d_key = alice.create(d_org, name=f"{canary}'s laptop").json()
    a_key = alice.create(a_org, name="shared").json()
    bobs_key = bob.create(a_org, name="bob's").json()
    with_admin(
        tables,
        lambda admin, _: admin.grant_credits(OPERATOR, d_org, Decimal(7), f"paid by {email}"),
    )
    tables.store.grant_credits(a_org, Decimal(3), f"for {canary.lower()}")
    assert chat(gateway, d_key["api_key"]).status_code == 200
    assert chat(gateway, a_key["api_key"]).status_code == 200
    tables.store.settle(
        UsageRecord(
            request_id=f"req_{uuid.uuid4().hex[:24]}",
            started_at=datetime.now(UTC) - timedelta(hours=1),
            org_id=d_org,
            key_id=d_key["key_id"],
            endpoint="chat/completions",
            model="test-chat",
            status=200,
            cost_usd=Decimal("0.01"),
            client_ip=ip,
        ),
        Decimal(0),
    )
    tables.client.put_item(
        TableName=tables.names["CACHE_TABLE"],
        Item={
            "pk": {"S": f"ORG#{d_org}"},
            "sk": {"S": secrets.token_hex(16)},
            "answer": {"B": b'{"choices": []}'},
            "expires_at": {"N": str(int(datetime.now(UTC).timestamp()) + 600)},
        },
    )
    for org_id, role in ((a_org, "owner"), (d_org, "owner"), (c_org, "member")):
        audit_as(tables, org_id, Actor(role, alice.user_id, ip=ip), target=org_id)  # type: ignore[arg-type]
    audit_as(tables, a_org, Actor("owner", bob.user_id, ip="192.0.2.10"), target=a_org)

    balances = {o: tables.store.get_org(o).balance_usd for o in (a_org, c_org, d_org)}
    ledgers = {o: raw_items(tables, tables.accounts, f"ORG#{o}") for o in (a_org, d_org)}
    d_usage = raw_items(tables, tables.usage, f"ORG#{d_org}")
    assert len(d_usage) == 2 and ip in json.dumps(d_usage)

    answer = alice.call("DELETE", "/api/me", json={"confirm_email": email.lower()})

    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "deleted": True,
        "orgs_closed": [d_org],
        "memberships_ended": sorted([a_org, c_org, d_org]),
    }
    assert "dynoyard_session=" in answer.headers["set-cookie"]
    balances_after = {o: tables.store.get_org(o).balance_usd for o in balances}
    # Every session of Alice's ends; her keys of the closed org stop working at the gateway.
    for session in (alice.session, second_session):
        assert console.request("GET", "/api/me", session).status_code == 401
    assert chat(gateway, d_key["api_key"]).status_code == 401
    # A stays with Bob (and the keys made there, which are the org's), its contact is his.
    assert chat(gateway, bobs_key["api_key"]).status_code == 200
    assert chat(gateway, a_key["api_key"]).status_code == 200
    bob_me = console.me(bob.session)
    assert a_org in {o["org_id"] for o in bob_me["orgs"]}
    members = bob.call("GET", f"/api/orgs/{a_org}/members").json()["members"]
    assert [m["user_id"] for m in members] == [bob.user_id]
    assert tables.store.get_org(a_org).email == bob_me["user"]["email"]
    assert tables.store.get_org(a_org).name == f"{ERASED}'s organization"
    # C just lost a member; D is closed for Dave too, whose account is untouched.
    for org_id in (bob.org_id, d_org):  # no invitation left to Alice's address, nor of D
        assert not [
            i
            for i in raw_items(tables, tables.accounts, f"ORG#{org_id}")
            if i["sk"]["S"].startswith("INVITE#")
        ]
    assert bob.call("GET", f"/api/orgs/{bob.org_id}/invitations").json()["invitations"] == []
    c_members = carol.call("GET", f"/api/orgs/{c_org}/members").json()["members"]
    assert [m["user_id"] for m in c_members] == [carol.user_id]
    dave_me = console.me(dave.session)
    assert [o["org_id"] for o in dave_me["orgs"]] == [dave.org_id]
    gone = dave.call("GET", f"/api/orgs/{d_org}/keys")
    assert gone.status_code == 404 and error_code(gone) == "org_not_found"
    with pytest.raises(UnknownOrg):  # a closed org gets no key again, even the operator's
        tables.store.create_key(d_org, "after")
    assert raw_items(tables, tables.names["CACHE_TABLE"], f"ORG#{d_org}") == []
    closed = raw_items(tables, tables.accounts, f"ORG#{d_org}")
    meta = next(i for i in closed if i["sk"]["S"] == "META")
    assert "closed_at" in meta and "email" not in meta

    # THE SCAN: nothing of Alice's address (any case), name or IP in any table.
    everything = tables.scan_all()
    assert {t for t in tables.names} == {
        "ACCOUNTS_TABLE",
        "USAGE_TABLE",
        "CACHE_TABLE",
        "IDEMPOTENCY_TABLE",
    }
    text = tables.scan_text().lower()
    for trace in (email.lower(), canary.lower(), ip, f"del.me-{tag}", guest):
        assert trace not in text, trace
    assert not [i for i in everything if i.get("pk", {}).get("S") == f"USER#{alice.user_id}"]
    assert not [
        i
        for i in everything
        if i.get("user_id", {}).get("S") == alice.user_id
        and not i["pk"]["S"].startswith("SESSION#")
    ]

    # The money stays: balances, ledger lines and usage records as they were.
    assert balances_after == balances  # (A's keys were used since, below)
    for org_id, before in ledgers.items():
        after = raw_items(tables, tables.accounts, f"ORG#{org_id}")
        lines = [
            (i["sk"]["S"], i["amount_usd"]["N"])
            for i in before
            if i["sk"]["S"].startswith("LEDGER#")
        ]
        assert lines and lines == [
            (i["sk"]["S"], i["amount_usd"]["N"])
            for i in after
            if i["sk"]["S"].startswith("LEDGER#")
        ]
    reasons = [i["reason"]["S"] for i in closed if i["sk"]["S"].startswith("LEDGER#")]
    assert reasons == [f"paid by {ERASED}"]
    after_usage = raw_items(tables, tables.usage, f"ORG#{d_org}")
    assert [i["sk"] for i in after_usage] == [i["sk"] for i in d_usage]
    assert [i["cost_usd"] for i in after_usage] == [i["cost_usd"] for i in d_usage]
    assert all("client_ip" not in i for i in after_usage)

    # The audit log keeps Alice's actions under her (now meaningless) id, without her IP;
    # each org says the deletion happened, with nothing personal.
    for org_id in (a_org, c_org, d_org):
        entries = with_admin(tables, lambda _, store, o=org_id: store.audit_log.entries(o))[0]
        hers = [e for e in entries if e.actor == alice.user_id]
        assert hers and all(e.ip is None for e in hers)
        (request,) = [e for e in hers if e.action == "deletion_requested"]
        expected = "organization_closed" if org_id == d_org else "membership_ended"
        assert request.details == {"what": expected} and request.target == alice.user_id
    d_entries = with_admin(tables, lambda _, store: store.audit_log.entries(d_org))[0]
    (grant,) = [e for e in d_entries if e.action == "credits_granted"]
    assert grant.details["reason"] == f"paid by {ERASED}"
    a_entries = with_admin(tables, lambda _, store: store.audit_log.entries(a_org))[0]
    assert "192.0.2.10" in {e.ip for e in a_entries if e.actor == bob.user_id}

    # The address signs up again, as someone new.
    again = signed_up(console, email.upper(), "New")
    assert again.user_id != alice.user_id and again.org_id not in (a_org, c_org, d_org)
    assert console.me(again.session)["user"]["name"] == "New"


def test_an_owner_of_an_org_with_another_owner_only_leaves_it(
    console: Console, tables: Tables, gateway: GatewayProcess
) -> None:
    alice, bob = signed_up(console), signed_up(console)
    store_call(tables, "add_member", bob.org_id, alice.user_id, "owner")
    key = bob.create(name="bob's").json()["api_key"]
    email = console.me(alice.session)["user"]["email"]
    answer = alice.call("DELETE", "/api/me", json={"confirm_email": email})
    assert answer.json()["orgs_closed"] == [alice.org_id]
    assert answer.json()["memberships_ended"] == sorted([alice.org_id, bob.org_id])
    assert [o["role"] for o in console.me(bob.session)["orgs"]] == ["owner"]
    assert models(gateway, key) == 200
    # The team's owner count followed: Bob is now the last owner, who may not leave.
    leaving = bob.call("DELETE", f"/api/orgs/{bob.org_id}/members/{bob.user_id}")
    assert leaving.status_code == 409 and error_code(leaving) == "last_owner", leaving.text


def test_a_member_who_leaves_closes_nothing_of_the_org(console: Console, tables: Tables) -> None:
    owner, member = signed_up(console), signed_up(console)
    store_call(tables, "add_member", owner.org_id, member.user_id, "admin")
    email = console.me(member.session)["user"]["email"]
    answer = member.call("DELETE", "/api/me", json={"confirm_email": email})
    assert answer.json()["orgs_closed"] == [member.org_id]
    assert owner.call("GET", f"/api/orgs/{owner.org_id}/keys").status_code == 200
    assert owner.create(name="still works").status_code == 201


def test_a_second_delete_of_the_same_session_is_401(console: Console) -> None:
    someone = signed_up(console)
    email = console.me(someone.session)["user"]["email"]
    first = someone.call("DELETE", "/api/me", json={"confirm_email": email})
    assert first.status_code == 200
    replay = someone.call("DELETE", "/api/me", json={"confirm_email": email})
    assert replay.status_code == 401 and error_code(replay) == "not_signed_in"


# -- the rules, without DynamoDB -------------------------------------------------------------


def test_an_org_closes_only_when_the_user_is_its_only_owner() -> None:
    plan = plan_deletion(
        "usr_a",
        [("org_1", "owner"), ("org_2", "owner"), ("org_3", "admin"), ("org_4", "member")],
        {
            "org_1": [("usr_a", "owner"), ("usr_b", "admin")],
            "org_2": [("usr_a", "owner"), ("usr_b", "owner")],
            "org_3": [("usr_a", "admin"), ("usr_c", "owner")],
            "org_4": [("usr_a", "member"), ("usr_c", "owner")],
        },
    )
    assert plan.close == ("org_1",)
    assert plan.leave == ("org_2", "org_3", "org_4")


def test_the_scrubber_finds_the_person_in_any_case_but_not_inside_other_words() -> None:
    scrub = Scrubber("Ada.L@Example.com", "Al")  # too short a name: left alone
    assert scrub.text("paid by ADA.L@example.COM") == f"paid by {ERASED}"
    assert scrub.text("ada.l's key") == f"{ERASED}'s key"
    assert scrub.text("Alerts for Al") == "Alerts for Al"
    scrub = Scrubber("x@example.com", "Grace Hopper")
    assert scrub.text("GRACE HOPPER's org; graceful") == f"{ERASED}'s org; graceful"
    assert Scrubber("z@example.com", "张三").text("张三的组织") == f"{ERASED}的组织"


def test_an_audit_entry_loses_the_users_ip_and_any_trace_of_them() -> None:
    scrub = Scrubber("ada@example.com", "Ada Lovelace")
    own = scrub_audit_entry("usr_a", scrub, "usr_a", "org_1", {"n": 1}, has_ip=True)
    assert own.drop_ip and own.target is None and own.details is None
    other = scrub_audit_entry(
        "usr_a", scrub, "usr_b", "ada@example.com", {"name": "Ada Lovelace key"}, has_ip=True
    )
    assert not other.drop_ip and other.target == ERASED
    assert other.details == {"name": f"{ERASED} key"}
    untouched = scrub_audit_entry("usr_a", scrub, "usr_b", "org_1", {"x": "y"}, has_ip=True)
    assert not untouched.changes


def test_a_deletion_cut_short_is_asked_again_and_finishes(
    console: Console, tables: Tables, gateway: GatewayProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dynoyard.adapters.dynamo.rights_store import RightsStore
    from dynoyard.domain.ports import StoreUnavailable

    alice, carol = signed_up(console, name=f"Cut{uuid.uuid4().hex[:8]}"), signed_up(console)
    store_call(tables, "add_member", carol.org_id, alice.user_id, "member")
    key = alice.create(name="k").json()["api_key"]
    email = console.me(alice.session)["user"]["email"]
    leave = RightsStore.end_membership

    async def fails_once(self: RightsStore, *args: Any) -> None:
        monkeypatch.setattr(RightsStore, "end_membership", leave)
        raise StoreUnavailable("DynamoDB went away")

    monkeypatch.setattr(RightsStore, "end_membership", fails_once)
    cut = alice.call("DELETE", "/api/me", json={"confirm_email": email})
    assert cut.status_code == 503 and error_code(cut) == "service_unavailable"
    assert models(gateway, key) == 401  # what was done stays done: her org is closed
    again = alice.call("DELETE", "/api/me", json={"confirm_email": email})
    assert again.status_code == 200, again.text
    assert again.json()["memberships_ended"] == [carol.org_id]  # what was left
    text = tables.scan_text().lower()
    assert email.lower() not in text
    assert [
        m["user_id"]
        for m in carol.call("GET", f"/api/orgs/{carol.org_id}/members").json()["members"]
    ] == [carol.user_id]
