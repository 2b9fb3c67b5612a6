"""The scheduled cleanup end to end: `dynoyard cleanup run --json` (in process and as two
processes at once) and functions/cleanup/app.py's handler with the scheduled events, on
the real clock against DynamoDB Local: one JSON line per step, yesterday rolled up once,
a failing step reported by its class, the other steps run, and the invocation failed."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from dynoyard import cli
from dynoyard.adapters.dynamo.client import DynamoClient
from dynoyard.adapters.dynamo.store import DynamoStore
from dynoyard.domain.billing import Movement
from dynoyard.domain.rollup import last_closed_day
from dynoyard.domain.usage import UsageRecord
from dynoyard.maintenance import steps
from dynoyard.maintenance.job import JobContext, StepReport
from tests.conftest import ROOT, FakeContext, ddb_endpoint
from tests.e2e.test_console_auth import Console
from tests.e2e.test_console_keys import console, person  # noqa: F401

IP = "198.51.100.23"


class LongContext(FakeContext):
    function_name = "dynoyard-cleanup"

    def __init__(self, remaining_ms: int = 300_000) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture
def env(tables, tmp_path, monkeypatch) -> dict[str, str]:
    for name, value in tables.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DYNOYARD_OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.delenv("STRIPE_SECRET_KEY", raising=False)
    monkeypatch.delenv("DYNOYARD_STRIPE_SECRET", raising=False)
    return {**tables.env, "DYNOYARD_OUTBOX_DIR": str(tmp_path / "outbox")}


def _store(tables) -> DynamoStore:
    return DynamoStore(
        DynamoClient(ddb_endpoint(), "us-east-1"),
        tables.accounts,
        tables.usage,
        cache_table=tables.names["CACHE_TABLE"],
    )


def org_spent_yesterday(tables) -> tuple[str, str]:
    """A new organization with two requests on the last closed day (held and settled as
    the gateway does); its id and that day."""
    day = last_closed_day(time.time())
    started = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)

    async def make() -> str:
        store = _store(tables)
        try:
            org_id = await store.create_org("Cleanup", "ops@cleanup.test")
            at = "2026-01-01T00:00:00.000+00:00"
            grant = Movement(f"grant:{org_id}", org_id, "grant", Decimal(5), at)
            assert await store.billing.apply(grant)
            for n, cost in enumerate(("0.125", "0.000001")):
                record = UsageRecord(
                    request_id=f"req_{uuid.uuid4().hex[:20]}",
                    started_at=started + timedelta(minutes=n),
                    org_id=org_id,
                    key_id="key_cccccccccccccccc",
                    endpoint="chat/completions",
                    model="test-chat",
                    status=200,
                    prompt_tokens=5,
                    completion_tokens=3,
                    cost_usd=Decimal(cost),
                    latency_ms=40 + n,
                    client_ip=IP,
                )
                await store.hold(org_id, Decimal(1))
                await store.settle(record, Decimal(1))
            return org_id
        finally:
            await store.aclose()

    return asyncio.run(make()), day.isoformat()


def usage_daily_entries(tables, org_id: str) -> list[dict[str, Any]]:
    items = tables.client.query(
        TableName=tables.accounts,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :ledger)",
        ExpressionAttributeValues={":pk": {"S": f"ORG#{org_id}"}, ":ledger": {"S": "LEDGER#"}},
    )["Items"]
    return [i for i in items if i["kind"]["S"] == "usage_daily"]


def forget_checkpoint(tables) -> None:
    """Other tests' runs may have finished today's round: start one afresh."""
    tables.client.delete_item(
        TableName=tables.accounts, Key={"pk": {"S": "JOB#rollup"}, "sk": {"S": "CHECKPOINT"}}
    )


def test_given_a_closed_day_when_cleanup_runs_by_hand_then_one_json_line_per_step(
    tables, env, capsys
):
    org_id, day = org_spent_yesterday(tables)
    forget_checkpoint(tables)
    capsys.readouterr()
    assert cli.main(["--json", "cleanup", "run"]) == 0
    out = capsys.readouterr().out
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["step"] for line in lines] == [name for name, _ in steps.STEPS]
    for line in lines:
        assert set(line) == {"step", "finished", "counts"} and line["finished"] is True
        assert all(isinstance(v, int) for v in line["counts"].values())
    rollup = lines[0]
    assert rollup["step"] == "rollup" and rollup["counts"]["days_rolled"] >= 1
    (entry,) = usage_daily_entries(tables, org_id)
    assert entry["date"]["S"] == day and Decimal(entry["amount_usd"]["N"]) == Decimal("-0.125001")
    assert IP not in out
    # Run again: the round is done, nothing more counted.
    assert cli.main(["--json", "cleanup", "run"]) == 0
    again = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert again[0]["counts"] == {"orgs": 0, "days_rolled": 0}
    assert len(usage_daily_entries(tables, org_id)) == 1


def test_given_two_processes_at_once_when_cleanup_runs_then_each_day_counts_once(tables, env):
    orgs = [org_spent_yesterday(tables)[0] for _ in range(3)]
    forget_checkpoint(tables)
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "dynoyard", "--json", "cleanup", "run"],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for run in runs:
        out, err = run.communicate(timeout=180)
        assert run.returncode == 0, err
        assert json.loads(out.splitlines()[0])["step"] == "rollup"
    for org_id in orgs:
        assert len(usage_daily_entries(tables, org_id)) == 1


@pytest.fixture
def handler(env) -> Iterator[Any]:
    spec = importlib.util.spec_from_file_location(
        "cleanup_app", ROOT / "functions" / "cleanup" / "app.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cleanup_app"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("cleanup_app", None)


def event(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((ROOT / "events" / name).read_text())
    return loaded


def test_given_the_scheduled_events_when_handled_then_the_run_named_and_every_step_reported(
    tables, handler, capsys
):
    org_id, day = org_spent_yesterday(tables)
    forget_checkpoint(tables)
    hourly = handler.handler(event("cleanup_hourly.json"), LongContext())
    assert hourly["run"] == "hourly"
    assert [r["step"] for r in hourly["steps"]] == [name for name, _ in steps.STEPS]
    assert all(r["finished"] for r in hourly["steps"])
    assert [e["date"]["S"] for e in usage_daily_entries(tables, org_id)] == [day]
    daily = handler.handler(event("cleanup_daily.json"), LongContext())
    assert daily["run"] == "daily" and all(r["finished"] for r in daily["steps"])
    assert len(usage_daily_entries(tables, org_id)) == 1
    logged = capsys.readouterr().out
    assert '"CleanupFailures"' in logged  # the EMF metric the alarm watches
    assert IP not in logged


def test_given_a_step_that_fails_when_handled_then_the_others_run_and_the_invocation_fails(
    tables, handler, capsys, caplog, monkeypatch
):
    org_id, _ = org_spent_yesterday(tables)
    forget_checkpoint(tables)
    ran: list[str] = []

    async def broken(ctx: JobContext) -> StepReport:
        raise RuntimeError("SECRET-DETAIL-" + org_id)

    async def after(ctx: JobContext) -> StepReport:
        ran.append("after")
        return StepReport("after", finished=True, counts={"seen": 1})

    monkeypatch.setattr(steps, "STEPS", [("broken", broken), *steps.STEPS, ("after", after)])
    with pytest.raises(handler.CleanupFailed, match="RuntimeError"):
        handler.handler(event("cleanup_hourly.json"), LongContext())
    assert ran == ["after"]
    assert len(usage_daily_entries(tables, org_id)) == 1  # the roll-up ran all the same
    # Logged by the exception's class only: its message could carry anything.
    records = [vars(record) for record in caplog.records]
    assert any(r.get("step") == "broken" and r.get("error") == "RuntimeError" for r in records)
    logged = capsys.readouterr().out
    assert "SECRET-DETAIL" not in repr(records) + logged
    metric = [json.loads(line) for line in logged.splitlines() if "CleanupFailures" in line]
    assert metric and metric[-1]["CleanupFailures"] in ([1], 1)


def test_given_almost_no_time_left_when_handled_then_steps_stop_unfinished_and_resume(
    tables, handler
):
    org_id, day = org_spent_yesterday(tables)
    forget_checkpoint(tables)
    # Less than the margin left: a one-second budget; the roll-up's each org needs 5 s.
    short = handler.handler(event("cleanup_hourly.json"), LongContext(remaining_ms=20_000))
    assert short["steps"][0]["step"] == "rollup" and short["steps"][0]["finished"] is False
    assert usage_daily_entries(tables, org_id) == []
    whole = handler.handler(event("cleanup_hourly.json"), LongContext())
    assert whole["steps"][0]["finished"] is True
    assert [e["date"]["S"] for e in usage_daily_entries(tables, org_id)] == [day]


def test_the_events_are_eventbridge_schedules() -> None:
    hourly = json.loads(Path(ROOT / "events" / "cleanup_hourly.json").read_text())
    assert hourly["source"] == "aws.events" and hourly["detail-type"] == "Scheduled Event"
    assert json.loads(Path(ROOT / "events" / "cleanup_daily.json").read_text()) == {"run": "daily"}


def test_given_rolled_up_days_when_the_console_reads_daily_usage_then_aggregates_past_90_days(
    console: Console,  # noqa: F811
    tables,
    env,
) -> None:
    owner = person(console)
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=100), now - timedelta(days=2)
    for n, when in enumerate([old, recent, recent + timedelta(minutes=5), now]):
        tables.store.settle(
            UsageRecord(
                request_id=f"req_{uuid.uuid4().hex[:20]}",
                started_at=when,
                org_id=owner.org_id,
                key_id="key_dddddddddddddddd",
                endpoint="chat/completions",
                model="m1" if n < 3 else "m2",
                status=200,
                prompt_tokens=n,
                cost_usd=Decimal("0.000007") * (n + 1),
                latency_ms=10 * n,
                client_ip=IP,
            ),
            Decimal(0),
        )
    path = f"/api/orgs/{owner.org_id}/usage/daily"
    params = {"since": (old - timedelta(days=1)).isoformat()}
    before = owner.call("GET", path, params=params).json()["days"]
    # The records past their 90 days are no longer read; the others total as they are.
    assert [d["date"] for d in before] == [recent.date().isoformat(), now.date().isoformat()]
    forget_checkpoint(tables)
    from dynoyard.maintenance.rollup import rollup_step
    from dynoyard.maintenance.run import run_cleanup
    from dynoyard.maintenance.settings import CleanupSettings

    result = asyncio.run(run_cleanup(CleanupSettings(), steps=[("rollup", rollup_step)]))
    assert not result.failed
    after = owner.call("GET", path, params=params).json()["days"]
    (old_line,) = [d for d in after if d["date"] == old.date().isoformat()]
    assert old_line == {
        "date": old.date().isoformat(),
        "model": "m1",
        "requests": 1,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_usd": "0.000007",
        "errors": 0,
        "cache_hits": 0,
    }
    assert after[1:] == before  # rolled-up days and today alike, the same totals
    assert IP not in json.dumps(after)
    stranger = person(console)
    assert stranger.call("GET", path).status_code == 404
