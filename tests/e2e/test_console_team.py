"""The team through the console, over real HTTP against DynamoDB Local: new organizations,
roles, removals and leaving, invitations by email (end to end through the outbox's .eml
files), the last owner (also under concurrent requests). Every route is also tried with
another organization's ids, with each role, without CSRF and with hostile bodies."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from dynoyard.console.app import create_console_app
from dynoyard.domain.email import Email
from dynoyard.domain.team import INVITATIONS_PER_ORG_PER_DAY, ORGS_PER_USER
from tests.conftest import Tables, ThreadedServer
from tests.e2e.test_console_auth import COOKIE, Clock, Console, Mailbox, serve_console, settings_for
from tests.e2e.test_console_keys import Person, error_code, person, store_call

TOKEN = re.compile(r"invitations/accept\?token=([A-Za-z0-9_-]+)")


@pytest.fixture(scope="module")
def console(tables: Tables) -> Iterator[Console]:
    yield from serve_console(tables)


def team(console: Console, tables: Tables, *roles: str) -> tuple[Person, list[Person]]:
    """An owner and one new person per role given, members of the owner's organization."""
    owner = person(console)
    others = []
    for role in roles:
        someone = person(console)
        store_call(tables, "add_member", owner.org_id, someone.user_id, role)
        others.append(someone)
    return owner, others


def roles_of(viewer: Person, org_id: str) -> dict[str, str]:
    answer = viewer.call("GET", f"/api/orgs/{org_id}/members")
    assert answer.status_code == 200, answer.text
    return {m["user_id"]: m["role"] for m in answer.json()["members"]}


def audit_of(owner: Person, org_id: str) -> list[dict[str, Any]]:
    answer = owner.call("GET", f"/api/orgs/{org_id}/audit")
    assert answer.status_code == 200, answer.text
    return list(answer.json()["entries"])


def invite(inviter: Person, org_id: str, email: str, role: str = "member") -> httpx.Response:
    return inviter.call(
        "POST", f"/api/orgs/{org_id}/invitations", json={"email": email, "role": role}
    )


def token_in(message: Email) -> str:
    found = TOKEN.search(message.text)
    assert found, message.text
    return found.group(1)


def accept(who: Person, token: str, csrf: bool = True) -> httpx.Response:
    return who.call("POST", "/api/invitations/accept", csrf=csrf, json={"token": token})


def signed_up(console: Console, email: str) -> Person:
    return Person(console, console.sign_up(email)[0])


def owner_count(tables: Tables, org_id: str) -> int:
    item = tables.client.get_item(
        TableName=tables.accounts,
        Key={"pk": {"S": f"ORG#{org_id}"}, "sk": {"S": "META"}},
        ConsistentRead=True,
    )["Item"]
    return int(item["owner_count"]["N"])


def at_once(calls: list[tuple[Person, str, str, dict[str, Any] | None]]) -> list[httpx.Response]:
    """The calls sent together (each on its own connection, released by one barrier)."""
    barrier = threading.Barrier(len(calls))

    def send(call: tuple[Person, str, str, dict[str, Any] | None]) -> httpx.Response:
        who, method, path, body = call
        headers = {"cookie": f"{COOKIE}={who.session}", "x-csrf-token": who.csrf}
        with httpx.Client(base_url=who.console.base_url, timeout=20) as http:
            barrier.wait()
            return http.request(method, path, headers=headers, json=body)

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(send, calls))


# -- new organizations -------------------------------------------------------------------


def test_a_user_creates_another_organization_and_owns_it(console: Console) -> None:
    ada = person(console)
    answer = ada.call("POST", "/api/orgs", json={"name": "  Side project  "})
    assert answer.status_code == 201, answer.text
    created = answer.json()
    assert created["name"] == "Side project" and created["role"] == "owner"
    orgs = {o["org_id"]: o for o in console.me(ada.session)["orgs"]}
    assert set(orgs) == {ada.org_id, created["org_id"]}
    assert orgs[created["org_id"]] == {**created}
    assert roles_of(ada, created["org_id"]) == {ada.user_id: "owner"}
    (entry,) = audit_of(ada, created["org_id"])
    assert entry["action"] == "org_created" and entry["target"] == created["org_id"]
    assert entry["actor"] == ada.user_id and entry["details"] == {"name": "Side project"}
    # Its owner is its last owner, like any other's.
    answer = ada.call("DELETE", f"/api/orgs/{created['org_id']}/members/{ada.user_id}")
    assert answer.status_code == 409 and error_code(answer) == "last_owner"


