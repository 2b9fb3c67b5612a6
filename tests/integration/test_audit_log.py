"""The audit log against DynamoDB Local: what each account use case records, pages newest
first with opaque cursors, one organization never seeing another's, hostile cursors,
retention, and `dynoyard audit`."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
import uuid
from datetime import datetime
from decimal import Decimal

import pytest

from dynoyard.adapters.dynamo.audit_store import encode_cursor
from dynoyard.adapters.dynamo.client import DynamoClient
from dynoyard.adapters.dynamo.store import DynamoStore
from dynoyard.cli import main
from dynoyard.domain.accounts import UnknownKey
from dynoyard.domain.administration import OPERATOR, Actor, Administration, NotAllowed
from dynoyard.domain.audit import AUDIT_RETENTION_SECONDS, InvalidAuditQuery, new_entry
from dynoyard.domain.limits import KeyLimits
from tests.conftest import ddb_endpoint

ADMIN_IP = "203.0.113.7"


class Clock:
    """Seconds that move only when told: every entry's time is known."""

    def __init__(self, start: float | None = None) -> None:
        self.now = start if start is not None else float(int(time.time()))

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float = 1.0) -> float:
        self.now += seconds
        return self.now


def run(tables, use, clock=None):
    """`use(administration, store)` on a fresh DynamoStore with the audit log attached."""
    clock = clock or Clock()

    async def go():
        store = DynamoStore(
            DynamoClient(ddb_endpoint(), "us-east-1"),
            tables.accounts,
            tables.usage,
            clock=clock,
            cache_table=tables.names["CACHE_TABLE"],
        )
        try:
            return await use(Administration(store, clock=clock, audit=store.audit_log), store)
        finally:
            await store.aclose()

    return asyncio.run(go())


def page(tables, org_id, before=None, limit=50, clock=None):
    return run(
        tables,
        lambda admin, _: admin.audit_entries(OPERATOR, org_id, before, limit),
        clock,
    )


def all_entries(tables, org_id, clock=None):
    entries, cursor = page(tables, org_id, limit=100, clock=clock)
    while cursor is not None:
        more, cursor = page(tables, org_id, cursor, 100, clock)
        entries += more
    return entries


def new_org(tables) -> str:
    return tables.store.create_org(f"Audit {uuid.uuid4().hex[:6]}", "ops@example.com")


def raw_audit_items(tables, org_id):
    answer = tables.client.query(
        TableName=tables.accounts,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :a)",
        ExpressionAttributeValues={":pk": {"S": f"ORG#{org_id}"}, ":a": {"S": "AUDIT#"}},
    )
    return answer["Items"]


# -- what the use cases record -------------------------------------------------------------


def test_given_each_use_case_when_it_succeeds_then_who_what_which_when_and_ip_are_recorded(
    tables,
):
    org_id = new_org(tables)
    admin = Actor("admin", "usr_00000000000000a1", ADMIN_IP)
    owner = Actor("owner", "usr_00000000000000b2", "2001:db8::1")
    clock = Clock()
    start = clock.now

    async def story(administration, _store):
        await administration.grant_credits(OPERATOR, org_id, Decimal("25.00"), "invoice 42")
        clock.tick()
        await administration.change_settings(admin, org_id, cache_enabled=True, rate_limit_rpm=None)
        clock.tick()
        new = await administration.create_key(
            admin,
            org_id,
            "ci",
            frozenset({"gpt-4o-mini"}),
            30,
            KeyLimits(rpm=60, daily_usd=Decimal("5")),
        )
        clock.tick()
        await administration.revoke_key(owner, org_id, new.key_id)
        return new

    new = run(tables, story, clock)
    entries, cursor = page(tables, org_id, clock=clock)
    assert cursor is None
    shown = [e.show() for e in entries]
    at = [datetime.fromtimestamp(start + i, tz=None).astimezone() for i in range(4)]
    assert [datetime.fromisoformat(s["at"]) for s in reversed(shown)] == at
    assert [{k: v for k, v in s.items() if k != "at"} for s in shown] == [
        {
            "org_id": org_id,
            "actor": "usr_00000000000000b2",
            "action": "key_revoked",
            "target": new.key_id,
            "ip": "2001:db8::1",
            "details": {},
        },
        {
            "org_id": org_id,
            "actor": "usr_00000000000000a1",
            "action": "key_created",
            "target": new.key_id,
            "ip": ADMIN_IP,
            "details": {
                "name": "ci",
                "models": "gpt-4o-mini",
                "expires_at": int(start) + 2 + 30 * 86_400,
                "rpm": 60,
                "daily_usd": "5",
            },
        },
        {
            "org_id": org_id,
            "actor": "usr_00000000000000a1",
            "action": "settings_changed",
            "target": org_id,
            "ip": ADMIN_IP,
            "details": {"cache_enabled": True},
        },
        {
            "org_id": org_id,
            "actor": "operator",
            "action": "credits_granted",
            "target": org_id,
            "ip": None,
            "details": {"amount_usd": "25.00", "reason": "invoice 42", "balance_usd": "25.00"},
        },
    ]
    stored = json.dumps(raw_audit_items(tables, org_id))
    assert new.secret not in stored and new.key_hash not in stored
    for item in raw_audit_items(tables, org_id):  # retention: the TTL attribute
        recorded = datetime.fromisoformat(item["at"]["S"]).timestamp()
        assert int(item["expires_at"]["N"]) == int(recorded) + AUDIT_RETENTION_SECONDS


