"""The cleanup job's retention step against DynamoDB Local, seeded across the retention
boundary on an explicit clock: what is deleted (expired sessions, sign-in links and their
pointers, OAuth sign-ins, invitations, rate windows, unsubscribe links, audit entries past
400 days, usage records past 90 days of rolled-up days, expired cache answers) and what
stays (anything unexpired, a session renewed before the delete, a record of a day not rolled
up yet); twice in a row, two runs at once, and a round cut by its budget resumed.

The tables are shared with other tests, so the clock is real time: items are seeded expired
or not relative to it (as DynamoDB's TTL would judge them), and each test looks at its own
items only."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from dynoyard.adapters.dynamo import retention_store as retention_store_module
from dynoyard.adapters.dynamo.billing_store import ledger_sort_key
from dynoyard.adapters.dynamo.client import DynamoClient
from dynoyard.adapters.dynamo.console_store import ConsoleStore
from dynoyard.adapters.dynamo.job_store import Checkpoints
from dynoyard.adapters.dynamo.retention_store import RetentionStore
from dynoyard.adapters.dynamo.store import DynamoStore
from dynoyard.adapters.email import OutboxSender
from dynoyard.domain.rollup import day_end, usage_daily_movement
from dynoyard.domain.usage import RETENTION_DAYS
from dynoyard.maintenance.job import JobContext, JobResult, StepReport
from dynoyard.maintenance.retention import retention_step
from dynoyard.maintenance.run import run_cleanup
from dynoyard.maintenance.settings import CleanupSettings
from tests.conftest import Tables, ddb_endpoint
from tests.e2e.test_console_auth import Console, serve_console
from tests.e2e.test_console_keys import person

DAY = 86_400


@pytest.fixture(scope="module")
def console(tables: Tables) -> Iterator[Console]:
    yield from serve_console(tables)


def settings(tables: Tables) -> CleanupSettings:
    return CleanupSettings(
        accounts_table=tables.accounts,
        usage_table=tables.usage,
        cache_table=tables.names["CACHE_TABLE"],
        dynamodb_endpoint=ddb_endpoint(),
    )


def run(tables: Tables, now: float, run: str = "daily") -> StepReport:
    result = asyncio.run(
        run_cleanup(settings(tables), now=now, run=run, steps=[("retention", retention_step)])
    )
    (report,) = result.reports
    assert report.failed is None and report.finished, report.show()
    return report


def put(tables: Tables, table: str, **item: Any) -> dict[str, Any]:
    typed = {
        name: {"N": str(value)} if isinstance(value, int | Decimal) else {"S": value}
        for name, value in item.items()
    }
    tables.client.put_item(TableName=table, Item=typed)
    return {"pk": typed["pk"], "sk": typed["sk"]}


def exists(tables: Tables, table: str, key: dict[str, Any]) -> bool:
    return "Item" in tables.client.get_item(TableName=table, Key=key, ConsistentRead=True)


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def new_org(tables: Tables) -> str:
    org_id = "org_" + uuid.uuid4().hex[:12]
    put(tables, tables.accounts, pk=f"ORG#{org_id}", sk="META", name="Retention Labs")
    return org_id


def usage_record(tables: Tables, org_id: str, started: float, cost: str = "0.01") -> dict[str, Any]:
    return put(
        tables,
        tables.usage,
        pk=f"ORG#{org_id}",
        sk=f"{iso(started)}#req_{uuid.uuid4().hex[:8]}",
        cost_usd=Decimal(cost),
        model="test-chat",
        expires_at=int(started) + RETENTION_DAYS * DAY,
    )


def roll_up(tables: Tables, org_id: str, day: str, cost: str, ledger: bool = True) -> None:
    """What the roll-up step leaves for a day: its org aggregate and its ledger entry."""
    put(tables, tables.usage, pk=f"DAILY#{org_id}", sk=f"{day}#ORG", requests=1)
    if ledger:
        movement = usage_daily_movement(org_id, day, Decimal(cost)).movement_id
        put(
            tables,
            tables.accounts,
            pk=f"ORG#{org_id}",
            sk=ledger_sort_key(day_end(day), movement),
            kind="usage_daily",
        )


def seeded_accounts(tables: Tables, now: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Items past their `expires_at` (to delete) and items not yet (to keep)."""
    tag = uuid.uuid4().hex[:12]
    a = tables.accounts
    expired = [
        put(tables, a, pk=f"SESSION#{tag}a", sk="SESSION", user_id="u", expires_at=now - 10),
        put(tables, a, pk=f"LINK#{tag}", sk="LINK", email="x@example.com", expires_at=now - 1),
        put(tables, a, pk=f"EMAIL#{tag}@example.com", sk=f"LINK#{tag}", expires_at=now - 1),
        put(tables, a, pk=f"OAUTH#{tag}", sk="OAUTH", provider="google", expires_at=now - 5),
        put(tables, a, pk=f"RATE#link_ip#{tag}", sk="WINDOW#1", hits=3, expires_at=now - 60),
        put(tables, a, pk=f"UNSUB#{tag}", sk="UNSUB", user_id="u", expires_at=now - 2),
        put(tables, a, pk=f"ORG#{tag}", sk=f"AUDIT#{iso(now - 401 * DAY)}#x", expires_at=now - DAY),
    ]
    kept = [
        put(tables, a, pk=f"SESSION#{tag}b", sk="SESSION", user_id="u", expires_at=now + 600),
        put(tables, a, pk=f"LINK#{tag}b", sk="LINK", email="y@example.com", expires_at=now + 900),
        put(tables, a, pk=f"ORG#{tag}", sk=f"AUDIT#{iso(now - 399 * DAY)}#y", expires_at=now + DAY),
        put(tables, a, pk=f"USER#{tag}", sk="META", email="z@example.com"),  # no expiry
    ]
    return expired, kept