@pytest.mark.parametrize(
    "body",
    [{}, {"name": ""}, {"name": "   "}, {"name": 5}, {"name": None}, {"name": "x" * 101},
     {"name": "a\nb"}, {"name": "ok", "owner": "someone"}, [], "name"],
)  # fmt: skip
def test_hostile_org_bodies_are_400(console: Console, body: Any) -> None:
    ada = person(console)
    answer = ada.call("POST", "/api/orgs", json=body)
    assert answer.status_code == 400, answer.text
    assert len(console.me(ada.session)["orgs"]) == 1


def test_creating_an_org_needs_a_session_and_csrf(console: Console) -> None:
    ada = person(console)
    assert console.request("POST", "/api/orgs", json={"name": "x"}).status_code == 401
    answer = ada.call("POST", "/api/orgs", csrf=False, json={"name": "x"})
    assert answer.status_code == 403 and error_code(answer) == "csrf_failed"
    assert len(console.me(ada.session)["orgs"]) == 1


def test_at_most_the_cap_of_orgs_per_user_even_all_at_once(console: Console) -> None:
    ada = person(console)
    tries = ORGS_PER_USER + 5
    answers = at_once([(ada, "POST", "/api/orgs", {"name": f"org {i}"}) for i in range(tries)])
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] * ORGS_PER_USER + [409] * 5, statuses
    assert {error_code(a) for a in answers if a.status_code == 409} == {"too_many_orgs"}
    assert len(console.me(ada.session)["orgs"]) == ORGS_PER_USER + 1  # + the sign-up's


# -- roles -------------------------------------------------------------------------------


def test_owners_and_admins_change_roles_within_their_power(
    console: Console, tables: Tables
) -> None:
    owner, (admin, member, other) = team(console, tables, "admin", "member", "member")
    path = f"/api/orgs/{owner.org_id}/members"
    # A member changes nobody's role, not even their own.
    for target in (member, other, owner):
        answer = member.call("PATCH", f"{path}/{target.user_id}", json={"role": "admin"})
        assert answer.status_code == 403 and error_code(answer) == "insufficient_role"
    # An admin raises a member to admin, never anyone to owner, and never touches an owner.
    answer = admin.call("PATCH", f"{path}/{member.user_id}", json={"role": "admin"})
    assert answer.status_code == 200 and answer.json() == {
        "user_id": member.user_id,
        "role": "admin",
    }
    for target, role in ((other, "owner"), (admin, "owner"), (owner, "admin"), (owner, "member")):
        answer = admin.call("PATCH", f"{path}/{target.user_id}", json={"role": role})
        assert answer.status_code == 403 and error_code(answer) == "insufficient_role", role
    assert admin.call("PATCH", f"{path}/{member.user_id}", json={"role": "member"}).is_success
    # An owner makes an owner; two owners, then either may be demoted.
    assert owner.call("PATCH", f"{path}/{other.user_id}", json={"role": "owner"}).is_success
    assert owner_count(tables, owner.org_id) == 2
    assert roles_of(member, owner.org_id) == {
        owner.user_id: "owner",
        admin.user_id: "admin",
        member.user_id: "member",
        other.user_id: "owner",
    }
    assert other.call("PATCH", f"{path}/{owner.user_id}", json={"role": "admin"}).is_success
    assert owner_count(tables, owner.org_id) == 1
    # The same role again changes nothing and records nothing.
    before = len(audit_of(other, owner.org_id))
    same = other.call("PATCH", f"{path}/{admin.user_id}", json={"role": "admin"})
    assert same.status_code == 200 and len(audit_of(other, owner.org_id)) == before
    changes = [
        (e["target"], e["details"]["from_role"], e["details"]["to_role"], e["actor"])
        for e in audit_of(other, owner.org_id)
        if e["action"] == "member_role_changed"
    ]
    assert changes == [
        (owner.user_id, "owner", "admin", other.user_id),
        (other.user_id, "member", "owner", owner.user_id),
        (member.user_id, "admin", "member", admin.user_id),
        (member.user_id, "member", "admin", admin.user_id),
    ]


