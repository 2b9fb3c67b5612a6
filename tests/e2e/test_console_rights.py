"""The user's rights over real HTTP: `GET /api/me/export` (every part of the document,
never a key or its hash, owners and members, one a minute) and the guards of
`DELETE /api/me` (its confirmation, CSRF, a session); deletion's effects are
tests/integration/test_account_deletion.py's."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from dynoyard.adapters.dynamo.client import DynamoClient
from dynoyard.adapters.dynamo.store import DynamoStore
from dynoyard.domain.administration import Actor, Administration
from dynoyard.domain.rights import EXPORT_FORMAT_VERSION
from dynoyard.domain.usage import UsageRecord
from tests.conftest import Tables
from tests.e2e.test_console_auth import Console, serve_console
from tests.e2e.test_console_keys import Person, error_code, person, store_call


@pytest.fixture(scope="module")
def console(tables: Tables) -> Iterator[Console]:
    yield from serve_console(tables)


def export(who: Person) -> httpx.Response:
    answer = who.call("GET", "/api/me/export", csrf=False)
    who.console.clock.offset += 61  # the next export of anyone is allowed
    return answer


def seed_usage(tables: Tables, org_id: str, key_id: str, count: int, ip: str = "") -> None:
    start = datetime.now(UTC) - timedelta(hours=count + 1)
    for n in range(count):
        record = UsageRecord(
            request_id=f"req_{uuid.uuid4().hex[:24]}",
            started_at=start + timedelta(hours=n),
            org_id=org_id,
            key_id=key_id,
            endpoint="chat/completions",
            model="test-chat",
            status=200,
            prompt_tokens=10 + n,
            completion_tokens=n,
            cost_usd=Decimal("0.000123"),
            client_ip=ip,
        )
        tables.store.settle(record, Decimal(0))


def record_audit(tables: Tables, org_id: str, actor: Actor, target: str) -> None:
    """An audit entry as the console's use cases write it (here: a settings change)."""

    async def go() -> None:
        store = DynamoStore(
            DynamoClient(tables.env["AWS_ENDPOINT_URL_DYNAMODB"], "us-east-1"),
            tables.accounts,
            tables.usage,
            cache_table=tables.names["CACHE_TABLE"],
        )
        try:
            await Administration(store, audit=store.audit_log).record(
                actor, org_id, "settings_changed", target, cache_enabled=False
            )
        finally:
            await store.aclose()

    asyncio.run(go())


def test_the_export_holds_every_part_and_no_key_or_hash(console: Console, tables: Tables) -> None:
    owner, inviter = person(console), person(console)
    store_call(tables, "link_identity", "google", "g-" + uuid.uuid4().hex[:8], owner.user_id)
    address = console.me(owner.session)["user"]["email"]
    invited = inviter.call(
        "POST", f"/api/orgs/{inviter.org_id}/invitations", json={"email": address, "role": "admin"}
    )
    assert invited.status_code == 201, invited.text
    created = owner.create(name="ci key").json()
    key, key_id = created["api_key"], created["key_id"]
    tables.store.grant_credits(owner.org_id, Decimal("12.5"), "welcome credits")
    seed_usage(tables, owner.org_id, key_id, 3)
    me = console.me(owner.session)["user"]

    answer = export(owner)
    assert answer.status_code == 200, answer.text
    today = datetime.now(UTC).date().isoformat()
    assert answer.headers["content-disposition"] == (
        f'attachment; filename="dynoyard-export-{today}.json"'
    )
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.headers["cache-control"] == "no-store"
    document = answer.json()
    assert document["format_version"] == EXPORT_FORMAT_VERSION == 1
    assert document["kind"] == "dynoyard-account-export" and document["exported_at"]
    account = document["account"]
    assert {k: account[k] for k in ("user_id", "email", "name")} == {
        k: me[k] for k in ("user_id", "email", "name")
    }
    (identity,) = account["sign_in_identities"]
    assert identity["provider"] == "google" and identity["provider_id"].startswith("g-")
    (invitation,) = account["pending_invitations"]
    assert invitation["org_id"] == inviter.org_id and invitation["role"] == "admin"
    assert invitation["email"] == address and invitation["invited_by"] == inviter.user_id
    assert document["memberships"] == [{"org_id": owner.org_id, "role": "owner"}]
    (org,) = document["organizations"]
    assert org["org_id"] == owner.org_id and org["role"] == "owner"
    assert org["balance_usd"] == "12.499631"  # 12.5 granted, 3 x 0.000123 spent
    assert org["contact_email"] == me["email"]
    assert org["settings"]["cache_enabled"] is False and org["name"]
    (shown_key,) = org["keys"]
    assert shown_key["key_id"] == key_id and shown_key["name"] == "ci key"
    (movement,) = org["credit_movements"]
    assert movement["amount_usd"] == "12.500000" and movement["reason"] == "welcome credits"
    assert movement["kind"] == "grant" and movement["at"]
    assert len(org["usage"]["records"]) == 3 and org["usage"]["truncated"] is False
    assert {r["key_id"] for r in org["usage"]["records"]} == {key_id}
    assert org["usage"]["records"][0]["cost_usd"] == "0.000123"  # money as strings
    audit = org["audit_log"]
    assert audit["scope"] == "organization" and audit["truncated"] is False
    assert [e["action"] for e in audit["entries"]] == ["key_created", "sign_in"]
    assert document["limits"]["usage_records"] == 8_000
    assert document["limits"]["audit_entries"] == 4_000

    # Never a key, its hash, a session token or a CSRF token.
    text = answer.text
    key_hash = store_call(tables, "_get", f"KEYID#{key_id}", "KEY")["key_hash"]
    assert key not in text and key_hash not in text
    assert not re.search(r"sk-dy-[A-Za-z0-9_-]{8}", text)  # the hint "sk-dy-...wxyz" only
    assert owner.session not in text and owner.csrf not in text
    assert "key_hash" not in text and '"hash"' not in text

    # The export is in the audit log, without secrets.
    entries = owner.call("GET", f"/api/orgs/{owner.org_id}/audit").json()["entries"]
    newest = entries[0]
    assert newest["action"] == "export" and newest["actor"] == owner.user_id
    assert newest["details"] == {"what": "account", "format": "json"}