def test_expired_accounts_items_go_and_live_ones_stay(tables: Tables) -> None:
    now = int(time.time())
    expired, kept = seeded_accounts(tables, now)

    report = run(tables, now)

    assert report.counts["accounts_deleted"] >= len(expired)
    assert [k for k in expired if exists(tables, tables.accounts, k)] == []
    assert all(exists(tables, tables.accounts, k) for k in kept)
    # The round finished: no checkpoint is left behind.
    assert not exists(
        tables, tables.accounts, {"pk": {"S": "JOB#retention"}, "sk": {"S": "CHECKPOINT"}}
    )


def test_an_expired_invitation_goes_with_all_three_items(console: Console, tables: Tables) -> None:
    console.clock.offset = -8 * DAY  # invited eight days ago: past its seven
    try:
        owner = person(console)
        guest = f"guest-{uuid.uuid4().hex[:8]}@example.com"
        invited = owner.call("POST", f"/api/orgs/{owner.org_id}/invitations", json={"email": guest})
        assert invited.status_code == 201, invited.text
    finally:
        console.clock.offset = 0
    items = lambda: [  # noqa: E731
        i
        for i in tables.scan_table(tables.accounts)
        if guest in str(i) or (i["pk"]["S"].startswith("INVITE#") and owner.org_id in str(i))
    ]
    assert len(items()) == 3  # ORG#/INVITE#, INVITE#<hash>, EMAIL#<address>/INVITE#

    run(tables, time.time())

    assert items() == []


def test_a_session_renewed_before_the_delete_stays(tables: Tables) -> None:
    now = int(time.time())
    key = put(
        tables, tables.accounts, pk=f"SESSION#{uuid.uuid4().hex}", sk="SESSION", expires_at=now - 1
    )
    # Found expired by the scan, then renewed by its user before the delete reaches it.
    tables.client.update_item(
        TableName=tables.accounts,
        Key=key,
        UpdateExpression="SET expires_at = :later",
        ExpressionAttributeValues={":later": {"N": str(now + 3600)}},
    )

    async def delete() -> bool:
        store = RetentionStore(
            DynamoClient(ddb_endpoint(), "us-east-1"), tables.accounts, tables.usage, "unused"
        )
        try:
            return await store.delete_if_expired(tables.accounts, key, now)
        finally:
            await store._db.aclose()

    assert asyncio.run(delete()) is False
    assert exists(tables, tables.accounts, key)
    run(tables, now)
    assert exists(tables, tables.accounts, key)


def test_usage_past_90_days_goes_only_once_its_day_is_rolled_up(tables: Tables) -> None:
    now = time.time()
    org_id = new_org(tables)
    rolled_day, waiting_day = now - 93 * DAY, now - 92 * DAY
    rolled = [usage_record(tables, org_id, rolled_day + s) for s in (0, 60, 120)]
    waiting = [usage_record(tables, org_id, waiting_day)]
    free_day = now - 91 * DAY  # rolled up, cost nothing: no ledger entry needed
    free = [usage_record(tables, org_id, free_day, cost="0")]
    recent = [usage_record(tables, org_id, now - 89 * DAY), usage_record(tables, org_id, now - 60)]
    roll_up(tables, org_id, iso(rolled_day)[:10], "0.03")
    roll_up(tables, org_id, iso(free_day)[:10], "0", ledger=False)
    # The aggregate without its ledger entry is not enough for a day that cost something.
    roll_up(tables, org_id, iso(waiting_day)[:10], "0.01", ledger=False)

    report = run(tables, now)

    assert report.counts["usage_deleted"] >= 4 and report.counts["usage_days_waiting"] >= 1
    assert [k for k in rolled + free if exists(tables, tables.usage, k)] == []
    assert all(exists(tables, tables.usage, k) for k in waiting + recent)

    # Once the roll-up has written the day's ledger entry, the next run deletes it.
    roll_up(tables, org_id, iso(waiting_day)[:10], "0.01")
    run(tables, now + 60)
    assert not exists(tables, tables.usage, waiting[0])
    assert all(exists(tables, tables.usage, k) for k in recent)


