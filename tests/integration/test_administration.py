"""The account rules the CLI and the console share (domain/administration.py), against
DynamoDB Local: who may do what, and the rules every change passes."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from dynoyard.adapters.dynamo.client import DynamoClient
from dynoyard.adapters.dynamo.store import DynamoStore
from dynoyard.domain.administration import (
    OPERATOR,
    Actor,
    Administration,
    InvalidRequest,
    NotAllowed,
    can,
)
from tests.conftest import ddb_endpoint


def run(tables, use):
    async def go():
        store = DynamoStore(
            DynamoClient(ddb_endpoint(), "us-east-1"), tables.accounts, tables.usage
        )
        try:
            return await use(Administration(store, clock=lambda: 1_000_000.0))
        finally:
            await store.aclose()

    return asyncio.run(go())


MEMBER, ADMIN, OWNER = Actor("member", "u1"), Actor("admin", "u2"), Actor("owner", "u3")


@pytest.mark.parametrize(
    ("actor", "action", "allowed"),
    [
        (MEMBER, "read_usage", True),
        (MEMBER, "manage_keys", False),
        (MEMBER, "change_settings", False),
        (ADMIN, "manage_keys", True),
        (ADMIN, "grant_credits", False),
        (OWNER, "manage_members", True),
        (OWNER, "grant_credits", False),
        (OPERATOR, "grant_credits", True),
        (Actor("nobody"), "read_org", False),  # type: ignore[arg-type]
    ],
)
def test_given_a_role_when_asked_then_the_one_permission_table_answers(actor, action, allowed):
    assert can(actor, action) is allowed


def test_given_a_member_when_changing_anything_then_refused_and_nothing_changes(
    tables, make_account
):
    account = make_account("1")
    for use in (
        lambda a: a.create_key(MEMBER, account.org_id, "k"),
        lambda a: a.change_settings(MEMBER, account.org_id, cache_enabled=True),
        lambda a: a.grant_credits(ADMIN, account.org_id, Decimal("5"), "gift"),
    ):
        with pytest.raises(NotAllowed):
            run(tables, use)
    org = tables.store.get_org(account.org_id)
    assert (org.balance_usd, org.cache_enabled) == (Decimal("1"), False)


@pytest.mark.parametrize(
    ("amount", "reason", "fragment"),
    [
        ("0", "x", "not be zero"),
        ("-1", "", "needs a reason"),
        ("-1", "   ", "needs a reason"),
        ("1000001", "big", "at most"),
        ("-1000001", "big", "at most"),
    ],
)
def test_given_a_grant_that_breaks_a_rule_when_made_then_refused(
    tables, make_account, amount, reason, fragment
):
    account = make_account("1")
    with pytest.raises(InvalidRequest, match=fragment):
        run(tables, lambda a: a.grant_credits(OPERATOR, account.org_id, Decimal(amount), reason))
    assert account.balance() == Decimal("1")


def test_given_a_good_grant_then_it_moves_money_and_records_the_reason(tables, make_account):
    account = make_account("1")
    org = run(tables, lambda a: a.grant_credits(OPERATOR, account.org_id, Decimal("-0.25"), "fix"))
    assert org.balance_usd == Decimal("0.75")


@pytest.mark.parametrize("days", [0, -1, 3651, True, 2.5])
def test_given_a_key_expiry_out_of_bounds_when_creating_then_refused(tables, make_account, days):
    account = make_account("1")
    with pytest.raises(InvalidRequest, match="expiry"):
        run(tables, lambda a: a.create_key(ADMIN, account.org_id, "k", expires_in_days=days))


def test_given_an_admin_when_creating_a_key_with_expiry_then_it_expires_when_said(
    tables, make_account
):
    account = make_account("1")
    new = run(tables, lambda a: a.create_key(ADMIN, account.org_id, "ci", expires_in_days=30))
    key = tables.store.find_key(new.key_hash)
    assert key.expires_at == 1_000_000 + 30 * 86_400


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"cache_ttl_seconds": 59}, "TTL"),
        ({"cache_ttl_seconds": 86_401}, "TTL"),
        ({"rate_limit_rpm": -1}, "rpm"),
    ],
)
def test_given_settings_out_of_bounds_when_changed_then_refused(
    tables, make_account, settings, fragment
):
    account = make_account("1")
    with pytest.raises(InvalidRequest, match=fragment):
        run(tables, lambda a: a.change_settings(OWNER, account.org_id, **settings))
