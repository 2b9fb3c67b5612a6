"""The low-balance alert's threshold through the console's settings: a decimal string in
and out, null for no alert, every other shape a 400 naming `low_balance_usd`, and each
change in the audit log."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from tests.conftest import Tables
from tests.e2e.test_console_auth import Console, serve_console
from tests.e2e.test_console_keys import Person, error_code, person, store_call


@pytest.fixture(scope="module")
def console(tables: Tables) -> Iterator[Console]:
    yield from serve_console(tables)


def test_the_threshold_is_set_shown_kept_and_cleared_by_null(
    console: Console, tables: Tables
) -> None:
    owner, member = person(console), person(console)
    store_call(tables, "add_member", owner.org_id, member.user_id, "member")
    path = f"/api/orgs/{owner.org_id}/settings"
    assert member.call("GET", path).json()["low_balance_usd"] is None  # none by default

    answer = owner.call("PATCH", path, json={"low_balance_usd": "12.5"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["low_balance_usd"] == "12.500000"
    assert tables.store.get_org(owner.org_id).low_balance_usd == Decimal("12.5")
    assert member.call("GET", path).json()["low_balance_usd"] == "12.500000"

    # Another setting leaves the threshold as it is.
    kept = owner.call("PATCH", path, json={"cache_ttl_seconds": 600}).json()
    assert kept["low_balance_usd"] == "12.500000" and kept["cache_ttl_seconds"] == 600
    for amount, shown in (
        ("0", "0.000000"),
        ("1000000", "1000000.000000"),
        ("0.000001", "0.000001"),
    ):
        answer = owner.call("PATCH", path, json={"low_balance_usd": amount})
        assert answer.status_code == 200 and answer.json()["low_balance_usd"] == shown

    cleared = owner.call("PATCH", path, json={"low_balance_usd": None})
    assert cleared.status_code == 200 and cleared.json()["low_balance_usd"] is None
    assert tables.store.get_org(owner.org_id).low_balance_usd is None
    item = tables.client.get_item(
        TableName=tables.accounts, Key={"pk": {"S": f"ORG#{owner.org_id}"}, "sk": {"S": "META"}}
    )["Item"]
    assert "low_balance_usd" not in item  # removed, not stored as a null

    entries = owner.call("GET", f"/api/orgs/{owner.org_id}/audit").json()["entries"]
    changes = [
        e["details"].get("low_balance_usd") for e in entries if e["action"] == "settings_changed"
    ]
    assert changes == ["off", "0.000001", "1000000", "0", None, "12.5"]
    assert all(e["actor"] == owner.user_id for e in entries if e["action"] == "settings_changed")


def test_only_admins_and_owners_change_it_and_other_orgs_are_404(
    console: Console, tables: Tables
) -> None:
    owner, member, stranger = person(console), person(console), person(console)
    store_call(tables, "add_member", owner.org_id, member.user_id, "member")
    path = f"/api/orgs/{owner.org_id}/settings"
    answer = member.call("PATCH", path, json={"low_balance_usd": "5"})
    assert answer.status_code == 403 and error_code(answer) == "insufficient_role"
    answer = stranger.call("PATCH", path, json={"low_balance_usd": "5"})
    assert answer.status_code == 404 and error_code(answer) == "org_not_found"
    answer = owner.call("PATCH", path, csrf=False, json={"low_balance_usd": "5"})
    assert answer.status_code == 403 and error_code(answer) == "csrf_failed"
    assert console.request("PATCH", path, json={"low_balance_usd": "5"}).status_code == 401
    assert tables.store.get_org(owner.org_id).low_balance_usd is None


@pytest.fixture(scope="module")
def owner(console: Console) -> Person:
    return person(console)


@pytest.mark.parametrize(
    "value",
    [
        5,  # a JSON number, even a whole one: money is a decimal string
        5.5,
        "-1",
        "-0",
        "+5",
        "NaN",
        "Infinity",
        "1e3",
        "1E3",
        "0x10",
        "5.1234567",  # more than 6 decimal places
        "1000000.000001",
        "99999999999999999999999999999999",
        "9" * 33,  # longer than any amount
        "",
        " 5",
        "5 ",
        "5,00",
        "\u0665",  # a digit, but not an ASCII one
        True,
        ["5"],
        {"usd": "5"},
    ],
)
def test_hostile_thresholds_are_400_naming_the_field(
    console: Console, tables: Tables, owner: Person, value: Any
) -> None:
    path = f"/api/orgs/{owner.org_id}/settings"
    reset = owner.call("PATCH", path, json={"low_balance_usd": "7", "cache_enabled": False})
    assert reset.status_code == 200
    answer = owner.call("PATCH", path, json={"low_balance_usd": value, "cache_enabled": True})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == "low_balance_usd" and error["type"] == "invalid_request_error"
    org = tables.store.get_org(owner.org_id)
    assert (org.low_balance_usd, org.cache_enabled) == (Decimal(7), False)  # nothing changed


def test_the_organization_is_renamed_by_owners_and_admins_only(
    console: Console, tables: Tables
) -> None:
    owner, admin, member = person(console), person(console), person(console)
    store_call(tables, "add_member", owner.org_id, admin.user_id, "admin")
    store_call(tables, "add_member", owner.org_id, member.user_id, "member")
    path = f"/api/orgs/{owner.org_id}/settings"
    answer = owner.call("PATCH", path, json={"name": "  Analytical Engines 分析机  "})
    assert answer.status_code == 200, answer.text
    assert answer.json()["name"] == "Analytical Engines 分析机"  # trimmed
    assert tables.store.get_org(owner.org_id).name == "Analytical Engines 分析机"
    orgs = {o["org_id"]: o["name"] for o in member.call("GET", "/api/me").json()["orgs"]}
    assert orgs[owner.org_id] == "Analytical Engines 分析机"
    assert admin.call("PATCH", path, json={"name": "Babbage & Co"}).status_code == 200
    assert error_code(member.call("PATCH", path, json={"name": "Mine now"})) == "insufficient_role"
    assert tables.store.get_org(owner.org_id).name == "Babbage & Co"
    # A rename leaves the other settings, and they leave the name.
    assert owner.call("PATCH", path, json={"cache_ttl_seconds": 900}).json()["name"] == (
        "Babbage & Co"
    )
    for hostile in ("", "   ", "x" * 101, "tab\there", "nul\x00", 12, None, ["a"]):
        refused = owner.call("PATCH", path, json={"name": hostile})
        if hostile is None:  # no rename asked
            assert refused.status_code == 200
            continue
        assert refused.status_code == 400, (hostile, refused.text)
        assert refused.json()["error"]["param"] == "name"
    assert tables.store.get_org(owner.org_id).name == "Babbage & Co"
    entries = owner.call("GET", f"/api/orgs/{owner.org_id}/audit").json()["entries"]
    renames = [e["details"]["name"] for e in entries if "name" in e["details"]]
    assert renames[:2] == ["Babbage & Co", "Analytical Engines 分析机"]
