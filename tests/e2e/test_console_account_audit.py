"""What a user does to their own account is in the audit log of each of their
organizations: every sign-in (with its method and IP) and signing out everywhere."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Tables
from tests.e2e.test_console_auth import Console, serve_console
from tests.e2e.test_console_keys import Person, person, store_call


@pytest.fixture(scope="module")
def console(tables: Tables) -> Iterator[Console]:
    yield from serve_console(tables)


def entries(owner: Person, org_id: str, action: str) -> list[dict[str, Any]]:
    answer = owner.call("GET", f"/api/orgs/{org_id}/audit")
    assert answer.status_code == 200, answer.text
    return [e for e in answer.json()["entries"] if e["action"] == action]


def test_each_sign_in_is_recorded_in_each_of_the_users_organizations(
    console: Console, tables: Tables
) -> None:
    owner, member = person(console), person(console)
    store_call(tables, "add_member", owner.org_id, member.user_id, "member")
    member_email = console.me(member.session)["user"]["email"]
    before = len(entries(owner, owner.org_id, "sign_in"))
    session, _ = console.sign_up(member_email)  # signs the existing user in again
    assert console.me(session)["user"]["user_id"] == member.user_id
    signed_in = entries(owner, owner.org_id, "sign_in")
    assert len(signed_in) == before + 1
    latest = signed_in[0]
    assert latest["actor"] == member.user_id and latest["target"] == member.user_id
    assert latest["details"] == {"method": "email_link"} and latest["ip"] == "127.0.0.1"
    # ... and in the member's own organization too.
    own = entries(Person(console, session), member.org_id, "sign_in")
    assert [e["actor"] for e in own][:1] == [member.user_id]
    assert session not in str(signed_in)  # never a session token


def test_signing_out_everywhere_is_recorded(console: Console, tables: Tables) -> None:
    owner, admin = person(console), person(console)
    store_call(tables, "add_member", owner.org_id, admin.user_id, "admin")
    answer = admin.call("POST", "/api/auth/sign-out-everywhere")
    assert answer.status_code == 200, answer.text
    (entry,) = entries(owner, owner.org_id, "sign_out_everywhere")
    assert entry["actor"] == admin.user_id and entry["ip"] == "127.0.0.1"
    # Refused without the CSRF token: nothing recorded.
    other = person(console)
    store_call(tables, "add_member", owner.org_id, other.user_id, "member")
    assert other.call("POST", "/api/auth/sign-out-everywhere", csrf=False).status_code == 403
    assert len(entries(owner, owner.org_id, "sign_out_everywhere")) == 1