def test_the_last_owner_can_not_be_demoted_removed_or_leave(
    console: Console, tables: Tables
) -> None:
    owner, (admin,) = team(console, tables, "admin")
    me = f"/api/orgs/{owner.org_id}/members/{owner.user_id}"
    for role in ("admin", "member"):
        answer = owner.call("PATCH", me, json={"role": role})
        assert answer.status_code == 409 and error_code(answer) == "last_owner"
    answer = owner.call("DELETE", me)
    assert answer.status_code == 409 and error_code(answer) == "last_owner"
    answer = admin.call("DELETE", me)  # an admin may not remove an owner at all
    assert answer.status_code == 403 and error_code(answer) == "insufficient_role"
    assert roles_of(owner, owner.org_id)[owner.user_id] == "owner"
    assert owner_count(tables, owner.org_id) == 1
    # With a second owner, the first may step down, and then the second is the last.
    path = f"/api/orgs/{owner.org_id}/members"
    assert owner.call("PATCH", f"{path}/{admin.user_id}", json={"role": "owner"}).is_success
    assert owner.call("PATCH", me, json={"role": "member"}).is_success
    answer = admin.call("DELETE", f"{path}/{admin.user_id}")
    assert answer.status_code == 409 and error_code(answer) == "last_owner"


@pytest.mark.parametrize("round_", range(4))
def test_two_owners_demoting_each_other_at_once_leave_one_owner(
    console: Console, tables: Tables, round_: int
) -> None:
    one, (two,) = team(console, tables, "owner")
    path = f"/api/orgs/{one.org_id}/members"
    answers = at_once(
        [
            (one, "PATCH", f"{path}/{two.user_id}", {"role": "admin"}),
            (two, "PATCH", f"{path}/{one.user_id}", {"role": "admin"}),
        ]
    )
    # The later one: refused by the last owner's rule or the role check in the transaction
    # (409), or, demoted already when it was authorized, as an admin (403).
    statuses = sorted(a.status_code for a in answers)
    assert statuses in ([200, 403], [200, 409]), [a.text for a in answers]
    refused = next(a for a in answers if a.status_code != 200)
    assert error_code(refused) in ("last_owner", "membership_changed", "insufficient_role")
    owners = [p for p in (one, two) if roles_of(one, one.org_id)[p.user_id] == "owner"]
    assert len(owners) == 1
    assert sorted(roles_of(one, one.org_id).values()) == ["admin", "owner"]
    assert owner_count(tables, one.org_id) == 1


def test_two_owners_leaving_or_removing_each_other_at_once_leave_one(
    console: Console, tables: Tables
) -> None:
    for calls in ("leave", "remove"):
        one, (two,) = team(console, tables, "owner")
        path = f"/api/orgs/{one.org_id}/members"
        targets = (one, two) if calls == "leave" else (two, one)
        answers = at_once(
            [
                (one, "DELETE", f"{path}/{targets[0].user_id}", None),
                (two, "DELETE", f"{path}/{targets[1].user_id}", None),
            ]
        )
        # The later one: the last owner (409), or, removed already, no member any more (404).
        statuses = sorted(a.status_code for a in answers)
        assert statuses in ([200, 404], [200, 409]), [a.text for a in answers]
        (stayed,) = [p for p in (one, two) if p.call("GET", path).status_code == 200]
        assert roles_of(stayed, one.org_id) == {stayed.user_id: "owner"}
        assert owner_count(tables, one.org_id) == 1


# -- removing and leaving ----------------------------------------------------------------


def test_owners_and_admins_remove_members_and_admins_only_owners_remove_owners(
    console: Console, tables: Tables
) -> None:
    owner, (admin, admin2, member, member2, owner2) = team(
        console, tables, "admin", "admin", "member", "member", "owner"
    )
    path = f"/api/orgs/{owner.org_id}/members"
    answer = member.call("DELETE", f"{path}/{member2.user_id}")
    assert answer.status_code == 403 and error_code(answer) == "insufficient_role"
    answer = admin.call("DELETE", f"{path}/{owner2.user_id}")
    assert answer.status_code == 403 and error_code(answer) == "insufficient_role"
    answer = admin.call("DELETE", f"{path}/{member2.user_id}")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "user_id": member2.user_id,
        "role": "member",
        "removed": True,
        "left": False,
    }
    assert admin.call("DELETE", f"{path}/{admin2.user_id}").status_code == 200
    assert owner.call("DELETE", f"{path}/{owner2.user_id}").status_code == 200
    assert owner_count(tables, owner.org_id) == 1
    # The removed lose the organization at once, and removing twice is 404.
    for gone in (member2, admin2, owner2):
        answer = gone.call("GET", f"/api/orgs/{owner.org_id}/keys")
        assert answer.status_code == 404 and error_code(answer) == "org_not_found"
        assert owner.org_id not in {o["org_id"] for o in console.me(gone.session)["orgs"]}
    answer = owner.call("DELETE", f"{path}/{member2.user_id}")
    assert answer.status_code == 404 and error_code(answer) == "member_not_found"
    removed = [
        (e["target"], e["details"]["role"])
        for e in audit_of(owner, owner.org_id)
        if e["action"] == "member_removed"
    ]
    assert sorted(removed) == sorted(
        [(member2.user_id, "member"), (admin2.user_id, "admin"), (owner2.user_id, "owner")]
    )


