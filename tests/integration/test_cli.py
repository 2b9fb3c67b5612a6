"""The operator CLI against DynamoDB Local, with the CONTRACT's output shapes."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from dynoyard.cli import DIFFERENCE_EXIT, main
from dynoyard.domain.billing import Charge, Movement, cents_to_usd, iso_now
from dynoyard.domain.usage import EXPORT_FIELDS, UsageRecord


@pytest.fixture
def cli(tables, monkeypatch, capsys):
    for name, value in tables.env.items():
        monkeypatch.setenv(name, value)

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def as_json(output: str) -> dict:
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    return json.loads(lines[0])


def test_given_a_new_org_when_shown_then_the_contract_shape_with_money_as_strings(cli):
    code, out, _ = cli("--json", "org", "create", "--name", "Acme", "--email", "ops@acme.test")
    assert code == 0
    org_id = as_json(out)["org_id"]
    assert org_id.startswith("org_")
    code, out, _ = cli("--json", "org", "show", org_id)
    assert as_json(out) == {
        "org_id": org_id,
        "name": "Acme",
        "balance_usd": "0.000000",
        "settings": {
            "cache_enabled": False,
            "cache_ttl_seconds": 1800,
            "rate_limit_rpm": None,
            "low_balance_usd": None,
        },
    }


def test_given_a_new_name_when_set_then_the_org_is_renamed_and_the_rename_audited(cli):
    org_id = as_json(cli("--json", "org", "create", "--name", "A", "--email", "a@b.c")[1])["org_id"]
    code, out, _ = cli("--json", "org", "set", org_id, "--name", "  Engines Ltd  ")
    assert code == 0 and as_json(out)["name"] == "Engines Ltd"
    assert as_json(cli("--json", "org", "show", org_id)[1])["name"] == "Engines Ltd"
    code, out, _ = cli("--json", "audit", "--org", org_id)
    assert code == 0 and '"name": "Engines Ltd"' in out


def test_given_grants_of_a_tenth_when_added_then_the_balance_is_exact(cli):
    org_id = as_json(cli("--json", "org", "create", "--name", "A", "--email", "a@b.c")[1])["org_id"]
    for _ in range(3):
        code, out, _ = cli("--json", "credits", "grant", "--org", org_id, "--usd", "0.1")
        assert code == 0
    assert as_json(out) == {"org_id": org_id, "balance_usd": "0.300000"}
    code, out, _ = cli(
        "--json", "credits", "grant", "--org", org_id, "--usd", "-0.05", "--reason", "fix"
    )
    assert as_json(out)["balance_usd"] == "0.250000"


@pytest.mark.parametrize(
    "argv",
    [
        ["credits", "grant", "--org", "ORG", "--usd", "abc"],
        ["credits", "grant", "--org", "ORG", "--usd", "-1"],
        ["credits", "grant", "--org", "ORG", "--usd", "0"],
        ["org", "set", "ORG", "--cache-ttl", "999999999"],
        ["org", "set", "ORG", "--low-balance-usd", "-1"],
        ["org", "set", "ORG", "--low-balance-usd", "1e3"],
        ["org", "set", "ORG", "--low-balance-usd", "NaN"],
        ["org", "set", "ORG", "--low-balance-usd", "1000000.000001"],
        ["org", "set", "ORG", "--low-balance-usd", "0.0000001"],
        ["org", "set", "ORG", "--low-balance-usd", " 5"],
        ["org", "set", "ORG", "--low-balance-usd", ""],
        ["org", "set", "ORG", "--name", "   "],
        ["org", "set", "ORG", "--name", "x" * 101],
        ["org", "set", "ORG", "--name", "tab\there"],
        ["org", "show", "org_doesnotexist"],
        ["key", "revoke", "key_doesnotexist"],
        ["key", "rotate", "key_doesnotexist"],
        ["key", "rotate", "key_0000000000000000", "--grace-seconds", "-1"],
        ["key", "rotate", "key_0000000000000000", "--grace-seconds", "1.5"],
        ["key", "create", "--org", "org_doesnotexist"],
        ["usage", "export", "--org", "org_doesnotexist"],
    ],
)
def test_given_bad_input_when_run_then_a_one_line_error_and_nonzero_exit(cli, argv):
    org_id = as_json(cli("--json", "org", "create", "--name", "A", "--email", "a@b.c")[1])["org_id"]
    argv = [org_id if a == "ORG" else a for a in argv]
    try:
        code, out, err = cli("--json", *argv)
    except SystemExit as exc:  # argparse refuses malformed values itself
        code, out, err = int(exc.code or 1), "", "argparse"
    assert code != 0 and out == ""
    assert err and "Traceback" not in err


def test_given_org_settings_when_set_then_show_returns_them(cli):
    org_id = as_json(cli("--json", "org", "create", "--name", "A", "--email", "a@b.c")[1])["org_id"]
    code, out, _ = cli(
        "--json", "org", "set", org_id, "--cache", "on", "--cache-ttl", "600", "--rpm", "120"
    )
    assert code == 0
    assert as_json(out)["settings"] == {
        "cache_enabled": True,
        "cache_ttl_seconds": 600,
        "rate_limit_rpm": 120,
        "low_balance_usd": None,
    }
    assert as_json(cli("--json", "org", "show", org_id)[1])["settings"]["cache_enabled"] is True
    code, out, _ = cli("--json", "org", "set", org_id, "--rpm", "0")
    assert as_json(out)["settings"]["rate_limit_rpm"] is None


def test_given_a_low_balance_threshold_when_set_then_shown_kept_and_removed_by_off(cli, tables):
    org_id = as_json(cli("--json", "org", "create", "--name", "A", "--email", "a@b.c")[1])["org_id"]
    code, out, _ = cli("--json", "org", "set", org_id, "--low-balance-usd", "12.5")
    assert code == 0 and as_json(out)["settings"]["low_balance_usd"] == "12.500000"
    assert tables.store.get_org(org_id).low_balance_usd == Decimal("12.5")
    # Another setting leaves it; the largest and the finest amounts are exact.
    code, out, _ = cli("--json", "org", "set", org_id, "--cache", "on")
    assert as_json(out)["settings"]["low_balance_usd"] == "12.500000"
    for amount, shown in (
        ("1000000", "1000000.000000"),
        ("0.000001", "0.000001"),
        ("0", "0.000000"),
    ):
        code, out, _ = cli("--json", "org", "set", org_id, "--low-balance-usd", amount)
        assert code == 0 and as_json(out)["settings"]["low_balance_usd"] == shown
    code, out, _ = cli("--json", "org", "show", org_id)
    assert as_json(out)["settings"]["low_balance_usd"] == "0.000000"
    code, out, _ = cli("--json", "org", "set", org_id, "--low-balance-usd", "off")
    assert code == 0 and as_json(out)["settings"]["low_balance_usd"] is None
    assert tables.store.get_org(org_id).low_balance_usd is None
    _, out, _ = cli("--json", "audit", "--org", org_id, "--limit", "10")
    recorded = [json.loads(line)["details"].get("low_balance_usd") for line in out.splitlines()]
    assert recorded == ["off", "0", "0.000001", "1000000", None, "12.5"]


def test_given_a_key_when_created_and_revoked_then_the_store_agrees(cli, tables):
    org_id = as_json(cli("--json", "org", "create", "--name", "A", "--email", "a@b.c")[1])["org_id"]
    _, out, _ = cli(
        "--json",
        "key",
        "create",
        "--org",
        org_id,
        "--name",
        "ci",
        "--models",
        "test-chat, test-embed",
        "--expires-in",
        "30",
    )
    created = as_json(out)
    assert set(created) == {"key_id", "api_key"} and created["api_key"].startswith("sk-dy-")
    from dynoyard.domain.keys import hash_key

    key = tables.store.find_key(hash_key(created["api_key"]))
    assert key is not None and key.models == {"test-chat", "test-embed"} and key.org_id == org_id
    assert key.expires_at is not None and not key.revoked
    assert as_json(cli("--json", "key", "revoke", created["key_id"])[1]) == {
        "key_id": created["key_id"],
        "revoked": True,
    }
    assert tables.store.find_key(hash_key(created["api_key"])).revoked


def test_given_a_key_when_rotated_then_the_new_key_replaces_it_and_a_replay_fails(cli, tables):
    from dynoyard.domain.keys import hash_key

    org_id = as_json(cli("--json", "org", "create", "--name", "A", "--email", "a@b.c")[1])["org_id"]
    argv = ["--json", "key", "create", "--org", org_id, "--name", "ci", "--daily-usd", "5"]
    created = as_json(cli(*argv)[1])
    code, out, err = cli("--json", "key", "rotate", created["key_id"], "--grace-seconds", "600")
    assert code == 0, err
    rotated = as_json(out)
    assert set(rotated) == {"key_id", "api_key", "rotated_from"}
    assert rotated["rotated_from"] == created["key_id"] and rotated["api_key"].startswith("sk-dy-")
    old = tables.store.find_key(hash_key(created["api_key"]))
    new = tables.store.find_key(hash_key(rotated["api_key"]))
    assert old is not None and old.usable_at(time.time()) and not old.usable_at(time.time() + 601)
    assert new is not None and new.key_id == rotated["key_id"] and new.name == "ci"
    assert new.limits == old.limits and new.counters_hash == old.key_hash
    # Rotated already (in its grace period): a second rotation is refused, no key made.
    code, out, err = cli("--json", "key", "rotate", created["key_id"])
    assert code == 1 and out == "" and "already rotated" in err
    code, out, err = cli("--json", "key", "rotate", rotated["key_id"], "--grace-seconds", "86401")
    assert code == 1 and out == "" and "grace period" in err
    code, out, _ = cli("key", "rotate", rotated["key_id"])  # without --json: readable lines
    assert code == 0 and f"rotated_from: {rotated['key_id']}" in out
    assert tables.store.find_key(hash_key(rotated["api_key"])).revoked  # no grace: at once


def record(org_id: str, when: datetime, request_id: str, cost: str) -> UsageRecord:
    return UsageRecord(
        request_id=request_id,
        started_at=when,
        org_id=org_id,
        key_id="key_x",
        endpoint="chat/completions",
        model="m",
        provider="p",
        status=200,
        prompt_tokens=3,
        completion_tokens=4,
        cost_usd=Decimal(cost),
        latency_ms=12,
    )


def test_given_usage_records_when_exported_then_jsonl_and_csv_hold_the_contract_fields(cli, tables):
    org_id = as_json(cli("--json", "org", "create", "--name", "A", "--email", "a@b.c")[1])["org_id"]
    now = datetime.now(UTC)
    tables.store.settle(
        record(org_id, now - timedelta(days=2), "req_old", "0.00000105"), Decimal(0)
    )
    tables.store.settle(record(org_id, now, "req_new", "0.5"), Decimal(0))

    code, out, _ = cli("--json", "usage", "export", "--org", org_id)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["request_id"] for r in rows] == ["req_old", "req_new"]
    assert set(rows[0]) >= {
        "request_id",
        "timestamp",
        "org_id",
        "key_id",
        "model",
        "provider",
        "status",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cost_usd",
        "latency_ms",
        "cached",
        "stream",
    }
    assert rows[0]["cost_usd"] == "0.00000105" and rows[0]["total_tokens"] == 7

    since = (now - timedelta(days=1)).date().isoformat()
    code, out, _ = cli("usage", "export", "--org", org_id, "--since", since, "--format", "csv")
    parsed = list(csv.DictReader(io.StringIO(out)))
    assert [r["request_id"] for r in parsed] == ["req_new"]
    assert list(parsed[0]) == list(EXPORT_FIELDS) and parsed[0]["cost_usd"] == "0.500000"


def test_given_a_model_id_shaped_like_a_formula_when_exported_then_csv_keeps_it_text(cli, tables):
    org_id = as_json(cli("--json", "org", "create", "--name", "A", "--email", "a@b.c")[1])["org_id"]
    now = datetime.now(UTC)
    for n, model in enumerate(["=1+1", "@SUM(A1)", "plain"]):
        hostile = record(org_id, now + timedelta(milliseconds=n), f"req_{n}", "0.1")
        hostile.model = model
        tables.store.settle(hostile, Decimal(0))
    _, out, _ = cli("usage", "export", "--org", org_id, "--format", "csv")
    assert [r["model"] for r in csv.DictReader(io.StringIO(out))] == ["'=1+1", "'@SUM(A1)", "plain"]
    _, out, _ = cli("usage", "export", "--org", org_id)
    assert [json.loads(line)["model"] for line in out.splitlines()] == ["=1+1", "@SUM(A1)", "plain"]


def test_given_the_console_script_when_run_as_a_module_then_it_prints_json_only(tables):
    import os

    env = {**os.environ, **tables.env}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dynoyard",
            "--json",
            "org",
            "create",
            "--name",
            "Sub",
            "--email",
            "s@x.y",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["org_id"].startswith("org_")
    help_text = subprocess.run(
        [sys.executable, "-c", "import sys, dynoyard.cli; print('botocore' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert help_text.stdout.strip() == "False"  # --help and parsing load no AWS SDK


def test_given_records_over_days_when_daily_is_asked_then_one_line_per_day_and_model_that_adds_up(
    cli, tables
):
    org_id = as_json(cli("--json", "org", "create", "--name", "D", "--email", "d@e.f")[1])["org_id"]
    day = datetime(2026, 11, 20, 23, 30, tzinfo=UTC)
    costs = []
    for n, (hours, model) in enumerate([(0, "a"), (0.25, "a"), (1, "b"), (1, "a"), (25, "a")]):
        when = day + timedelta(hours=hours)
        rec = record(org_id, when, f"req_daily{n}", f"0.00{n + 1}")
        rec.model = model
        costs.append(rec.cost_usd)
        tables.store.settle(rec, Decimal(0))
    code, out, _ = cli("--json", "usage", "daily", "--org", org_id, "--since", "2026-11-20")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(x["date"], x["model"], x["requests"]) for x in lines] == [
        ("2026-11-20", "a", 2),
        ("2026-11-21", "a", 1),
        ("2026-11-21", "b", 1),
        ("2026-11-22", "a", 1),
    ]
    assert set(lines[0]) == {
        "date",
        "model",
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "cost_usd",
        "errors",
        "cache_hits",
    }
    assert sum(Decimal(x["cost_usd"]) for x in lines) == sum(costs)
    assert cli("usage", "daily", "--org", "org_missing")[0] != 0


# -- billing history and reconcile -------------------------------------------------------


def new_org(cli) -> str:
    return as_json(cli("--json", "org", "create", "--name", "B", "--email", "b@c.d")[1])["org_id"]


def lines_of(output: str) -> list[dict]:
    return [json.loads(line) for line in output.strip().splitlines()]


def topup(org_id: str, session: str, cents: int) -> Movement:
    amount = cents_to_usd(cents)
    return Movement(
        movement_id=f"topup:{session}",
        org_id=org_id,
        kind="topup",
        amount_usd=amount,
        at=iso_now(),
        stripe_checkout_session=session,
        stripe_charge=f"ch_{session}",
        card_brand="visa",
        card_last4="4242",
        charge=Charge(f"ch_{session}", org_id, cents, card_brand="visa", card_last4="4242"),
    )


def test_given_grants_and_a_topup_when_history_is_asked_then_one_movement_per_line_newest_first(
    cli, tables
):
    org_id = new_org(cli)
    cli("--json", "credits", "grant", "--org", org_id, "--usd", "0.1")
    cli("--json", "credits", "grant", "--org", org_id, "--usd", "-0.05", "--reason", "fix")
    assert asyncio.run(_apply(tables, topup(org_id, f"cs_{org_id}", 1234)))
    code, out, err = cli("--json", "billing", "history", "--org", org_id)
    assert code == 0 and err == ""
    entries = lines_of(out)
    assert [(e["kind"], e["amount_usd"]) for e in entries] == [
        ("topup", "12.340000"),
        ("grant", "-0.050000"),
        ("grant", "0.100000"),
    ]
    assert entries[0]["card_brand"] == "visa" and entries[0]["card_last4"] == "4242"
    assert entries[0]["stripe_checkout_session"] == f"cs_{org_id}"
    assert entries[1]["reason"] == "fix" and all(e["currency"] == "usd" for e in entries)
    assert entries[0]["at"] > entries[1]["at"] > entries[2]["at"]
    # A page at a time: the cursor to go on with goes to stderr, and it goes on.
    code, out, err = cli("--json", "billing", "history", "--org", org_id, "--limit", "2")
    assert code == 0 and len(lines_of(out)) == 2
    cursor = err.strip().removeprefix("more: --before ")
    code, out, err = cli("--json", "billing", "history", "--org", org_id, "--before", cursor)
    assert code == 0 and err == "" and lines_of(out) == entries[2:]
    # Without --json: one line each, the time, kind and amount first.
    code, out, _ = cli("billing", "history", "--org", org_id)
    first = out.splitlines()[0].split("  ")
    assert first[1:3] == ["topup", "12.340000"] and "card_last4=4242" in first


@pytest.mark.parametrize(
    "argv",
    [
        ["billing", "history", "--org", "org_doesnotexist"],
        ["billing", "history", "--org", "ORG", "--before", "not-a-cursor"],
        ["billing", "history", "--org", "ORG", "--before", "eyJzayI6ICJMRURHRVIjeCJ9"],
        ["billing", "history", "--org", "ORG", "--limit", "0"],
        ["billing", "reconcile", "--org", "org_doesnotexist"],
    ],
)
def test_given_bad_billing_input_when_run_then_a_one_line_error_and_exit_1(cli, argv):
    org_id = new_org(cli)
    argv = [org_id if a == "ORG" else a for a in argv]
    try:
        code, out, err = cli("--json", *argv)
    except SystemExit as exc:  # argparse refuses malformed values itself
        code, out, err = int(exc.code or 1), "", "argparse"
    assert code in (1, 2) and out == ""
    assert err and "Traceback" not in err


async def _apply(tables, movement: Movement) -> bool:
    try:
        return await tables.store.store.billing.apply(movement)
    finally:
        await tables.store.store.aclose()


def usage_record(org_id: str, request_id: str, cost: str, when: datetime) -> UsageRecord:
    return UsageRecord(
        request_id=request_id,
        started_at=when,
        org_id=org_id,
        key_id="key_x",
        endpoint="chat/completions",
        model="m",
        status=200,
        cost_usd=Decimal(cost),
    )


def reconciled(cli, org_id: str) -> tuple[int, dict]:
    code, out, _ = cli("--json", "billing", "reconcile", "--org", org_id)
    return code, as_json(out)


def test_given_spending_a_hold_in_flight_and_a_rolled_up_day_when_reconciled_then_zero(cli, tables):
    store = tables.store
    org_id = new_org(cli)
    cli("--json", "credits", "grant", "--org", org_id, "--usd", "10")
    assert asyncio.run(_apply(tables, topup(org_id, f"cs_{org_id}", 500)))
    yesterday = datetime.now(UTC) - timedelta(days=1)
    for number, (cost, when) in enumerate(
        [("0.000123", yesterday), ("0.25", yesterday), ("1.1", datetime.now(UTC))]
    ):
        store.hold(org_id, Decimal("2"))
        store.settle(usage_record(org_id, f"req_rc{number}", cost, when), Decimal("2"))
    code, line = reconciled(cli, org_id)
    assert code == 0
    assert line == {
        "org_id": org_id,
        "balance_usd": "13.649877",
        "held_usd": "0.000000",
        "ledger_usd": "13.649877",
        "difference_usd": "0.000000",
    }
    # A hold in flight: off the balance, in held_usd, and no difference.
    store.hold(org_id, Decimal("0.7"))
    code, line = reconciled(cli, org_id)
    assert code == 0 and line["held_usd"] == "0.700000"
    assert line["balance_usd"] == "12.949877" and line["difference_usd"] == "0.000000"
    store.settle(usage_record(org_id, "req_rc_late", "0.2", datetime.now(UTC)), Decimal("0.7"))
    code, line = reconciled(cli, org_id)
    assert code == 0 and line["held_usd"] == "0.000000" and line["ledger_usd"] == "13.449877"
    # Yesterday rolled up (as the scheduled job will: an entry, the balance untouched)
    # replaces yesterday's records, which count no more one by one.
    tables.client.put_item(
        TableName=tables.accounts,
        Item={
            "pk": {"S": f"ORG#{org_id}"},
            "sk": {"S": f"LEDGER#{iso_now()}#usage_daily:{yesterday.date().isoformat()}"},
            "movement_id": {"S": f"usage_daily:{yesterday.date().isoformat()}"},
            "kind": {"S": "usage_daily"},
            "amount_usd": {"N": "-0.250123"},
            "currency": {"S": "usd"},
            "at": {"S": iso_now()},
            "date": {"S": yesterday.date().isoformat()},
        },
    )
    code, line = reconciled(cli, org_id)
    assert code == 0 and line["ledger_usd"] == "13.449877"
    assert line["difference_usd"] == "0.000000"


def test_given_money_that_bypassed_the_ledger_when_reconciled_then_the_difference_and_exit_3(
    cli, tables
):
    clean, drifted = new_org(cli), new_org(cli)
    for org_id in (clean, drifted):
        cli("--json", "credits", "grant", "--org", org_id, "--usd", "3")
    tables.client.update_item(
        TableName=tables.accounts,
        Key={"pk": {"S": f"ORG#{drifted}"}, "sk": {"S": "META"}},
        UpdateExpression="ADD balance_usd :x",
        ExpressionAttributeValues={":x": {"N": "1.5"}},
    )
    code, line = reconciled(cli, drifted)
    assert code == DIFFERENCE_EXIT
    assert line["balance_usd"] == "4.500000" and line["ledger_usd"] == "3.000000"
    assert line["difference_usd"] == "1.500000"
    assert reconciled(cli, clean)[0] == 0
    # Every organization: one line each (the scan pages through the table), exit 3.
    code, out, err = cli("--json", "billing", "reconcile")
    assert code == DIFFERENCE_EXIT and "Traceback" not in err
    found = {line["org_id"]: line for line in lines_of(out)}
    assert found[clean]["difference_usd"] == "0.000000"
    assert found[drifted]["difference_usd"] == "1.500000"
    assert len(found) == len(lines_of(out))
    code, out, _ = cli("billing", "reconcile", "--org", drifted)
    assert out.startswith(drifted) and "difference_usd=1.500000" in out


def test_given_every_way_an_org_gets_money_when_reconciled_then_each_is_in_the_ledger(
    cli, tables, tmp_path
):
    from dynoyard.local.seed import DEMO_CREDITS, ensure_demo_org

    created = new_org(cli)  # `org create`: no money, nothing to enter
    granted = new_org(cli)
    cli("--json", "credits", "grant", "--org", granted, "--usd", "7.5")
    cli("--json", "credits", "grant", "--org", granted, "--usd", "-2.5", "--reason", "back")
    demo = ensure_demo_org(tables.store, tmp_path / "demo-org").org_id  # `make dev`'s seed
    for org_id, credited in ((created, "0"), (granted, "5"), (demo, str(DEMO_CREDITS))):
        code, line = reconciled(cli, org_id)
        assert code == 0 and Decimal(line["ledger_usd"]) == Decimal(credited)
        assert line["difference_usd"] == "0.000000" and line["balance_usd"] == line["ledger_usd"]
