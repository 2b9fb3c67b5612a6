"""The console's items against DynamoDB Local: links work once and expire, sessions expire,
renew and end everywhere, one user per address, memberships both ways, nothing secret
stored in the clear."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from typing import Any

import pytest

from dynoyard.adapters.dynamo.client import DynamoClient
from dynoyard.adapters.dynamo.console_store import ConsoleStore, EmailTaken
from tests.conftest import Tables


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tables: Tables, clock: Clock) -> ConsoleStore:
    return ConsoleStore(
        DynamoClient(tables.env["AWS_ENDPOINT_URL_DYNAMODB"], "us-east-1"), tables.accounts, clock
    )


def fresh(store: ConsoleStore, coroutine_factory: Any) -> Any:
    """Runs one store call on its own loop (the client's connections die with it)."""

    async def go() -> Any:
        try:
            return await coroutine_factory()
        finally:
            await store._db.aclose()

    return asyncio.run(go())


def test_a_link_is_consumed_once_even_by_concurrent_requests(store: ConsoleStore) -> None:
    token_hash = secrets.token_hex(32)
    fresh(store, lambda: store.put_link(token_hash, "a@example.com", "A", "sign_up", True, 900))

    async def race() -> list[Any]:
        try:
            return list(await asyncio.gather(*[store.consume_link(token_hash) for _ in range(8)]))
        finally:
            await store._db.aclose()

    results = asyncio.run(race())
    used = [r for r in results if r is not None]
    assert len(used) == 1
    assert used[0].email == "a@example.com" and used[0].purpose == "sign_up"
    assert used[0].terms_accepted is True
    assert fresh(store, lambda: store.consume_link(token_hash)) is None


def test_an_expired_link_is_refused_though_dynamodb_has_not_deleted_it(
    store: ConsoleStore, clock: Clock, tables: Tables
) -> None:
    token_hash = secrets.token_hex(32)
    fresh(store, lambda: store.put_link(token_hash, "b@example.com", "", "sign_in", False, 900))
    clock.now += 901
    assert fresh(store, lambda: store.consume_link(token_hash)) is None
    item = tables.client.get_item(
        TableName=tables.accounts, Key={"pk": {"S": f"LINK#{token_hash}"}, "sk": {"S": "LINK"}}
    )
    assert int(item["Item"]["expires_at"]["N"]) == int(clock.now) - 1  # there, and refused


def test_one_user_per_address(store: ConsoleStore) -> None:
    address = f"Someone.{uuid.uuid4().hex[:6]}@Example.com"
    user = fresh(
        store,
        lambda: store.create_user(
            "usr_" + secrets.token_hex(8), address, address.lower(), "S", "en", True, "t"
        ),
    )
    assert fresh(store, lambda: store.find_user_by_email(address.lower())) == user
    assert user.email == address and user.verified and user.sessions_epoch == 0
    with pytest.raises(EmailTaken):
        fresh(
            store,
            lambda: store.create_user(
                "usr_" + secrets.token_hex(8), address, address.lower(), "T", "en", True, "t"
            ),
        )
    assert fresh(store, lambda: store.find_user_by_email("nobody@example.com")) is None


def test_sessions_expire_renew_and_end_everywhere(store: ConsoleStore, clock: Clock) -> None:
    user_id = "usr_" + secrets.token_hex(8)
    address = f"s{uuid.uuid4().hex[:8]}@example.com"
    fresh(store, lambda: store.create_user(user_id, address, address, "", "en", True, None))
    one, two = secrets.token_hex(32), secrets.token_hex(32)
    fresh(store, lambda: store.create_session(one, user_id, 0, 3600))
    fresh(store, lambda: store.create_session(two, user_id, 0, 3600))
    clock.now += 3000
    assert fresh(store, lambda: store.renew_session(one, 3600)) == int(clock.now) + 3600
    clock.now += 1000  # two has expired, one was renewed
    assert fresh(store, lambda: store.get_session(two)) is None
    assert fresh(store, lambda: store.renew_session(two, 3600)) is None  # not brought back
    session = fresh(store, lambda: store.get_session(one))
    assert session is not None and session.user_id == user_id and session.epoch == 0
    fresh(store, lambda: store.end_all_sessions(user_id))
    user = fresh(store, lambda: store.get_user(user_id))
    assert user.sessions_epoch == 1  # a session of epoch 0 no longer matches
    fresh(store, lambda: store.delete_session(one))
    assert fresh(store, lambda: store.get_session(one)) is None


def test_memberships_are_kept_both_ways(store: ConsoleStore) -> None:
    user_id, org_id = "usr_" + secrets.token_hex(8), "org_" + secrets.token_hex(8)
    fresh(store, lambda: store.add_member(org_id, user_id, "admin"))
    membership = fresh(store, lambda: store.membership(org_id, user_id))
    assert membership is not None and membership.role == "admin"
    assert [m.org_id for m in fresh(store, lambda: store.user_orgs(user_id))] == [org_id]
    assert [m.user_id for m in fresh(store, lambda: store.org_members(org_id))] == [user_id]
    assert fresh(store, lambda: store.membership(org_id, "usr_other")) is None
    assert fresh(store, lambda: store.membership("org_other", user_id)) is None


def test_no_token_is_stored_in_the_clear(store: ConsoleStore, tables: Tables) -> None:
    token = secrets.token_urlsafe(32)
    token_hash = hashlib.sha256(token.encode()).hexdigest()
    fresh(store, lambda: store.put_link(token_hash, "c@example.com", "", "sign_in", False, 900))
    fresh(store, lambda: store.create_session(token_hash, "usr_x", 0, 900))
    dump = str(tables.scan_table(tables.accounts))
    assert token not in dump and token_hash in dump


def test_uses_are_counted_in_fixed_windows(store: ConsoleStore, clock: Clock) -> None:
    address = f"r{uuid.uuid4().hex[:8]}@example.com"
    clock.now = 1_800_000_000.0 - 1_800_000_000.0 % 900 + 100  # 100 s into a window
    counts = [fresh(store, lambda: store.count_in_window(address, 3, 900)) for _ in range(5)]
    assert counts == [None, None, None, 800, 800]
    assert fresh(store, lambda: store.count_in_window("other" + address, 3, 900)) is None
    clock.now += 800  # the next window
    assert fresh(store, lambda: store.count_in_window(address, 3, 900)) is None


def test_concurrent_uses_never_pass_the_limit(store: ConsoleStore) -> None:
    address = f"c{uuid.uuid4().hex[:8]}@example.com"

    async def race() -> list[Any]:
        try:
            return list(
                await asyncio.gather(*[store.count_in_window(address, 4, 900) for _ in range(12)])
            )
        finally:
            await store._db.aclose()

    assert sum(1 for r in asyncio.run(race()) if r is None) <= 4