def test_given_a_reason_holding_an_api_key_when_credits_are_granted_then_the_log_redacts_it(
    tables, make_account
):
    account = make_account()
    reason = f"refund, customer pasted {account.key} here"
    run(tables, lambda a, _: a.grant_credits(OPERATOR, account.org_id, Decimal("1"), reason))
    (entry,) = [e for e in all_entries(tables, account.org_id) if e.action == "credits_granted"]
    assert entry.details["reason"] == "refund, customer pasted [redacted] here"
    assert account.key not in json.dumps(raw_audit_items(tables, account.org_id))


def test_given_a_refused_or_failed_change_when_tried_then_nothing_is_recorded(tables):
    org_id = new_org(tables)
    member = Actor("member", "usr_00000000000000c3", ADMIN_IP)
    with pytest.raises(NotAllowed):
        run(tables, lambda a, _: a.change_settings(member, org_id, cache_enabled=True))
    with pytest.raises(NotAllowed):
        run(tables, lambda a, _: a.create_key(member, org_id, "x"))
    with pytest.raises(Exception, match="org_ffffffffffffffff"):  # UnknownOrg
        run(tables, lambda a, _: a.grant_credits(OPERATOR, "org_ffffffffffffffff", Decimal(1)))
    assert all_entries(tables, org_id) == []
    assert raw_audit_items(tables, "org_ffffffffffffffff") == []


@pytest.mark.parametrize("key_id", ["other", "key_ffffffffffffffff", "key_" + "a" * 2000, ""])
def test_given_a_key_id_not_of_this_org_when_revoked_then_unknown_and_nothing_changes(
    tables, make_account, key_id
):
    mine, theirs = make_account(), make_account()
    key_id = theirs.key_id if key_id == "other" else key_id
    with pytest.raises(UnknownKey):
        run(tables, lambda a, _: a.revoke_key(OPERATOR, mine.org_id, key_id))
    assert tables.store.key_org_id(theirs.key_id) == theirs.org_id
    pointer = tables.client.get_item(
        TableName=tables.accounts, Key={"pk": {"S": f"KEYID#{theirs.key_id}"}, "sk": {"S": "KEY"}}
    )["Item"]
    assert "revoked" not in pointer
    assert [e.action for e in all_entries(tables, mine.org_id)] == []


# -- pages --------------------------------------------------------------------------------