def test_another_user_never_gets_someone_elses_export(console: Console, tables: Tables) -> None:
    alice, mallory = person(console), person(console)
    alice.create(name="alice key")
    alices_email = console.me(alice.session)["user"]["email"]
    theirs = export(mallory)
    assert theirs.status_code == 200
    text = theirs.text
    assert alice.org_id not in text and alice.user_id not in text and alices_email not in text
    assert theirs.json()["account"]["user_id"] == mallory.user_id
    # No parameter chooses whose export it is.
    also = mallory.call("GET", f"/api/me/export?user_id={alice.user_id}", csrf=False)
    assert also.status_code == 200 and alice.user_id not in also.text


def test_members_get_their_own_audit_entries_and_owners_the_whole_log(
    console: Console, tables: Tables
) -> None:
    owner, member = person(console), person(console)
    store_call(tables, "add_member", owner.org_id, member.user_id, "member")
    owner.create(name="owner's")
    record_audit(tables, owner.org_id, Actor("member", member.user_id), owner.org_id)
    members_view = export(member).json()
    org = next(o for o in members_view["organizations"] if o["org_id"] == owner.org_id)
    assert org["role"] == "member" and "contact_email" not in org
    assert org["audit_log"]["scope"] == "own_actions"
    assert {e["actor"] for e in org["audit_log"]["entries"]} == {member.user_id}
    assert [e["action"] for e in org["audit_log"]["entries"]] == ["settings_changed"]
    assert [k["name"] for k in org["keys"]] == ["owner's"]  # members may read keys

    owners_view = export(owner).json()
    (org,) = [o for o in owners_view["organizations"] if o["org_id"] == owner.org_id]
    actors = {e["actor"] for e in org["audit_log"]["entries"]}
    assert actors == {owner.user_id, member.user_id}  # the member's export is there too
    assert {"key_created", "settings_changed", "export"} <= {
        e["action"] for e in org["audit_log"]["entries"]
    }


def test_one_export_a_minute(console: Console) -> None:
    someone = person(console)
    first = someone.call("GET", "/api/me/export", csrf=False)
    assert first.status_code == 200
    again = someone.call("GET", "/api/me/export", csrf=False)
    assert again.status_code == 429 and error_code(again) == "too_many_exports"
    assert 1 <= int(again.headers["retry-after"]) <= 60
    other = person(console)  # the limit is per user
    assert other.call("GET", "/api/me/export", csrf=False).status_code == 200
    console.clock.offset += 61
    assert someone.call("GET", "/api/me/export", csrf=False).status_code == 200


