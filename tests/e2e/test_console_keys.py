"""An organization's API keys through the console: who may list, create and revoke them,
what each answer shows, and that a created key really works (and stops working) at the
gateway. Every route is also tried with another organization's ids."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from dynoyard.adapters.dynamo.client import DynamoClient
from dynoyard.adapters.dynamo.console_store import ConsoleStore
from tests.conftest import GatewayProcess, Tables
from tests.e2e.test_console_auth import Console, serve_console


@pytest.fixture(scope="module")
def console(tables: Tables) -> Iterator[Console]:
    yield from serve_console(tables)


def store_call(tables: Tables, method: str, *args: Any, **kwargs: Any) -> Any:
    async def go() -> Any:
        store = ConsoleStore(
            DynamoClient(tables.env["AWS_ENDPOINT_URL_DYNAMODB"], "us-east-1"), tables.accounts
        )
        try:
            return await getattr(store, method)(*args, **kwargs)
        finally:
            await store._db.aclose()

    return asyncio.run(go())


class Person:
    def __init__(self, console: Console, session: str) -> None:
        self.console = console
        self.session = session
        me = console.me(session)
        self.user_id = me["user"]["user_id"]
        self.org_id = me["orgs"][0]["org_id"] if me["orgs"] else ""
        self.csrf = me["csrf_token"]

    def call(self, method: str, path: str, csrf: bool = True, **kw: Any) -> httpx.Response:
        return self.console.request(method, path, self.session, self.csrf if csrf else None, **kw)

    def create(self, org_id: str | None = None, **body: Any) -> httpx.Response:
        return self.call("POST", f"/api/orgs/{org_id or self.org_id}/keys", json=body)


def person(console: Console) -> Person:
    return Person(console, console.sign_up()[0])


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


def test_an_owner_creates_a_key_that_works_at_the_gateway_until_revoked(
    console: Console, gateway: GatewayProcess, tables: Tables
) -> None:
    owner = person(console)
    answer = owner.create(name="ci", models=["test-chat"], limits={"rpm": 60, "daily_usd": "5"})
    assert answer.status_code == 201, answer.text
    created = answer.json()
    key, key_id = created["api_key"], created["key_id"]
    assert key.startswith("sk-dy-") and created["hint"].endswith(key[-4:])
    assert created["models"] == ["test-chat"]
    assert created["limits"] == {"rpm": 60, "tpm": None, "daily_usd": "5", "monthly_usd": None}
    auth = {"authorization": f"Bearer {key}"}
    models = httpx.get(gateway.base_url + "/v1/models", headers=auth)
    assert models.status_code == 200 and [m["id"] for m in models.json()["data"]] == ["test-chat"]

    listed = owner.call("GET", f"/api/orgs/{owner.org_id}/keys").json()["keys"]
    (shown,) = listed
    assert shown["key_id"] == key_id and shown["name"] == "ci" and shown["revoked"] is False
    assert shown["hint"] == created["hint"] and shown["created_at"]
    assert shown["limits"]["rpm"] == 60 and shown["limits"]["daily_usd"] == "5"
    assert key not in str(listed) and "key_hash" not in shown
    assert key not in str(tables.scan_table(tables.accounts))  # only its hash is stored

    revoked = owner.call("DELETE", f"/api/orgs/{owner.org_id}/keys/{key_id}")
    assert revoked.status_code == 200 and revoked.json() == {"key_id": key_id, "revoked": True}
    assert httpx.get(gateway.base_url + "/v1/models", headers=auth).status_code == 401
    (shown,) = owner.call("GET", f"/api/orgs/{owner.org_id}/keys").json()["keys"]
    assert shown["revoked"] is True and shown["revoked_at"]


def test_another_organizations_ids_are_404_on_every_route(
    console: Console, gateway: GatewayProcess
) -> None:
    alice, mallory = person(console), person(console)
    key = alice.create(name="alice's").json()
    theirs = f"/api/orgs/{alice.org_id}/keys"
    for method, path, body in (
        ("GET", theirs, None),
        ("POST", theirs, {"name": "stolen"}),
        ("DELETE", f"{theirs}/{key['key_id']}", None),
    ):
        answer = mallory.call(method, path, json=body)
        assert answer.status_code == 404, (method, path, answer.text)
        assert error_code(answer) == "org_not_found"
    # Alice's key id through Mallory's own organization: not hers to revoke.
    answer = mallory.call("DELETE", f"/api/orgs/{mallory.org_id}/keys/{key['key_id']}")
    assert answer.status_code == 404 and error_code(answer) == "key_not_found"
    auth = {"authorization": f"Bearer {key['api_key']}"}
    assert httpx.get(gateway.base_url + "/v1/models", headers=auth).status_code == 200
    assert [k["name"] for k in alice.call("GET", theirs).json()["keys"]] == ["alice's"]
    assert mallory.call("GET", f"/api/orgs/{mallory.org_id}/keys").json() == {"keys": []}


@pytest.mark.parametrize(
    "org_id", ["org_0000000000000000", "ORG", "org_..%2F..", "x" * 300, "org_ABCDEF0123456789"]
)
def test_unknown_and_malformed_org_ids_are_404(console: Console, org_id: str) -> None:
    someone = person(console)
    answer = someone.call("GET", f"/api/orgs/{org_id}/keys")
    assert answer.status_code == 404, answer.text


@pytest.mark.parametrize("key_id", ["key_0000000000000000", "KEYID", "key_" + "z" * 16, "%00"])
def test_unknown_and_malformed_key_ids_are_404(console: Console, key_id: str) -> None:
    someone = person(console)
    answer = someone.call("DELETE", f"/api/orgs/{someone.org_id}/keys/{key_id}")
    assert answer.status_code == 404 and error_code(answer) == "key_not_found"


def test_members_may_list_but_only_admins_and_owners_create_and_revoke(
    console: Console, tables: Tables
) -> None:
    owner, member, admin = person(console), person(console), person(console)
    store_call(tables, "add_member", owner.org_id, member.user_id, "member")
    store_call(tables, "add_member", owner.org_id, admin.user_id, "admin")
    keys = f"/api/orgs/{owner.org_id}/keys"
    key_id = owner.create(name="owner's").json()["key_id"]
    assert member.call("GET", keys).status_code == 200
    answer = member.create(owner.org_id, name="nope")
    assert answer.status_code == 403 and error_code(answer) == "insufficient_role"
    answer = member.call("DELETE", f"{keys}/{key_id}")
    assert answer.status_code == 403 and error_code(answer) == "insufficient_role"
    made = admin.create(owner.org_id, name="admin's")
    assert made.status_code == 201
    assert admin.call("DELETE", f"{keys}/{made.json()['key_id']}").status_code == 200
    names = {k["name"]: k["revoked"] for k in member.call("GET", keys).json()["keys"]}
    assert names == {"owner's": False, "admin's": True}


def test_an_unverified_user_can_not_create_keys(console: Console, tables: Tables) -> None:
    owner = person(console)
    user_id = "usr_" + secrets.token_hex(8)
    address = f"u-{uuid.uuid4().hex[:8]}@example.com"
    store_call(tables, "create_user", user_id, address, address, "U", "en", False, None)
    store_call(tables, "add_member", owner.org_id, user_id, "owner")
    token = secrets.token_urlsafe(32)
    store_call(
        tables, "create_session", hashlib.sha256(token.encode()).hexdigest(), user_id, 0, 3600
    )
    unverified = Person(console, token)
    answer = unverified.create(owner.org_id, name="x")
    assert answer.status_code == 403 and error_code(answer) == "email_not_verified"
    assert unverified.call("GET", f"/api/orgs/{owner.org_id}/keys").status_code == 200


def test_key_routes_need_a_session_and_writes_the_csrf_token(console: Console) -> None:
    owner = person(console)
    keys = f"/api/orgs/{owner.org_id}/keys"
    key_id = owner.create(name="k").json()["key_id"]
    for method, path in (("GET", keys), ("POST", keys), ("DELETE", f"{keys}/{key_id}")):
        answer = console.request(method, path, json={})
        assert answer.status_code == 401 and error_code(answer) == "not_signed_in"
    for method, path in (("POST", keys), ("DELETE", f"{keys}/{key_id}")):
        answer = owner.call(method, path, csrf=False, json={})
        assert answer.status_code == 403 and error_code(answer) == "csrf_failed"
    assert owner.call("GET", keys).json()["keys"][0]["revoked"] is False


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": 5}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "tab\there"}, "name"),
        ({"models": "test-chat"}, "models"),
        ({"models": [1]}, "models.0"),
        ({"models": ["has space"]}, "models"),
        ({"models": ["m"] * 101}, "models"),
        ({"expires_in_days": 0}, "expires_in_days"),
        ({"expires_in_days": "30"}, "expires_in_days"),
        ({"expires_in_days": 1.5}, "expires_in_days"),
        ({"expires_in_days": 10**12}, "expires_in_days"),
        ({"limits": {"rpm": 0}}, "limits"),
        ({"limits": {"rpm": True}}, "limits.rpm"),
        ({"limits": {"daily_usd": 5.5}}, "limits.daily_usd"),
        ({"limits": {"daily_usd": "-1"}}, "limits"),
        ({"limits": {"monthly_usd": "NaN"}}, "limits"),
        ({"limits": {"burst": 1}}, "limits.burst"),
        ({"org_id": "org_0000000000000000"}, "org_id"),
    ],
)
def test_hostile_key_bodies_are_400_naming_the_field(
    console: Console, body: dict[str, Any], param: str
) -> None:
    owner = person(console)
    answer = owner.call("POST", f"/api/orgs/{owner.org_id}/keys", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param
    assert owner.call("GET", f"/api/orgs/{owner.org_id}/keys").json() == {"keys": []}


def test_an_expiring_key_shows_its_expiry(console: Console) -> None:
    owner = person(console)
    created = owner.create(name="temp", expires_in_days=30).json()
    (shown,) = owner.call("GET", f"/api/orgs/{owner.org_id}/keys").json()["keys"]
    assert shown["expires_at"] == created["expires_at"]
    assert created["expires_at"] > console.clock() + 29 * 86_400


def test_signing_in_by_link_verifies_the_address(console: Console, tables: Tables) -> None:
    user_id = "usr_" + secrets.token_hex(8)
    address = f"v-{uuid.uuid4().hex[:8]}@example.com"
    store_call(tables, "create_user", user_id, address, address, "V", "en", False, None)
    org_id = tables.store.create_org("V's", address)
    store_call(tables, "add_member", org_id, user_id, "owner")
    console.request("POST", "/api/auth/email-link", json={"email": address})
    verified = Person(console, console.follow(address))
    assert verified.user_id == user_id
    assert console.me(verified.session)["user"]["verified"] is True
    assert verified.create(org_id, name="now allowed").status_code == 201


def test_key_and_settings_changes_in_the_console_are_in_the_audit_log_with_who_and_where(
    console: Console, tables: Tables
) -> None:
    from dynoyard.adapters.dynamo.store import DynamoStore

    owner = person(console)
    key_id = owner.create(name="audited").json()["key_id"]
    assert owner.call("DELETE", f"/api/orgs/{owner.org_id}/keys/{key_id}").status_code == 200
    changed = owner.call(
        "PATCH", f"/api/orgs/{owner.org_id}/settings", json={"cache_ttl_seconds": 600}
    )
    assert changed.status_code == 200, changed.text

    async def entries() -> list[Any]:
        store = DynamoStore(
            DynamoClient(tables.env["AWS_ENDPOINT_URL_DYNAMODB"], "us-east-1"),
            tables.accounts,
            tables.usage,
        )
        try:
            found, _ = await store.audit_log.entries(owner.org_id)
            return found
        finally:
            await store.aclose()

    found = asyncio.run(entries())
    assert [e.action for e in found] == [
        "settings_changed",
        "key_revoked",
        "key_created",
        "sign_in",  # the sign-up's first sign-in
    ]
    assert {(e.actor, e.ip) for e in found} == {(owner.user_id, "127.0.0.1")}
    assert found[1].target == key_id and found[3].details == {"method": "email_link"}


def test_the_audit_log_is_readable_by_owners_in_pages_and_by_no_one_else(
    console: Console, tables: Tables
) -> None:
    owner, member, stranger = person(console), person(console), person(console)
    for n in range(3):
        assert owner.create(name=f"k{n}").status_code == 201
    store_call(tables, "add_member", owner.org_id, member.user_id, "member")
    audit = f"/api/orgs/{owner.org_id}/audit"

    first = owner.call("GET", audit, params={"limit": 2})
    assert first.status_code == 200, first.text
    page = first.json()
    assert [e["action"] for e in page["entries"]] == ["key_created", "key_created"]
    assert page["entries"][0]["actor"] == owner.user_id and page["next"]
    rest = owner.call("GET", audit, params={"limit": 2, "before": page["next"]}).json()
    assert [e["action"] for e in rest["entries"]] == ["key_created", "sign_in"]
    assert rest["entries"][0]["details"]["name"] == "k0" and rest["next"] is None
    assert "sk-dy-" not in str(page) + str(rest)  # names and ids, never a key

    assert member.call("GET", audit).status_code == 403  # members do not read the audit log
    assert error_code(stranger.call("GET", audit)) == "org_not_found"
    for params, param in (
        ({"before": "not-a-cursor"}, "before"),
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "many"}, "limit"),
    ):
        answer = owner.call("GET", audit, params=params)
        assert answer.status_code == 400, (params, answer.text)
        assert answer.json()["error"]["param"] == param