def test_any_member_may_leave(console: Console, tables: Tables) -> None:
    owner, (admin, member, owner2) = team(console, tables, "admin", "member", "owner")
    path = f"/api/orgs/{owner.org_id}/members"
    for leaver, role in ((member, "member"), (admin, "admin"), (owner, "owner")):
        answer = leaver.call("DELETE", f"{path}/{leaver.user_id}")
        assert answer.status_code == 200, answer.text
        assert answer.json()["left"] is True and answer.json()["role"] == role
        assert owner.org_id not in {o["org_id"] for o in console.me(leaver.session)["orgs"]}
        assert leaver.call("GET", path).status_code == 404
    assert roles_of(owner2, owner.org_id) == {owner2.user_id: "owner"}
    left = [e["actor"] for e in audit_of(owner2, owner.org_id) if e["action"] == "member_left"]
    assert sorted(left) == sorted([member.user_id, admin.user_id, owner.user_id])


def test_leaving_and_changes_need_csrf(console: Console, tables: Tables) -> None:
    owner, (member,) = team(console, tables, "member")
    path = f"/api/orgs/{owner.org_id}/members/{member.user_id}"
    for who, method, body in (
        (member, "DELETE", None),
        (owner, "DELETE", None),
        (owner, "PATCH", {"role": "admin"}),
    ):
        answer = who.call(method, path, csrf=False, json=body)
        assert answer.status_code == 403 and error_code(answer) == "csrf_failed"
    assert roles_of(owner, owner.org_id)[member.user_id] == "member"
    assert console.request("DELETE", path).status_code == 401