def test_given_120_entries_when_paged_then_newest_first_every_one_once_and_no_other_org(tables):
    org_id, other_id = new_org(tables), new_org(tables)
    clock = Clock()
    first = clock.now

    async def record_many(administration, _store):
        for i in range(120):
            clock.tick()
            await administration.record(OPERATOR, org_id, "key_revoked", f"key_{i:016x}")
            await administration.record(OPERATOR, other_id, "key_revoked", f"key_{i:016x}")

    run(tables, record_many, clock)
    seen, cursors, cursor = [], [], None
    for expected_size in (50, 50, 20):
        entries, cursor = page(tables, org_id, cursor, 50, clock)
        assert len(entries) == expected_size
        seen += entries
        cursors.append(cursor)
    assert cursors[-1] is None and None not in cursors[:-1]
    assert [e.target for e in seen] == [f"key_{i:016x}" for i in reversed(range(120))]
    assert {e.org_id for e in seen} == {org_id}
    times = [datetime.fromisoformat(e.at).timestamp() for e in seen]
    assert times == [first + i for i in range(120, 0, -1)]
    # a cursor of one organization, used on another, still lists only the other's entries:
    # those older than the cursor's (70; 71 when its twin of the same second sorts after)
    entries, _ = page(tables, other_id, cursors[0], 100, clock)
    assert {e.org_id for e in entries} == {other_id} and len(entries) in (70, 71)
    assert [e.target for e in entries] == [f"key_{i:016x}" for i in reversed(range(len(entries)))]
    # a page exactly as long as what is left has no next cursor
    entries, cursor = page(tables, org_id, cursors[1], 20, clock)
    assert len(entries) == 20 and cursor is None


def test_given_a_new_org_when_its_log_is_read_then_empty_without_a_cursor(tables):
    assert page(tables, new_org(tables)) == ([], None)


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


HOSTILE_CURSORS = [
    "",
    "not a cursor",
    "%%%",
    "x" * 5000,
    _b64("[]"),
    _b64("null"),
    _b64('{"sk": 1}'),
    _b64('{"sk": "META"}'),
    _b64('{"sk": "LEDGER#2026-01-01T00:00:00.000+00:00#0123456789abcdef"}'),
    _b64('{"sk": "AUDIT#2026-13-45T00:00:00.000+00:00#0123456789abcdef"}'),
    _b64('{"sk": "AUDIT#2026-01-01T00:00:00.000+00:00#0123456789abcdef", "pk": "ORG#x"}'),
    _b64('{"sk": "AUDIT#2026-01-01T00:00:00.000+00:00#0123456789abcdef\\u0000"}'),
    encode_cursor("AUDIT#" + "9" * 400),
    base64.urlsafe_b64encode(b"\xff\xfe\x00").decode(),
]


@pytest.mark.parametrize("cursor", HOSTILE_CURSORS)
def test_given_a_hostile_cursor_when_a_page_is_asked_then_a_clear_error_naming_before(
    tables, cursor
):
    org_id = new_org(tables)
    with pytest.raises(InvalidAuditQuery, match="not a cursor") as raised:
        page(tables, org_id, cursor)
    assert raised.value.param == "before"


@pytest.mark.parametrize("limit", [0, 101, -5])
def test_given_a_bad_limit_when_a_page_is_asked_then_a_clear_error_naming_limit(tables, limit):
    with pytest.raises(InvalidAuditQuery) as raised:
        page(tables, new_org(tables), limit=limit)
    assert raised.value.param == "limit"


def test_given_a_member_when_reading_the_log_then_refused(tables):
    org_id = new_org(tables)
    with pytest.raises(NotAllowed):
        run(tables, lambda a, _: a.audit_entries(Actor("member", "usr_1"), org_id))


# -- retention ----------------------------------------------------------------------------


def test_given_entries_past_retention_when_read_then_skipped_though_not_yet_deleted(tables):
    org_id = new_org(tables)
    now = Clock()
    then = Clock(now.now - AUDIT_RETENTION_SECONDS - 86_400)  # 401 days ago

    async def record(administration, _store, target):
        await administration.record(OPERATOR, org_id, "key_revoked", target)

    run(tables, lambda a, s: record(a, s, "key_old"), then)
    run(tables, lambda a, s: record(a, s, "key_new"), now)
    # an item of the right shape whose TTL has passed (DynamoDB deletes such items late)
    tables.client.put_item(
        TableName=tables.accounts,
        Item={
            "pk": {"S": f"ORG#{org_id}"},
            "sk": {"S": "AUDIT#2999-01-01T00:00:00.000+00:00#0123456789abcdef"},
            "actor": {"S": "operator"},
            "action": {"S": "key_revoked"},
            "target": {"S": "key_expired"},
            "at": {"S": "2999-01-01T00:00:00.000+00:00"},
            "details": {"M": {}},
            "expires_at": {"N": str(int(now.now) - 1)},
        },
    )
    assert len(raw_audit_items(tables, org_id)) == 3
    assert [e.target for e in all_entries(tables, org_id, now)] == ["key_new"]
    # and a cursor from before the cutoff answers an empty last page
    old_cursor = encode_cursor(raw_audit_items(tables, org_id)[0]["sk"]["S"])
    assert page(tables, org_id, old_cursor, clock=now) == ([], None)
    # a reader whose clock is 401 days back still sees the old one: nothing was deleted
    assert "key_old" in [e.target for e in all_entries(tables, org_id, then)]


