"""Usage in the console: records for a range, filtered by key and model, in pages; daily
totals equal to the records; members may read, other organizations may not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from dynoyard.domain.usage import UsageRecord
from tests.conftest import Tables
from tests.e2e.test_console_auth import Console
from tests.e2e.test_console_keys import console, error_code, person, store_call  # noqa: F401

DAY = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def seed(tables: Tables, org_id: str) -> list[UsageRecord]:
    records = []
    for n in range(7):
        record = UsageRecord(
            request_id=f"req_{n:024x}",
            started_at=DAY + timedelta(hours=n * 9),  # over three days
            org_id=org_id,
            key_id="key_a" if n % 2 else "key_b",
            endpoint="chat/completions",
            model="m1" if n < 5 else "m2",
            status=200 if n != 3 else 502,
            prompt_tokens=10 * n,
            completion_tokens=n,
            cost_usd=Decimal("0.000123") * n,
            cached=n == 6,
        )
        tables.store.settle(record, Decimal(0))
        records.append(record)
    return records


def test_records_come_in_pages_filtered_by_key_and_model_within_the_range(
    console: Console,  # noqa: F811
    tables: Tables,
) -> None:
    owner = person(console)
    records = seed(tables, owner.org_id)
    path = f"/api/orgs/{owner.org_id}/usage"
    since, until = DAY.isoformat(), (DAY + timedelta(days=4)).isoformat()

    def every_page(**extra: str) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        cursor = None
        while True:
            params = {"since": since, "until": until, "limit": 3, **extra}
            page = owner.call(
                "GET", path, params={**params, **({"cursor": cursor} if cursor else {})}
            )
            assert page.status_code == 200, page.text
            seen += page.json()["records"]
            cursor = page.json()["next"]
            if cursor is None:
                return seen

    seen = every_page()
    assert [r["request_id"] for r in seen] == [r.request_id for r in records]
    assert every_page(order="oldest") == seen
    # The console's table: newest first, the same records, paged the other way.
    newest = every_page(order="newest")
    assert [r["request_id"] for r in newest] == [r.request_id for r in reversed(records)]
    assert seen[0]["cost_usd"] == "0.000000" and "client_ip" not in seen[0]
    by_key = owner.call(
        "GET", path, params={"since": since, "until": until, "key_id": "key_a", "limit": 500}
    )
    assert {r["key_id"] for r in by_key.json()["records"]} == {"key_a"}
    by_model = owner.call(
        "GET", path, params={"since": since, "until": until, "model": "m2", "limit": 500}
    )
    assert [r["request_id"] for r in by_model.json()["records"]] == [
        r.request_id for r in records[5:]
    ]
    narrow = owner.call(
        "GET",
        path,
        params={"since": DAY.isoformat(), "until": (DAY + timedelta(hours=10)).isoformat()},
    )
    assert len(narrow.json()["records"]) == 2


def test_daily_totals_equal_the_records(console: Console, tables: Tables) -> None:  # noqa: F811
    owner = person(console)
    records = seed(tables, owner.org_id)
    days = owner.call(
        "GET",
        f"/api/orgs/{owner.org_id}/usage/daily",
        params={"since": DAY.isoformat(), "until": (DAY + timedelta(days=4)).isoformat()},
    ).json()["days"]
    assert sum(d["requests"] for d in days) == 7
    assert sum(Decimal(d["cost_usd"]) for d in days) == sum(r.cost_usd for r in records)
    assert sum(d["errors"] for d in days) == 1 and sum(d["cache_hits"] for d in days) == 1
    assert {(d["date"], d["model"]) for d in days} >= {("2026-11-20", "m1"), ("2026-11-22", "m2")}


def test_usage_is_for_members_only_and_hostile_queries_are_400(
    console: Console,  # noqa: F811
    tables: Tables,
) -> None:
    owner, member, stranger = person(console), person(console), person(console)
    seed(tables, owner.org_id)
    store_call(tables, "add_member", owner.org_id, member.user_id, "member")
    path = f"/api/orgs/{owner.org_id}/usage"
    assert member.call("GET", path).status_code == 200
    assert error_code(stranger.call("GET", path)) == "org_not_found"
    assert error_code(stranger.call("GET", path + "/daily")) == "org_not_found"
    for params, param in (
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-11-22", "until": "2026-11-21"}, "since"),
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": "all"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"order": "sideways"}, "order"),
        ({"order": ""}, "order"),
    ):
        answer = owner.call("GET", path, params=params)
        assert answer.status_code == 400, (params, answer.text)
        assert answer.json()["error"]["param"] == param
    # A cursor of another org's list is no key to this one.
    other = person(console)
    seed(tables, other.org_id)
    theirs = other.call("GET", f"/api/orgs/{other.org_id}/usage", params={"limit": 1}).json()
    mine = owner.call("GET", path, params={"limit": 500, "cursor": theirs["next"]})
    assert all(r["org_id"] == owner.org_id for r in mine.json().get("records", []))