@pytest.mark.parametrize(
    "body",
    [{}, {"role": "god"}, {"role": "OWNER"}, {"role": 3}, {"role": None}, {"role": ["owner"]},
     {"role": "x" * 10_000}, {"role": "admin", "user_id": "usr_0000000000000000"}, [], "admin"],
)  # fmt: skip
def test_hostile_role_bodies_are_400(console: Console, tables: Tables, body: Any) -> None:
    owner, (member,) = team(console, tables, "member")
    answer = owner.call("PATCH", f"/api/orgs/{owner.org_id}/members/{member.user_id}", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert roles_of(owner, owner.org_id)[member.user_id] == "member"


@pytest.mark.parametrize(
    "user_id", ["usr_0000000000000000", "usr_ZZ", "x" * 2000, "%00", "USER%23x", "usr_" + "a" * 17]
)
def test_unknown_and_malformed_member_ids_are_404(console: Console, user_id: str) -> None:
    owner = person(console)
    path = f"/api/orgs/{owner.org_id}/members/{user_id}"
    for method, body in (("PATCH", {"role": "admin"}), ("DELETE", None)):
        answer = owner.call(method, path, json=body)
        assert answer.status_code == 404 and error_code(answer) == "member_not_found", answer.text


def test_another_organizations_ids_are_404_on_every_team_route(
    console: Console, tables: Tables
) -> None:
    alice, (bob,) = team(console, tables, "member")
    mallory = person(console)
    invitation = invite(alice, alice.org_id, f"i-{uuid.uuid4().hex[:8]}@example.com").json()
    theirs = f"/api/orgs/{alice.org_id}"
    for method, path, body in (
        ("GET", f"{theirs}/members", None),
        ("PATCH", f"{theirs}/members/{bob.user_id}", {"role": "admin"}),
        ("DELETE", f"{theirs}/members/{bob.user_id}", None),
        ("POST", f"{theirs}/invitations", {"email": "x@example.com", "role": "member"}),
        ("GET", f"{theirs}/invitations", None),
        ("DELETE", f"{theirs}/invitations/{invitation['invitation_id']}", None),
    ):
        answer = mallory.call(method, path, json=body)
        assert answer.status_code == 404 and error_code(answer) == "org_not_found", (method, path)
    # Alice's member and invitation ids through Mallory's own organization: not found.
    mine = f"/api/orgs/{mallory.org_id}"
    answer = mallory.call("PATCH", f"{mine}/members/{bob.user_id}", json={"role": "owner"})
    assert answer.status_code == 404 and error_code(answer) == "member_not_found"
    answer = mallory.call("DELETE", f"{mine}/members/{alice.user_id}")
    assert answer.status_code == 404 and error_code(answer) == "member_not_found"
    answer = mallory.call("DELETE", f"{mine}/invitations/{invitation['invitation_id']}")
    assert answer.status_code == 404 and error_code(answer) == "invitation_not_found"
    assert roles_of(alice, alice.org_id) == {alice.user_id: "owner", bob.user_id: "member"}
    pending = alice.call("GET", f"{theirs}/invitations").json()["invitations"]
    assert [i["invitation_id"] for i in pending] == [invitation["invitation_id"]]


# -- invitations -------------------------------------------------------------------------


def test_an_invitation_end_to_end_through_the_outbox(
    tables: Tables, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("RESEND_API_KEY", "AWS_LAMBDA_FUNCTION_NAME"):
        monkeypatch.delenv(variable, raising=False)
    outbox = tmp_path / "outbox"
    app = create_console_app(settings_for(tables, outbox_dir=outbox))
    with ThreadedServer(app) as server:
        console = Console(
            f"http://127.0.0.1:{server.port}", OutboxMailbox(outbox), Clock(), settings_for(tables)
        )
        owner = person(console)
        owner.call("PATCH", "/api/me", json={"name": "Grace"})
        address = f"New.Person-{uuid.uuid4().hex[:8]}@Example.com"
        answer = invite(owner, owner.org_id, address, "admin")
        assert answer.status_code == 201, answer.text
        made = answer.json()
        assert made["email"] == address and made["role"] == "admin" and made["replaced"] is None
        assert made["invited_by"] == owner.user_id and made["invitation_id"].startswith("inv_")
        assert made["expires_at"] - console.clock() > 7 * 86_400 - 60
        assert "token" not in str(made)

        (written,) = [m for m in outbox.glob("*.eml") if address in m.read_text()]
        message = BytesParser(policy=policy.default).parsebytes(written.read_bytes())
        assert message["To"] == address
        assert str(message["Subject"]).startswith("Grace invited you to")
        text = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
        assert "7 days" in text
        token = TOKEN.search(text).group(1)  # type: ignore[union-attr]
        assert f"http://127.0.0.1:8080/console/invitations/accept?token={token}" in text
        dump = str(tables.scan_table(tables.accounts))
        assert token not in dump  # only its SHA-256 is kept

        invitee = signed_up(console, address.lower())  # the address, whatever its case
        answer = accept(invitee, token)
        assert answer.status_code == 200, answer.text
        assert answer.json()["org_id"] == owner.org_id and answer.json()["role"] == "admin"
        orgs = {o["org_id"]: o["role"] for o in console.me(invitee.session)["orgs"]}
        assert orgs[owner.org_id] == "admin"
        assert roles_of(invitee, owner.org_id)[invitee.user_id] == "admin"
        assert owner.call("GET", f"/api/orgs/{owner.org_id}/invitations").json() == {
            "invitations": []
        }
        replay = accept(invitee, token)
        assert replay.status_code == 400 and error_code(replay) == "invitation_invalid"

        entries = audit_of(owner, owner.org_id)
        joined, invited = entries[0], entries[1]
        assert invited["action"] == "member_invited"
        assert invited["target"] == made["invitation_id"] and invited["details"]["role"] == "admin"
        assert joined["action"] == "member_joined" and joined["target"] == invitee.user_id
        assert joined["details"] == {"role": "admin", "invitation_id": made["invitation_id"]}
        assert address.lower() not in str(entries).lower()  # no address in the audit log


class OutboxMailbox(Mailbox):
    """What the outbox holds, as Mailbox shows it (for `person()`'s sign-up links)."""

    def __init__(self, outbox: Path) -> None:
        super().__init__()
        self.outbox = outbox

    def last_to(self, address: str) -> Email:
        found = []
        for path in sorted(self.outbox.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns):
            parsed = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
            if parsed["To"] == address:
                body = parsed.get_body(preferencelist=("plain",))
                found.append(Email(address, str(parsed["Subject"]), body.get_content()))  # type: ignore[union-attr]
        return found[-1]


def test_the_invitation_is_written_in_the_invitees_language(
    console: Console, tables: Tables
) -> None:
    owner = person(console)
    chinese = person(console)
    chinese.call("PATCH", "/api/me", json={"language": "zh-CN"})
    address = console.me(chinese.session)["user"]["email"]
    assert invite(owner, owner.org_id, address).status_code == 201
    message = console.mailbox.last_to(address)
    assert "邀请" in message.subject and "7 天内有效" in message.text
    stranger = f"s-{uuid.uuid4().hex[:8]}@example.com"  # no account: the inviter's language
    owner.call("PATCH", "/api/me", json={"language": "zh-CN"})
    assert invite(owner, owner.org_id, stranger).status_code == 201
    assert "邀请" in console.mailbox.last_to(stranger).subject


def test_who_may_invite_whom_and_revoke(console: Console, tables: Tables) -> None:
    owner, (admin, member) = team(console, tables, "admin", "member")
    org = f"/api/orgs/{owner.org_id}/invitations"

    def address() -> str:
        return f"w-{uuid.uuid4().hex[:8]}@example.com"

    answer = invite(member, owner.org_id, address())
    assert answer.status_code == 403 and error_code(answer) == "insufficient_role"
    assert member.call("GET", org).status_code == 403
    answer = invite(admin, owner.org_id, address(), "owner")
    assert answer.status_code == 403 and error_code(answer) == "insufficient_role"
    by_admin = invite(admin, owner.org_id, address(), "admin")
    assert by_admin.status_code == 201, by_admin.text
    to_own = invite(owner, owner.org_id, address(), "owner")
    assert to_own.status_code == 201
    listed = admin.call("GET", org).json()["invitations"]
    assert {i["invitation_id"] for i in listed} == {
        by_admin.json()["invitation_id"],
        to_own.json()["invitation_id"],
    }
    answer = member.call("DELETE", f"{org}/{by_admin.json()['invitation_id']}")
    assert answer.status_code == 403
    answer = admin.call("DELETE", f"{org}/{to_own.json()['invitation_id']}")
    assert answer.status_code == 403 and error_code(answer) == "insufficient_role"
    answer = admin.call("DELETE", f"{org}/{by_admin.json()['invitation_id']}", csrf=False)
    assert answer.status_code == 403 and error_code(answer) == "csrf_failed"
    answer = admin.call("DELETE", f"{org}/{by_admin.json()['invitation_id']}")
    assert answer.status_code == 200 and answer.json()["revoked"] is True
    assert owner.call("DELETE", f"{org}/{to_own.json()['invitation_id']}").status_code == 200
    again = owner.call("DELETE", f"{org}/{to_own.json()['invitation_id']}")
    assert again.status_code == 404 and error_code(again) == "invitation_not_found"
    assert owner.call("GET", org).json() == {"invitations": []}
    answer = owner.call("POST", org, csrf=False, json={"email": address(), "role": "member"})
    assert answer.status_code == 403 and error_code(answer) == "csrf_failed"
    actions = [e["action"] for e in audit_of(owner, owner.org_id)]
    assert actions.count("member_invited") == 2 and actions.count("invitation_revoked") == 2


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"email": 5, "role": "member"}, "email"),
        ({"email": "not an address", "role": "member"}, "email"),
        ({"email": "a@b", "role": "member"}, "email"),
        ({"email": "x" * 250 + "@example.com", "role": "member"}, "email"),
        ({"email": "a\n@example.com", "role": "member"}, "email"),
        ({"email": "two@@example.com", "role": "member"}, "email"),
        ({"email": None, "role": "member"}, "email"),
        ({"role": "member"}, "email"),
        ({"email": "ok@example.com", "role": "superuser"}, "role"),
        ({"email": "ok@example.com", "role": "Owner"}, "role"),
        ({"email": "ok@example.com", "role": 1}, "role"),
        ({"email": "ok@example.com", "role": "x" * 5000}, "role"),
        ({"email": "ok@example.com", "role": "member", "org_id": "org_0"}, "org_id"),
    ],
)
def test_hostile_invitation_bodies_are_400_naming_the_field(
    console: Console, body: dict[str, Any], param: str
) -> None:
    owner = person(console)
    sent = len(console.mailbox.sent)
    answer = owner.call("POST", f"/api/orgs/{owner.org_id}/invitations", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param
    assert len(console.mailbox.sent) == sent
    assert owner.call("GET", f"/api/orgs/{owner.org_id}/invitations").json()["invitations"] == []


@pytest.mark.parametrize(
    "invitation_id", ["inv_0000000000000000", "inv_", "x" * 3000, "INVITE%23x", "%00"]
)
def test_unknown_and_malformed_invitation_ids_are_404(console: Console, invitation_id: str) -> None:
    owner = person(console)
    answer = owner.call("DELETE", f"/api/orgs/{owner.org_id}/invitations/{invitation_id}")
    assert answer.status_code == 404 and error_code(answer) == "invitation_not_found"


def test_an_expired_invitation_is_refused_and_not_listed(console: Console) -> None:
    owner = person(console)
    address = f"e-{uuid.uuid4().hex[:8]}@example.com"
    assert invite(owner, owner.org_id, address).status_code == 201
    token = token_in(console.mailbox.last_to(address))
    invitee = signed_up(console, address)
    # Four days on, the sessions are used (renewed); three more, the invitation is 7 days
    # and a second old.
    console.clock.offset += 4 * 86_400
    try:
        console.me(invitee.session), console.me(owner.session)
        console.clock.offset += 3 * 86_400 + 1
        answer = accept(invitee, token)
        listed = owner.call("GET", f"/api/orgs/{owner.org_id}/invitations").json()
    finally:
        console.clock.offset -= 7 * 86_400 + 1
    assert answer.status_code == 400 and error_code(answer) == "invitation_invalid"
    assert listed == {"invitations": []}
    assert owner.org_id not in {o["org_id"] for o in console.me(invitee.session)["orgs"]}


def test_a_revoked_invitation_is_refused(console: Console) -> None:
    owner = person(console)
    address = f"r-{uuid.uuid4().hex[:8]}@example.com"
    made = invite(owner, owner.org_id, address).json()
    token = token_in(console.mailbox.last_to(address))
    path = f"/api/orgs/{owner.org_id}/invitations/{made['invitation_id']}"
    assert owner.call("DELETE", path).status_code == 200
    answer = accept(signed_up(console, address), token)
    assert answer.status_code == 400 and error_code(answer) == "invitation_invalid"


def test_inviting_an_address_again_replaces_its_pending_invitation(console: Console) -> None:
    owner = person(console)
    address = f"a-{uuid.uuid4().hex[:8]}@example.com"
    first = invite(owner, owner.org_id, address).json()
    old_token = token_in(console.mailbox.last_to(address))
    second = invite(owner, owner.org_id, address.upper(), "admin").json()
    new_token = token_in(console.mailbox.last_to(address.upper()))
    assert second["replaced"] == first["invitation_id"]
    listed = owner.call("GET", f"/api/orgs/{owner.org_id}/invitations").json()["invitations"]
    assert [(i["invitation_id"], i["role"]) for i in listed] == [(second["invitation_id"], "admin")]
    invitee = signed_up(console, address)
    answer = accept(invitee, old_token)
    assert answer.status_code == 400 and error_code(answer) == "invitation_invalid"
    assert accept(invitee, new_token).json()["role"] == "admin"
    (entry,) = [
        e
        for e in audit_of(owner, owner.org_id)
        if e["action"] == "member_invited" and e["target"] == second["invitation_id"]
    ]
    assert entry["details"] == {"role": "admin", "replaces": first["invitation_id"]}


def test_an_invitation_is_accepted_once_even_by_concurrent_requests(console: Console) -> None:
    owner = person(console)
    address = f"c-{uuid.uuid4().hex[:8]}@example.com"
    invite(owner, owner.org_id, address)
    token = token_in(console.mailbox.last_to(address))
    invitee = signed_up(console, address)
    answers = at_once([(invitee, "POST", "/api/invitations/accept", {"token": token})] * 6)
    statuses = sorted(a.status_code for a in answers)
    assert statuses[0] == 200 and statuses.count(200) == 1, [a.text for a in answers]
    assert {error_code(a) for a in answers if a.status_code != 200} <= {
        "invitation_invalid",
        "already_member",
    }
    joined = [e for e in audit_of(owner, owner.org_id) if e["action"] == "member_joined"]
    assert len(joined) == 1


def test_only_the_invited_verified_address_may_accept(console: Console, tables: Tables) -> None:
    owner = person(console)
    address = f"m-{uuid.uuid4().hex[:8]}@example.com"
    invite(owner, owner.org_id, address)
    token = token_in(console.mailbox.last_to(address))
    someone_else = person(console)
    answer = accept(someone_else, token)
    assert answer.status_code == 403 and error_code(answer) == "invitation_email_mismatch"
    # An account with the address that never proved it (e.g. from an OAuth provider).
    import hashlib
    import secrets

    user_id = "usr_" + secrets.token_hex(8)
    store_call(tables, "create_user", user_id, address, address, "U", "en", False, None)
    session = secrets.token_urlsafe(32)
    store_call(
        tables, "create_session", hashlib.sha256(session.encode()).hexdigest(), user_id, 0, 900
    )
    unverified = Person(console, session)
    answer = accept(unverified, token)
    assert answer.status_code == 403 and error_code(answer) == "email_not_verified"
    answer = accept(unverified, token, csrf=False)
    assert answer.status_code == 403 and error_code(answer) == "csrf_failed"
    assert (
        console.request("POST", "/api/invitations/accept", json={"token": token}).status_code == 401
    )
    # None of this used the invitation up: the address's owner, once verified, joins.
    console.request("POST", "/api/auth/email-link", json={"email": address})
    verified = Person(console, console.follow(address))
    assert accept(verified, token).status_code == 200
    assert roles_of(owner, owner.org_id)[user_id] == "member"


def test_members_are_not_invited_and_do_not_join_twice(console: Console, tables: Tables) -> None:
    owner, (member,) = team(console, tables, "member")
    member_address = console.me(member.session)["user"]["email"]
    answer = invite(owner, owner.org_id, member_address.upper())
    assert answer.status_code == 409 and error_code(answer) == "already_member"
    answer = invite(owner, owner.org_id, console.me(owner.session)["user"]["email"])
    assert answer.status_code == 409 and error_code(answer) == "already_member"
    # Invited, then made a member another way before accepting: 409, the invitation stays.
    address = f"t-{uuid.uuid4().hex[:8]}@example.com"
    invite(owner, owner.org_id, address)
    token = token_in(console.mailbox.last_to(address))
    invitee = signed_up(console, address)
    store_call(tables, "add_member", owner.org_id, invitee.user_id, "member")
    answer = accept(invitee, token)
    assert answer.status_code == 409 and error_code(answer) == "already_member"
    assert (
        len(owner.call("GET", f"/api/orgs/{owner.org_id}/invitations").json()["invitations"]) == 1
    )


def test_an_owner_invitation_makes_an_owner_who_counts(console: Console, tables: Tables) -> None:
    owner = person(console)
    address = f"o-{uuid.uuid4().hex[:8]}@example.com"
    invite(owner, owner.org_id, address, "owner")
    token = token_in(console.mailbox.last_to(address))
    invitee = signed_up(console, address)
    assert accept(invitee, token).json()["role"] == "owner"
    assert owner_count(tables, owner.org_id) == 2
    me = f"/api/orgs/{owner.org_id}/members/{owner.user_id}"
    assert owner.call("DELETE", me).status_code == 200  # no longer the last owner


@pytest.mark.parametrize(
    "body", [{}, {"token": 5}, {"token": ""}, {"token": "x" * 129}, {"token": None},
             {"token": "nope"}, {"token": "a" * 43, "org_id": "org_0"}, [], "token"],
)  # fmt: skip
def test_hostile_accept_bodies_are_400(console: Console, body: Any) -> None:
    someone = person(console)
    answer = someone.call("POST", "/api/invitations/accept", json=body)
    assert answer.status_code == 400, answer.text
    assert len(console.me(someone.session)["orgs"]) == 1


def test_an_email_provider_failure_is_503_and_leaves_no_invitation(console: Console) -> None:
    owner = person(console)
    console.mailbox.failing = True
    try:
        answer = invite(owner, owner.org_id, f"f-{uuid.uuid4().hex[:8]}@example.com")
    finally:
        console.mailbox.failing = False
    assert answer.status_code == 503 and error_code(answer) == "email_unavailable"
    assert owner.call("GET", f"/api/orgs/{owner.org_id}/invitations").json() == {"invitations": []}
    assert not [e for e in audit_of(owner, owner.org_id) if e["action"] == "member_invited"]


def test_at_most_the_daily_invitations_of_an_org(console: Console) -> None:
    owner = person(console)
    for n in range(INVITATIONS_PER_ORG_PER_DAY):
        answer = invite(owner, owner.org_id, f"d{n}-{uuid.uuid4().hex[:6]}@example.com")
        assert answer.status_code == 201, (n, answer.text)
    sent = len(console.mailbox.sent)
    answer = invite(owner, owner.org_id, f"late-{uuid.uuid4().hex[:6]}@example.com")
    assert answer.status_code == 429 and error_code(answer) == "too_many_invitations"
    assert 0 < int(answer.headers["retry-after"]) <= 86_400
    assert len(console.mailbox.sent) == sent
    # Another organization's invitations are counted apart.
    other = person(console)
    assert invite(other, other.org_id, f"x-{uuid.uuid4().hex[:6]}@example.com").status_code == 201