def test_usage_beyond_the_cap_is_said_to_be_truncated(
    console: Console, tables: Tables, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dynoyard.console.rights as rights_routes

    monkeypatch.setattr(rights_routes, "EXPORT_USAGE_RECORDS", 4)
    monkeypatch.setattr(rights_routes, "USAGE_PAGE", 3)
    owner = person(console)
    seed_usage(tables, owner.org_id, "key_0000000000000000", 6)
    (org,) = export(owner).json()["organizations"]
    assert len(org["usage"]["records"]) == 4 and org["usage"]["truncated"] is True
    stamps = [r["timestamp"] for r in org["usage"]["records"]]
    assert stamps == sorted(stamps)  # the oldest first


def test_the_rights_routes_need_a_session(console: Console) -> None:
    for method, path in (("GET", "/api/me/export"), ("DELETE", "/api/me")):
        answer = console.request(method, path, json={"confirm_email": "x@example.com"})
        assert answer.status_code == 401 and error_code(answer) == "not_signed_in"
        answer = console.request(method, path, session="not-a-session")
        assert answer.status_code == 401


# -- the deletion's guards -----------------------------------------------------------------


def test_deleting_needs_the_csrf_token(console: Console) -> None:
    someone = person(console)
    email = console.me(someone.session)["user"]["email"]
    answer = someone.call("DELETE", "/api/me", csrf=False, json={"confirm_email": email})
    assert answer.status_code == 403 and error_code(answer) == "csrf_failed"
    assert console.me(someone.session)["user"]["email"] == email


@pytest.mark.parametrize(
    "body",
    [
        None,
        {},
        {"confirm_email": None},
        {"confirm_email": ""},
        {"confirm_email": "someone-else@example.com"},
        {"confirm_email": "MINE-BUT-WRONG"},
    ],
)
def test_deleting_needs_the_accounts_own_address(console: Console, body: Any) -> None:
    someone = person(console)
    kwargs = {"json": body} if body is not None else {}
    answer = someone.call("DELETE", "/api/me", **kwargs)
    assert answer.status_code == 400, answer.text
    assert error_code(answer) == "confirmation_mismatch"
    assert answer.json()["error"]["param"] == "confirm_email"
    assert console.me(someone.session)["orgs"][0]["org_id"] == someone.org_id


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ('{"confirm_email": 5}', "confirm_email"),
        ('{"confirm_email": ["a@example.com"]}', "confirm_email"),
        ('{"confirm_email": "a@example.com", "force": true}', "force"),
        ('{"confirm_email": "' + "a" * 500 + '@example.com"}', "confirm_email"),
        ("[1, 2]", None),
        ("{not json", None),
    ],
)
def test_hostile_deletion_bodies_are_400_never_500(
    console: Console, raw: str, param: str | None
) -> None:
    someone = person(console)
    answer = someone.call(
        "DELETE", "/api/me", content=raw.encode(), headers={"content-type": "application/json"}
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param
    assert console.me(someone.session)["user"]["user_id"] == someone.user_id


def test_the_address_confirms_whatever_its_case(console: Console) -> None:
    someone = person(console)
    email = console.me(someone.session)["user"]["email"]
    answer = someone.call("DELETE", "/api/me", json={"confirm_email": f"  {email.upper()} "})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "deleted": True,
        "orgs_closed": [someone.org_id],
        "memberships_ended": [someone.org_id],
    }
    cookie = answer.headers["set-cookie"].lower()
    assert "dynoyard_session=" in cookie and ("max-age=0" in cookie or "expires=" in cookie)
    assert console.request("GET", "/api/me", someone.session).status_code == 401
    assert re.fullmatch(r"usr_[0-9a-f]{16}", someone.user_id)
    assert json.loads(answer.text)["orgs_closed"] == [someone.org_id]


def test_audit_entries_beyond_the_cap_are_said_to_be_truncated(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dynoyard.console.rights as rights_routes

    monkeypatch.setattr(rights_routes, "EXPORT_AUDIT_ENTRIES", 2)
    owner = person(console)
    for name in ("first", "second", "third"):
        owner.create(name=name)
    (org,) = export(owner).json()["organizations"]
    entries = org["audit_log"]["entries"]
    assert [e["details"]["name"] for e in entries] == ["third", "second"]  # the newest
    assert org["audit_log"]["truncated"] is True