def test_given_an_entry_built_elsewhere_when_recorded_then_it_is_checked_again(tables):
    org_id = new_org(tables)
    entry = new_entry(org_id, "operator", "key_revoked", "key_1", time.time())
    smuggled = type(entry)(**{**entry.show(), "details": {"api_key": "sk-dy-xyz"}})

    async def record(_administration, store):
        await store.audit_log.record(smuggled)

    with pytest.raises(ValueError, match="do not record"):
        run(tables, record)
    assert raw_audit_items(tables, org_id) == []


# -- the CLI ------------------------------------------------------------------------------


@pytest.fixture
def cli(tables, monkeypatch, capsys):
    for name, value in tables.env.items():
        monkeypatch.setenv(name, value)

    def go(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return go


def test_given_cli_commands_when_the_audit_is_listed_then_one_json_line_each_as_operator(cli):
    org_id = json.loads(cli("--json", "org", "create", "--name", "A", "--email", "a@b.c")[1])[
        "org_id"
    ]
    assert cli("--json", "credits", "grant", "--org", org_id, "--usd", "5")[0] == 0
    assert cli("--json", "org", "set", org_id, "--rpm", "600")[0] == 0
    key_id = json.loads(cli("--json", "key", "create", "--org", org_id, "--name", "ci")[1])[
        "key_id"
    ]
    code, out, _ = cli("--json", "key", "revoke", key_id)
    assert (code, json.loads(out)) == (0, {"key_id": key_id, "revoked": True})

    code, out, err = cli("--json", "audit", "--org", org_id)
    assert code == 0 and err == ""
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(e["action"], e["target"]) for e in lines] == [
        ("key_revoked", key_id),
        ("key_created", key_id),
        ("settings_changed", org_id),
        ("credits_granted", org_id),
    ]
    assert {(e["actor"], e["ip"], e["org_id"]) for e in lines} == {("operator", None, org_id)}
    assert lines[2]["details"] == {"rate_limit_rpm": 600}
    assert set(lines[0]) == {"org_id", "at", "actor", "action", "target", "ip", "details"}

    code, out, err = cli("--json", "audit", "--org", org_id, "--limit", "3")
    assert code == 0 and len(out.splitlines()) == 3
    cursor = err.strip().removeprefix("more: --before ")
    code, out, err = cli("--json", "audit", "--org", org_id, "--before", cursor)
    assert [json.loads(line)["action"] for line in out.splitlines()] == ["credits_granted"]
    assert err == ""

    code, out, _ = cli("audit", "--org", org_id, "--limit", "1")
    assert code == 0 and f"operator  key_revoked  {key_id}" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["audit", "--org", "org_ffffffffffffffff"], "no organization org_ffffffffffffffff"),
        (["key", "revoke", "key_ffffffffffffffff"], "no API key key_ffffffffffffffff"),
    ],
)
def test_given_unknown_ids_when_the_cli_is_asked_then_an_error_and_non_zero(cli, argv, message):
    code, out, err = cli("--json", *argv)
    assert code == 1 and out == "" and message in err


def test_given_a_hostile_cursor_when_the_cli_lists_then_an_error_naming_before(cli):
    org_id = json.loads(cli("--json", "org", "create", "--name", "A", "--email", "a@b.c")[1])[
        "org_id"
    ]
    code, out, err = cli("--json", "audit", "--org", org_id, "--before", "%%%")
    assert code == 1 and out == "" and "--before" in err and "Traceback" not in err


def test_given_many_entries_when_the_cli_asks_for_more_than_a_page_then_it_pages_itself(
    tables, cli
):
    org_id = new_org(tables)
    clock = Clock()

    async def record_many(administration, _store):
        for i in itertools.count():
            if i == 130:
                return
            clock.tick()
            await administration.record(OPERATOR, org_id, "export", "usr_1", what="usage")

    run(tables, record_many, clock)
    code, out, err = cli("--json", "audit", "--org", org_id, "--limit", "125")
    assert code == 0 and len(out.splitlines()) == 125 and err.startswith("more: --before ")