def test_expired_cache_answers_go_and_live_ones_stay(tables: Tables) -> None:
    now = int(time.time())
    org_id = new_org(tables)
    cache = tables.names["CACHE_TABLE"]
    old = put(tables, cache, pk=f"ORG#{org_id}", sk="hash-old", answer="{}", expires_at=now - 30)
    live = put(tables, cache, pk=f"ORG#{org_id}", sk="hash-new", answer="{}", expires_at=now + 30)

    run(tables, now)

    assert not exists(tables, cache, old) and exists(tables, cache, live)


def test_twice_in_a_row_and_two_at_once_delete_the_same_and_fail_nothing(tables: Tables) -> None:
    now = int(time.time())
    expired, kept = seeded_accounts(tables, now)
    org_id = new_org(tables)
    old = [usage_record(tables, org_id, now - 95 * DAY) for _ in range(30)]  # > one batch
    roll_up(tables, org_id, iso(now - 95 * DAY)[:10], "0.30")

    async def both() -> list[JobResult]:
        return list(
            await asyncio.gather(
                *(
                    run_cleanup(
                        settings(tables),
                        now=now,
                        run="daily",
                        steps=[("retention", retention_step)],
                    )
                    for _ in range(2)
                )
            )
        )

    results = asyncio.run(both())
    assert all(not r.failed and r.reports[0].finished for r in results)
    assert [k for k in expired if exists(tables, tables.accounts, k)] == []
    assert [k for k in old if exists(tables, tables.usage, k)] == []
    # Each expired item was deleted by exactly one of the two (the other's condition failed).
    assert sum(r.reports[0].counts["accounts_deleted"] for r in results) >= len(expired)

    run(tables, now)  # a third run: nothing of ours left, nothing kept lost
    assert all(exists(tables, tables.accounts, k) for k in kept)


def step_run(tables: Tables, now: float, budget: Callable[[], float], run: str) -> StepReport:
    """The step alone, with a budget the test controls."""

    async def go() -> StepReport:
        client = DynamoClient(ddb_endpoint(), "us-east-1")
        store = DynamoStore(
            client, tables.accounts, tables.usage, cache_table=tables.names["CACHE_TABLE"]
        )
        ctx = JobContext(
            now=now,
            budget_left=budget,
            store=store,
            console_store=ConsoleStore(client, tables.accounts),
            email=OutboxSender("/nonexistent"),  # the step sends nothing
            payments=None,
            settings=settings(tables),
            log=logging.getLogger("test.retention"),
            checkpoints=Checkpoints(client, tables.accounts),
            run=run,
        )
        try:
            return await retention_step(ctx)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_a_round_cut_by_the_budget_resumes_on_the_next_hourly_run(
    tables: Tables, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention_store_module, "SCAN_PAGE", 3)
    now = int(time.time())
    expired, _ = seeded_accounts(tables, now)
    checkpoint = {"pk": {"S": "JOB#retention"}, "sk": {"S": "CHECKPOINT"}}

    # An hourly run less than a day after a round began, none under way, scans nothing.
    put(tables, tables.accounts, pk="JOB#retention_round", sk="CHECKPOINT", cursor=str(now - 3600))
    hourly = step_run(tables, now, lambda: 60.0, "hourly")
    assert hourly.finished and hourly.counts["pages"] == 0
    assert all(exists(tables, tables.accounts, k) for k in expired)

    # A daily run whose budget runs out after a few pages stops and saves where it is.
    checks = iter([60.0] * 10)
    cut = step_run(tables, now, lambda: next(checks, 0.0), "daily")
    assert not cut.finished and cut.counts["pages"] >= 1
    assert exists(tables, tables.accounts, checkpoint)

    # The next hourly run resumes the round and finishes it.
    resumed = step_run(tables, now, lambda: 60.0, "hourly")
    assert resumed.finished and resumed.counts["pages"] >= 1
    assert not exists(tables, tables.accounts, checkpoint)
    assert [k for k in expired if exists(tables, tables.accounts, k)] == []


def test_an_hourly_run_a_day_after_the_last_round_starts_one(tables: Tables) -> None:
    now = int(time.time())
    put(tables, tables.accounts, pk="JOB#retention_round", sk="CHECKPOINT", cursor=str(now - DAY))
    expired, kept = seeded_accounts(tables, now)

    report = run(tables, now, run="hourly")

    assert report.counts["pages"] >= 1
    assert [k for k in expired if exists(tables, tables.accounts, k)] == []
    assert all(exists(tables, tables.accounts, k) for k in kept)
    # ... and the next hourly run, that round just begun, does not.
    assert run(tables, now + 3600, run="hourly").counts["pages"] == 0
