"""Nothing of one organization is readable or changeable from another: every route the
console's OpenAPI document lists that names an organization is tried, with every method,
by a member of another organization, with the first organization's ids; then its own
organization's routes are tried with the first organization's key, member and invitation
ids. New routes are covered as they are added (an id this test does not know fails it)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Tables
from tests.e2e.test_console_auth import Console, serve_console
from tests.e2e.test_console_keys import Person, error_code, person, store_call
from tests.e2e.test_console_team import invite

PLACEHOLDER = re.compile(r"\{(\w+)\}")
# What each route is sent: enough to pass validation, so a 404 is the authorization's.
BODIES: dict[str, Any] = {
    "keys": {"name": "stolen"},
    "rotate": {"grace_seconds": 0},
    "members": {"role": "admin"},
    "invitations": {"email": "mallory@example.com", "role": "owner"},
    "settings": {"cache_enabled": True, "low_balance_usd": "99"},
    "checkout": {"amount_usd": "10"},
}


@pytest.fixture(scope="module")
def console(tables: Tables) -> Iterator[Console]:
    yield from serve_console(tables)


def snapshot(owner: Person) -> dict[str, Any]:
    """What the organization's owner sees; the sweep must leave it as it was."""
    org = f"/api/orgs/{owner.org_id}"
    seen = {}
    for part in ("keys", "members", "settings", "invitations"):
        answer = owner.call("GET", f"{org}/{part}")
        assert answer.status_code == 200, answer.text
        seen[part] = answer.json()
    return seen


def org_routes(console: Console, someone: Person) -> list[tuple[str, str]]:
    paths = someone.call("GET", "/api/openapi.json").json()["paths"]
    routes = [
        (method.upper(), path)
        for path, operations in paths.items()
        if "{org_id}" in path
        for method in operations
    ]
    assert len(routes) >= 15, routes  # keys, team, settings, usage, audit at least
    return routes


def test_every_org_route_from_another_organization_is_404_and_changes_nothing(
    console: Console, tables: Tables
) -> None:
    alice, bob, mallory = person(console), person(console), person(console)
    store_call(tables, "add_member", alice.org_id, bob.user_id, "member")
    key = alice.create(name="alice's").json()
    invitation = invite(alice, alice.org_id, "carol@example.com").json()
    ids = {
        "org_id": alice.org_id,
        "key_id": key["key_id"],
        "user_id": bob.user_id,
        "invitation_id": invitation["invitation_id"],
    }
    before = snapshot(alice)
    routes = org_routes(console, mallory)
    for method, template in routes:
        names = PLACEHOLDER.findall(template)
        unknown = set(names) - set(ids)
        assert not unknown, f"{template}: teach this test the id {unknown}"
        path = template.format(**ids)
        literal = [part for part in template.split("/") if part and "{" not in part][-1]
        body = BODIES.get(literal) if method != "GET" else None
        answer = mallory.call(method, path, json=body)
        assert answer.status_code == 404, (method, path, answer.status_code, answer.text)
        assert error_code(answer) == "org_not_found"
        # Alice's other ids through Mallory's own organization: none of them are hers.
        if len(names) > 1:
            own = template.format(**{**ids, "org_id": mallory.org_id})
            answer = mallory.call(method, own, json=body)
            assert answer.status_code in (403, 404), (method, own, answer.text)
            if answer.status_code == 403:  # only a role refusal, never a change
                assert error_code(answer) == "insufficient_role", answer.text
    assert snapshot(alice) == before
    members = {m["user_id"] for m in before["members"]["members"]}
    assert mallory.user_id not in members
