"""The team's rules (domain/team.py) and their store (console_store.py) against DynamoDB
Local: the permission table's team actions, who may assign which role to whom, the owner
count under concurrent writes that bypass the console's checks, organizations made before
the count was kept, and invitations found by the invited address."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from dynoyard.adapters.dynamo.client import DynamoClient
from dynoyard.adapters.dynamo.console_store import ConsoleStore
from dynoyard.domain.administration import OPERATOR, Actor, NotAllowed, can
from dynoyard.domain.team import (
    INVITATION_SECONDS,
    ROLES,
    AlreadyMember,
    InvalidRole,
    Invitation,
    LastOwner,
    MembershipChanged,
    UnknownInvitation,
    check_role,
    may_change_role,
    may_invite,
    may_remove,
    new_invitation_id,
    new_invitation_token,
)
from tests.conftest import Tables

T = TypeVar("T")
MEMBER, ADMIN, OWNER = Actor("member", "u1"), Actor("admin", "u2"), Actor("owner", "u3")


# -- the rules (pure) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actor", "action", "allowed"),
    [
        (OWNER, "manage_members", True),
        (ADMIN, "manage_members", True),
        (MEMBER, "manage_members", False),
        (OWNER, "manage_owners", True),
        (ADMIN, "manage_owners", False),
        (MEMBER, "manage_owners", False),
        (OWNER, "leave_org", True),
        (ADMIN, "leave_org", True),
        (MEMBER, "leave_org", True),
        (OPERATOR, "manage_owners", True),
        (Actor("nobody"), "leave_org", False),  # type: ignore[arg-type]
    ],
)
def test_given_a_role_when_asked_about_team_actions_then_the_table_answers(actor, action, allowed):
    assert can(actor, action) is allowed


def _allowed(rule: Callable[..., None], *args: Any) -> bool:
    try:
        rule(*args)
    except NotAllowed:
        return False
    return True


@pytest.mark.parametrize("actor", [MEMBER, ADMIN, OWNER], ids=lambda a: a.role)
def test_given_each_role_when_assigning_roles_then_no_one_rises_above_their_power(actor):
    manager = actor.role in ("owner", "admin")
    for current in ROLES:
        for new in ROLES:
            expected = manager and (actor.role == "owner" or "owner" not in (current, new))
            assert _allowed(may_change_role, actor, current, new) is expected, (
                current,
                new,
            )
    for role in ROLES:
        expected = manager and (actor.role == "owner" or role != "owner")
        assert _allowed(may_invite, actor, role) is expected, role
        assert _allowed(may_remove, actor, "someone_else", role) is expected, role
        assert _allowed(may_remove, actor, str(actor.user_id), role) is True  # leaving


@pytest.mark.parametrize(
    "value", ["OWNER", " owner", "owner ", "operator", "", None, 1, True, ["owner"], {"owner"}]
)
def test_given_anything_but_a_role_when_checked_then_invalid(value: Any):
    with pytest.raises(InvalidRole):
        check_role(value)


# -- the store --------------------------------------------------------------------------


def run(tables: Tables, use: Callable[[ConsoleStore], Awaitable[T]], clock: Any = None) -> T:
    async def go() -> T:
        store = ConsoleStore(
            DynamoClient(tables.env["AWS_ENDPOINT_URL_DYNAMODB"], "us-east-1"),
            tables.accounts,
            *([clock] if clock else []),
        )
        try:
            return await use(store)
        finally:
            await store._db.aclose()

    return asyncio.run(go())


def new_org(tables: Tables, *roles: str) -> tuple[str, list[str]]:
    org_id = tables.store.create_org(f"Team {uuid.uuid4().hex[:6]}", "t@example.com")
    users = ["usr_" + secrets.token_hex(8) for _ in roles]
    for user_id, role in zip(users, roles, strict=True):
        run(tables, lambda s, u=user_id, r=role: s.add_member(org_id, u, r))
    return org_id, users


def owner_count(tables: Tables, org_id: str) -> int | None:
    item = tables.client.get_item(
        TableName=tables.accounts,
        Key={"pk": {"S": f"ORG#{org_id}"}, "sk": {"S": "META"}},
        ConsistentRead=True,
    )["Item"]
    return int(item["owner_count"]["N"]) if "owner_count" in item else None


async def settle(*calls: Awaitable[None]) -> list[BaseException | None]:
    results = await asyncio.gather(*calls, return_exceptions=True)
    return [r if isinstance(r, BaseException) else None for r in results]


@pytest.mark.parametrize("round_", range(5))
def test_given_two_owners_when_each_demotes_the_other_at_once_then_one_owner_stays(
    tables: Tables, round_: int
):
    """Straight to the store, no role check in the transaction: the owner count alone
    keeps an owner."""
    org_id, (one, two) = new_org(tables, "owner", "owner")
    assert owner_count(tables, org_id) == 2
    outcomes = run(
        tables,
        lambda s: settle(
            s.change_role(org_id, two, "owner", "admin", None, None),
            s.change_role(org_id, one, "owner", "member", None, None),
        ),
    )
    assert sorted(type(o).__name__ for o in outcomes) == ["LastOwner", "NoneType"]
    members = run(tables, lambda s: s.org_members(org_id))
    assert [m.role for m in members].count("owner") == 1
    assert owner_count(tables, org_id) == 1


def test_given_owners_when_all_leave_at_once_then_exactly_one_stays(tables: Tables):
    org_id, owners = new_org(tables, "owner", "owner", "owner", "owner")
    outcomes = run(
        tables,
        lambda s: settle(*(s.remove_member(org_id, u, "owner", None, None) for u in owners)),
    )
    assert [type(o) for o in outcomes].count(LastOwner) == 1
    assert [o for o in outcomes if o is not None and not isinstance(o, LastOwner)] == []
    assert len(run(tables, lambda s: s.org_members(org_id))) == 1
    assert owner_count(tables, org_id) == 1


def test_given_an_actor_demoted_meanwhile_when_their_change_lands_then_refused(tables: Tables):
    org_id, (owner, admin, member) = new_org(tables, "owner", "admin", "member")
    run(tables, lambda s: s.change_role(org_id, admin, "admin", "member", owner, "owner"))
    with pytest.raises(MembershipChanged):  # the admin acts with the role they had
        run(tables, lambda s: s.remove_member(org_id, member, "member", admin, "admin"))
    with pytest.raises(MembershipChanged):  # the target's role is not what was read
        run(tables, lambda s: s.change_role(org_id, member, "admin", "owner", owner, "owner"))
    roles = {m.user_id: m.role for m in run(tables, lambda s: s.org_members(org_id))}
    assert roles == {owner: "owner", admin: "member", member: "member"}
    with pytest.raises(AlreadyMember):
        run(tables, lambda s: s.add_member(org_id, member, "owner"))
    assert owner_count(tables, org_id) == 1


def test_given_an_org_made_before_owners_were_counted_then_it_is_counted_once(tables: Tables):
    org_id, (one, two, three) = new_org(tables, "owner", "owner", "member")
    tables.client.update_item(
        TableName=tables.accounts,
        Key={"pk": {"S": f"ORG#{org_id}"}, "sk": {"S": "META"}},
        UpdateExpression="REMOVE owner_count",
    )
    run(tables, lambda s: s.change_role(org_id, three, "member", "owner", one, "owner"))
    assert owner_count(tables, org_id) == 3  # counted (2), then the new owner
    tables.client.update_item(
        TableName=tables.accounts,
        Key={"pk": {"S": f"ORG#{org_id}"}, "sk": {"S": "META"}},
        UpdateExpression="REMOVE owner_count",
    )
    for user_id in (one, two):
        run(tables, lambda s, u=user_id: s.remove_member(org_id, u, "owner", None, None))
    with pytest.raises(LastOwner):
        run(tables, lambda s: s.change_role(org_id, three, "owner", "admin", None, None))
    assert owner_count(tables, org_id) == 1


def invitation(org_id: str, email: str, role: str = "member", now: float = 0) -> Invitation:
    return Invitation(
        invitation_id=new_invitation_id(),
        org_id=org_id,
        email=email,
        role=check_role(role),
        invited_by="usr_0000000000000001",
        created_at="2026-01-01T00:00:00.000+00:00",
        expires_at=int(now) + INVITATION_SECONDS,
    )


def test_given_invitations_to_an_address_then_found_by_it_and_gone_once_used_or_revoked(
    tables: Tables,
):
    import time

    address = f"find-{uuid.uuid4().hex[:8]}@example.com"
    (org_a, _), (org_b, _) = new_org(tables, "owner"), new_org(tables, "owner")
    to_a, to_b = (
        invitation(org_a, address, now=time.time()),
        invitation(org_b, address, "admin", time.time()),
    )
    tokens = {}
    for made in (to_a, to_b):
        token, hashed = new_invitation_token()
        tokens[made.org_id] = (token, hashed)
        assert run(tables, lambda s, m=made, h=hashed: s.put_invitation(m, address, h)) is None
    found = sorted(run(tables, lambda s: s.invitations_to(address)))
    assert found == sorted([(org_a, to_a.invitation_id), (org_b, to_b.invitation_id)])
    run(tables, lambda s: s.revoke_invitation(org_a, to_a.invitation_id))
    with pytest.raises(UnknownInvitation):
        run(tables, lambda s: s.revoke_invitation(org_a, to_a.invitation_id))
    user = "usr_" + secrets.token_hex(8)
    run(tables, lambda s: s.accept_invitation(to_b, address, tokens[org_b][1], user))
    assert run(tables, lambda s: s.invitations_to(address)) == []
    with pytest.raises(UnknownInvitation):  # used once
        run(tables, lambda s: s.accept_invitation(to_b, address, tokens[org_b][1], "usr_other"))
    dump = str(tables.scan_table(tables.accounts))
    assert tokens[org_a][0] not in dump and tokens[org_b][0] not in dump
    assert f"INVITE#{tokens[org_b][1]}" not in dump  # its pointer went with it
