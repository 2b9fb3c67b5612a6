"""The cleanup job's roll-up step against DynamoDB Local, on a fake clock: usage records
written by the gateway's own writer (hold, then settle) across days and across the 90-day
retention boundary; what is rolled up (exact figures, no IP), the ledger's `usage_daily`
entries (once each, the balance untouched, reconcile still zero), runs twice, concurrent
(in one loop and in two processes), and a run stopped by its budget then resumed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from dynoyard.adapters.dynamo.client import DynamoClient
from dynoyard.adapters.dynamo.store import DynamoStore
from dynoyard.domain.billing import Movement
from dynoyard.domain.reconcile import reconcile_org
from dynoyard.domain.rollup import daily_usage, last_closed_day, percentile
from dynoyard.domain.usage import UsageRecord, daily_totals
from dynoyard.local.tables import ensure_tables, local_client
from dynoyard.maintenance.job import run_job
from dynoyard.maintenance.rollup import rollup_step
from dynoyard.maintenance.run import job_context, run_cleanup
from dynoyard.maintenance.settings import CleanupSettings
from tests.conftest import TABLE_ENV_NAMES, ddb_endpoint

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
YESTERDAY = "2026-11-24"
OLD_DAY = (NOW - timedelta(days=95)).date().isoformat()  # past the records' 90-day TTL
IP = "203.0.113.77"
ROLLUP = [("rollup", rollup_step)]


@dataclass
class Fresh:
    """Tables of this test alone: the roll-up scans every organization."""

    env: dict[str, str]
    names: dict[str, str]
    client: Any

    def settings(self) -> CleanupSettings:
        return CleanupSettings(
            accounts_table=self.names["ACCOUNTS_TABLE"],
            usage_table=self.names["USAGE_TABLE"],
            cache_table=self.names["CACHE_TABLE"],
            dynamodb_endpoint=ddb_endpoint(),
            aws_region="us-east-1",
        )

    def store(self) -> DynamoStore:
        return DynamoStore(
            DynamoClient(ddb_endpoint(), "us-east-1"),
            self.names["ACCOUNTS_TABLE"],
            self.names["USAGE_TABLE"],
            cache_table=self.names["CACHE_TABLE"],
        )

    def run(self, use: Any) -> Any:
        async def go() -> Any:
            store = self.store()
            try:
                return await use(store)
            finally:
                await store.aclose()

        return asyncio.run(go())

    def daily_items(self, org_id: str) -> list[dict[str, Any]]:
        answer = self.client.query(
            TableName=self.names["USAGE_TABLE"],
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"DAILY#{org_id}"}},
        )
        return answer["Items"]

    def usage_daily_entries(self, org_id: str) -> list[dict[str, Any]]:
        answer = self.client.query(
            TableName=self.names["ACCOUNTS_TABLE"],
            KeyConditionExpression="pk = :pk AND begins_with(sk, :ledger)",
            ExpressionAttributeValues={":pk": {"S": f"ORG#{org_id}"}, ":ledger": {"S": "LEDGER#"}},
        )
        return [i for i in answer["Items"] if i["kind"]["S"] == "usage_daily"]


def fresh_tables() -> Fresh:
    prefix = f"r{uuid.uuid4().hex[:8]}"
    names = {name: f"{prefix}-{name.split('_')[0].lower()}" for name in TABLE_ENV_NAMES}
    client = local_client()
    ensure_tables(client, names)
    env = {
        "AWS_ENDPOINT_URL_DYNAMODB": ddb_endpoint(),
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": "us-east-1",
        **names,
    }
    return Fresh(env, names, client)


@pytest.fixture
def fresh(tables) -> Iterator[Fresh]:  # `tables`: DynamoDB Local is up, the env set
    made = fresh_tables()
    yield made
    for name in made.names.values():
        made.client.delete_table(TableName=name)


def record(org_id: str, n: int, when: datetime, cost: str, **fields: Any) -> UsageRecord:
    return UsageRecord(
        request_id=f"req_{uuid.uuid4().hex[:20]}{n}",
        started_at=when,
        org_id=org_id,
        key_id=fields.pop("key_id", "key_aaaaaaaaaaaaaaaa"),
        endpoint="chat/completions",
        model=fields.pop("model", "m1"),
        provider="fake",
        status=fields.pop("status", 200),
        cost_usd=Decimal(cost),
        client_ip=IP,
        **fields,
    )


KEY_A, KEY_B = "key_aaaaaaaaaaaaaaaa", "key_bbbbbbbbbbbbbbbb"


def seeds(org_id: str) -> list[UsageRecord]:
    day = datetime(2026, 11, 24, tzinfo=UTC)
    return [
        # Yesterday: two keys, two models, errors, a cache hit, five latencies.
        record(org_id, 1, day + timedelta(hours=1), "0.000123", prompt_tokens=10,
               completion_tokens=5, latency_ms=100),
        record(org_id, 2, day + timedelta(hours=2), "0.25", prompt_tokens=20,
               completion_tokens=10, latency_ms=300, cached=True),
        record(org_id, 3, day + timedelta(hours=3), "0", key_id=KEY_B, model="m2",
               status=500, latency_ms=50),
        record(org_id, 4, day + timedelta(hours=4), "0", key_id=KEY_B, status=429,
               latency_ms=900),
        record(org_id, 5, day + timedelta(hours=23, minutes=59, seconds=59.999), "1.000001",
               model="m2", prompt_tokens=3, completion_tokens=4, latency_ms=200),
        # The day before, 95 days ago (past the TTL, not yet deleted), and today.
        record(org_id, 6, day - timedelta(hours=1), "0.1", prompt_tokens=1, latency_ms=10),
        record(org_id, 7, NOW - timedelta(days=95), "0.5", prompt_tokens=2, latency_ms=20),
        record(org_id, 8, NOW - timedelta(hours=1), "2", prompt_tokens=7, latency_ms=30),
    ]  # fmt: skip


def new_org(fresh: Fresh) -> str:
    """An organization with 10 USD, its requests held and settled as the gateway does."""

    async def make(store: DynamoStore) -> str:
        org_id = await store.create_org("Rollup", "ops@rollup.test")
        at = "2026-01-01T00:00:00.000+00:00"
        grant = Movement(f"grant:{org_id}", org_id, "grant", Decimal(10), at)
        assert await store.billing.apply(grant)
        for each in seeds(org_id):
            await store.hold(org_id, Decimal("2"))
            await store.settle(each, Decimal("2"))
        return org_id

    return fresh.run(make)


def reconciled(fresh: Fresh, org_id: str) -> dict[str, str]:
    async def read(store: DynamoStore) -> dict[str, str]:
        return (await reconcile_org(store, store.billing, org_id)).show()

    return fresh.run(read)


def rollup(fresh: Fresh, at: datetime = NOW) -> Any:
    return asyncio.run(run_cleanup(fresh.settings(), now=at.timestamp(), steps=ROLLUP))


def by_sk(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {i["sk"]["S"]: {k: v for k, v in i.items() if k != "pk"} for i in items}


def n(item: dict[str, Any], name: str) -> Decimal:
    return Decimal(item[name]["N"])


def test_given_the_clock_around_midnight_when_asked_then_a_day_closes_20_minutes_after_it_ends():
    just_before = datetime(2026, 11, 25, 0, 19, 59, tzinfo=UTC).timestamp()
    assert last_closed_day(just_before).isoformat() == "2026-11-23"
    assert last_closed_day(just_before + 1).isoformat() == YESTERDAY
    assert [percentile(sorted([50, 100, 200, 300, 900]), p) for p in (50, 95)] == [200, 900]
    assert percentile([7], 95) == 7 and percentile([], 50) == 0
    assert percentile(list(range(1, 101)), 95) == 95


def test_given_records_across_days_when_rolled_up_then_exact_aggregates_and_ledger_entries(fresh):
    org_id = new_org(fresh)
    before = reconciled(fresh, org_id)
    assert before["difference_usd"] == "0.000000"
    assert before["balance_usd"] == "6.149876"  # 10 - 3.850124

    result = rollup(fresh)
    (report,) = result.reports
    assert not result.failed and report.finished
    assert report.counts == {"orgs": 1, "days_rolled": 3, "ledger_entries": 3, "aggregates": 11}

    items = by_sk(fresh.daily_items(org_id))
    assert set(items) == {
        f"{OLD_DAY}#ORG", f"{OLD_DAY}#KEY#{KEY_A}", f"{OLD_DAY}#MODEL#m1",
        "2026-11-23#ORG", f"2026-11-23#KEY#{KEY_A}", "2026-11-23#MODEL#m1",
        f"{YESTERDAY}#ORG", f"{YESTERDAY}#KEY#{KEY_A}", f"{YESTERDAY}#KEY#{KEY_B}",
        f"{YESTERDAY}#MODEL#m1", f"{YESTERDAY}#MODEL#m2", "ROLLED",
    }  # fmt: skip
    day = items[f"{YESTERDAY}#ORG"]
    assert {name: n(day, name) for name in (
        "requests", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd", "errors",
        "cache_hits", "latency_p50_ms", "latency_p95_ms",
    )} == {
        "requests": 5, "prompt_tokens": 33, "completion_tokens": 19, "total_tokens": 52,
        "cost_usd": Decimal("1.250124"), "errors": 2, "cache_hits": 1,
        "latency_p50_ms": 200, "latency_p95_ms": 900,
    }  # fmt: skip
    key_b = items[f"{YESTERDAY}#KEY#{KEY_B}"]
    assert (n(key_b, "requests"), n(key_b, "errors"), n(key_b, "cost_usd")) == (2, 2, 0)
    assert (n(key_b, "latency_p50_ms"), n(key_b, "latency_p95_ms")) == (50, 900)
    m2 = items[f"{YESTERDAY}#MODEL#m2"]
    assert (n(m2, "requests"), n(m2, "cost_usd"), n(m2, "errors")) == (2, Decimal("1.000001"), 1)
    assert n(items[f"{OLD_DAY}#ORG"], "cost_usd") == Decimal("0.5")
    # Kept 400 days past the day's start (+1: to its end), far past the records' 90.
    keep_until = int(datetime(2026, 11, 24, tzinfo=UTC).timestamp()) + 401 * 86_400
    assert n(day, "expires_at") == keep_until
    assert items["ROLLED"]["through"]["S"] == YESTERDAY
    assert not any(k.startswith("2026-11-25") for k in items)  # today is not closed
    # No IP, nor anything of a single request, in any aggregate.
    text = json.dumps(fresh.daily_items(org_id))
    assert IP not in text and "client_ip" not in text and "req_" not in text

    entries = {e["date"]["S"]: e for e in fresh.usage_daily_entries(org_id)}
    assert {d: n(e, "amount_usd") for d, e in entries.items()} == {
        OLD_DAY: Decimal("-0.5"),
        "2026-11-23": Decimal("-0.1"),
        YESTERDAY: Decimal("-1.250124"),
    }
    assert entries[YESTERDAY]["movement_id"]["S"] == f"usage_daily:{org_id}:{YESTERDAY}"
    after = reconciled(fresh, org_id)
    assert after == before  # the balance untouched, the ledger's figure the same, zero


def test_given_a_rolled_up_org_when_daily_usage_is_read_then_totals_equal_the_records(fresh):
    org_id = new_org(fresh)
    start, end = NOW - timedelta(days=30), NOW + timedelta(minutes=1)

    async def read(store: DynamoStore) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        lines = await daily_usage(store, org_id, start, end, 100_000)
        records = await store.usage_between(org_id, start, end, 100_000)
        return lines, daily_totals(records)

    unrolled, from_records = fresh.run(read)
    assert unrolled == from_records and len(from_records) == 4
    rollup(fresh)
    rolled, from_records = fresh.run(read)
    assert rolled == from_records  # aggregates for the 23rd and 24th, records for today
    # A day past the records' TTL stays readable from its aggregates.
    old = datetime.fromisoformat(OLD_DAY).replace(tzinfo=UTC)

    async def old_day(store: DynamoStore) -> list[dict[str, Any]]:
        return await daily_usage(store, org_id, old, old + timedelta(days=1), 100)

    (line,) = fresh.run(old_day)
    assert line["date"] == OLD_DAY and line["cost_usd"] == "0.500000" and line["requests"] == 1


def test_given_runs_twice_and_concurrently_when_rolled_up_then_nothing_counted_twice(fresh):
    org_id = new_org(fresh)
    rollup(fresh)
    once_items = by_sk(fresh.daily_items(org_id))
    once_balance = reconciled(fresh, org_id)
    # Again (the checkpoint says done: nothing read), then with the checkpoint gone.
    again = rollup(fresh)
    assert again.reports[0].counts == {"orgs": 0, "days_rolled": 0}
    fresh.client.delete_item(
        TableName=fresh.names["ACCOUNTS_TABLE"],
        Key={"pk": {"S": "JOB#rollup"}, "sk": {"S": "CHECKPOINT"}},
    )
    fresh.client.delete_item(
        TableName=fresh.names["USAGE_TABLE"],
        Key={"pk": {"S": f"DAILY#{org_id}"}, "sk": {"S": "ROLLED"}},
    )
    redo = rollup(fresh)
    assert redo.reports[0].counts["days_rolled"] == 3
    assert redo.reports[0].counts["ledger_entries"] == 0  # the guards held
    assert by_sk(fresh.daily_items(org_id)) == once_items
    assert len(fresh.usage_daily_entries(org_id)) == 3
    assert reconciled(fresh, org_id) == once_balance

    # Two runs in one event loop, at once, over new organizations.
    others = [new_org(fresh) for _ in range(3)]

    async def both() -> list[Any]:
        settings = fresh.settings()
        later = (NOW + timedelta(days=1)).timestamp()
        return await asyncio.gather(
            *(run_cleanup(settings, now=later, steps=ROLLUP) for _ in range(2))
        )

    for result in asyncio.run(both()):
        assert not result.failed and result.reports[0].finished
    for other in [org_id, *others]:
        entries = fresh.usage_daily_entries(other)
        dates = sorted(e["date"]["S"] for e in entries)
        today = NOW.date().isoformat()
        assert dates == sorted([OLD_DAY, "2026-11-23", YESTERDAY, today])  # once each
        assert reconciled(fresh, other)["difference_usd"] == "0.000000"
        assert reconciled(fresh, other)["balance_usd"] == "6.149876"
    assert by_sk(fresh.daily_items(org_id))[f"{YESTERDAY}#ORG"] == once_items[f"{YESTERDAY}#ORG"]


PROCESS = """
import asyncio, json, sys
from dynoyard.maintenance.rollup import rollup_step
from dynoyard.maintenance.run import run_cleanup
from dynoyard.maintenance.settings import CleanupSettings
result = asyncio.run(run_cleanup(CleanupSettings(), now=float(sys.argv[1]),
                                 steps=[("rollup", rollup_step)]))
