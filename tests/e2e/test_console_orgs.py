"""An organization's member list and settings through the console, each route also tried
with another organization's ids and with a role that may not change them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Tables
from tests.e2e.test_console_auth import Console, serve_console
from tests.e2e.test_console_keys import error_code, person, store_call


@pytest.fixture(scope="module")
def console(tables: Tables) -> Iterator[Console]:
    yield from serve_console(tables)


def test_members_see_their_team(console: Console, tables: Tables) -> None:
    owner, member, stranger = person(console), person(console), person(console)
    store_call(tables, "add_member", owner.org_id, member.user_id, "member")
    path = f"/api/orgs/{owner.org_id}/members"
    for viewer in (owner, member):
        answer = viewer.call("GET", path)
        assert answer.status_code == 200, answer.text
        roles = {m["user_id"]: m["role"] for m in answer.json()["members"]}
        assert roles == {owner.user_id: "owner", member.user_id: "member"}
    answer = stranger.call("GET", path)
    assert answer.status_code == 404 and error_code(answer) == "org_not_found"
    assert console.request("GET", path).status_code == 401


def test_settings_are_read_by_members_and_changed_by_admins_and_owners(
    console: Console, tables: Tables
) -> None:
    owner, member, admin, stranger = (person(console) for _ in range(4))
    store_call(tables, "add_member", owner.org_id, member.user_id, "member")
    store_call(tables, "add_member", owner.org_id, admin.user_id, "admin")
    path = f"/api/orgs/{owner.org_id}/settings"
    shown = member.call("GET", path).json()
    assert shown["cache_enabled"] is False and shown["cache_ttl_seconds"] == 1800
    answer = owner.call("PATCH", path, json={"cache_enabled": True, "cache_ttl_seconds": 600})
    assert answer.status_code == 200, answer.text
    assert answer.json()["cache_enabled"] is True and answer.json()["cache_ttl_seconds"] == 600
    assert tables.store.get_org(owner.org_id).cache_enabled is True  # really written
    assert admin.call("PATCH", path, json={"cache_ttl_seconds": 900}).status_code == 200
    answer = member.call("PATCH", path, json={"cache_enabled": False})
    assert answer.status_code == 403 and error_code(answer) == "insufficient_role"
    answer = stranger.call("PATCH", path, json={"cache_enabled": False})
    assert answer.status_code == 404 and error_code(answer) == "org_not_found"
    assert stranger.call("GET", path).status_code == 404
    answer = owner.call("PATCH", path, csrf=False, json={"cache_enabled": False})
    assert answer.status_code == 403 and error_code(answer) == "csrf_failed"
    org = tables.store.get_org(owner.org_id)
    assert org.cache_enabled is True and org.cache_ttl_seconds == 900


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"cache_ttl_seconds": 59}, "cache_ttl_seconds"),
        ({"cache_ttl_seconds": 86_401}, "cache_ttl_seconds"),
        ({"cache_ttl_seconds": "600"}, "cache_ttl_seconds"),
        ({"cache_ttl_seconds": 600.0}, "cache_ttl_seconds"),
        ({"cache_enabled": "on"}, "cache_enabled"),
        ({"cache_enabled": 1}, "cache_enabled"),
        ({"rate_limit_rpm": 0}, "rate_limit_rpm"),
        ({"balance_usd": "1000"}, "balance_usd"),
    ],
)
def test_hostile_settings_are_400_naming_the_field(
    console: Console, tables: Tables, body: dict[str, Any], param: str
) -> None:
    owner = person(console)
    answer = owner.call("PATCH", f"/api/orgs/{owner.org_id}/settings", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param
    org = tables.store.get_org(owner.org_id)
    assert (org.cache_enabled, org.cache_ttl_seconds, org.balance_usd) == (False, 1800, 0)
    assert json.loads(answer.text)["error"]["type"] == "invalid_request_error"