print(json.dumps([r.show() for r in result.reports]))
"""


def test_given_two_processes_at_once_when_rolled_up_then_each_day_counts_once(fresh):
    orgs = [new_org(fresh) for _ in range(4)]
    env = {**os.environ, **fresh.env}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", PROCESS, str(NOW.timestamp())],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    for run, (out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err
        (report,) = json.loads(out)
        assert report["finished"] and "failed" not in report
    made = sum(json.loads(out)[0]["counts"].get("ledger_entries", 0) for out, _ in outputs)
    assert made == 3 * len(orgs)  # between the two of them, each entry once
    reference = by_sk(fresh.daily_items(orgs[0]))
    for org_id in orgs:
        assert len(fresh.usage_daily_entries(org_id)) == 3
        assert reconciled(fresh, org_id)["difference_usd"] == "0.000000"
        items = by_sk(fresh.daily_items(org_id))
        assert items.keys() == reference.keys()
        day = f"{YESTERDAY}#ORG"
        assert n(items[day], "cost_usd") == Decimal("1.250124")
        assert n(items[day], "requests") == 5


def test_given_a_budget_that_ends_midway_when_run_again_then_it_resumes_to_one_runs_result(tables):
    stopped, whole = fresh_tables(), fresh_tables()
    try:
        orgs = [new_org(stopped) for _ in range(2)]
        twins = [new_org(whole) for _ in range(2)]
        calls = 0

        def budget() -> float:
            # Seven checks pass: the job's, the first org's (and its three days'), the
            # second org's and its first day's; the eighth finds the budget spent.
            nonlocal calls
            calls += 1
            return 100.0 if calls <= 7 else 0.0

        async def first_run() -> Any:
            async with job_context(stopped.settings(), NOW.timestamp(), budget) as ctx:
                return await run_job(ctx, ROLLUP)

        (report,) = asyncio.run(first_run()).reports
        assert not report.finished and report.failed is None
        assert report.counts == {"orgs": 1, "days_rolled": 4, "ledger_entries": 4, "aggregates": 14}
        checkpoint = stopped.client.get_item(
            TableName=stopped.names["ACCOUNTS_TABLE"],
            Key={"pk": {"S": "JOB#rollup"}, "sk": {"S": "CHECKPOINT"}},
        )["Item"]
        saved = json.loads(checkpoint["cursor"]["S"])
        assert saved["day"] == YESTERDAY and saved["after"] in orgs and "done" not in saved

        (resumed,) = rollup(stopped).reports
        assert resumed.finished
        assert resumed.counts == {"orgs": 1, "days_rolled": 2, "ledger_entries": 2, "aggregates": 8}
        rollup(whole)
        # The same aggregates and entries as one uninterrupted run over the same records.
        for org_id, twin in zip(orgs, twins, strict=True):
            assert by_sk(stopped.daily_items(org_id)) == by_sk(whole.daily_items(twin))
            amounts = sorted(n(e, "amount_usd") for e in stopped.usage_daily_entries(org_id))
            assert amounts == sorted(n(e, "amount_usd") for e in whole.usage_daily_entries(twin))
            assert reconciled(stopped, org_id)["difference_usd"] == "0.000000"

        # A budget already spent runs no step at all.
        async def spent() -> Any:
            async with job_context(stopped.settings(), NOW.timestamp(), lambda: 0.0) as ctx:
                return await run_job(ctx, ROLLUP)

        (none,) = asyncio.run(spent()).reports
        assert not none.finished and none.counts == {}
    finally:
        for made in (stopped, whole):
            for name in made.names.values():
                made.client.delete_table(TableName=name)
