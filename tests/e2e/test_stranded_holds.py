"""Stranded holds: a hold whose settle never comes (its gateway process killed mid-request,
or a hold taken and dropped) is returned by the cleanup job's step after its expiry and not
before, exactly once under two concurrent runs and two runs in a row; a settle arriving
after the return charges the cost once; normal requests leave no hold attribute behind; a
replayed settle changes nothing. Against DynamoDB Local and a real gateway process."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest

from dynoyard.adapters.dynamo.codec import org_key, plain
from dynoyard.domain.gateway import STRANDED_AFTER_DEADLINE_SECONDS
from dynoyard.domain.reconcile import OrgMoney
from dynoyard.domain.usage import UsageRecord, utcnow
from dynoyard.maintenance.job import JobResult
from dynoyard.maintenance.run import run_cleanup
from dynoyard.maintenance.settings import CleanupSettings
from dynoyard.maintenance.stranded_holds import stranded_holds_step
from tests.conftest import Tables, ddb_endpoint, running_gateway
from tests.e2e.test_ledger_exact import org_money, reconciled

CHAT = [{"role": "user", "content": "a question that never gets its answer"}]
LIFETIME = 100.0  # seconds a directly taken hold stays before it may be returned


def org_item(tables: Tables, org_id: str) -> dict[str, Any]:
    answer = tables.client.get_item(
        TableName=tables.accounts, Key=org_key(org_id), ConsistentRead=True
    )
    return plain(answer["Item"])


def recorded_holds(tables: Tables, org_id: str) -> dict[str, dict[str, Any]]:
    item = org_item(tables, org_id)
    return {name: value for name, value in item.items() if name.startswith("hold_")}


class Returns(logging.Handler):
    """The step's log lines of returned holds."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "stranded hold returned":
            self.lines.append(dict(record.__dict__))


def run_step(tables: Tables, now: float) -> tuple[JobResult, list[dict[str, Any]]]:
    """One run of the step; the holds it returned, as logged (other tests' orgs included:
    the tables are shared, so callers look at their own orgs)."""
    logger = logging.getLogger(f"test.stranded.{uuid.uuid4().hex}")
    logger.propagate = False
    handler = Returns()
    logger.addHandler(handler)
    settings = CleanupSettings(
        accounts_table=tables.accounts,
        usage_table=tables.usage,
        cache_table=tables.names["CACHE_TABLE"],
        dynamodb_endpoint=ddb_endpoint(),
    )
    result = asyncio.run(
        run_cleanup(
            settings, now=now, steps=[("stranded_holds", stranded_holds_step)], logger=logger
        )
    )
    (report,) = result.reports
    assert report.finished and report.failed is None, report.show()
    assert report.counts["holds_returned"] == len(handler.lines)
    return result, handler.lines


def returned(tables: Tables, now: float, *org_ids: str) -> list[dict[str, Any]]:
    """What one run returned of these organizations' holds."""
    return [line for line in run_step(tables, now)[1] if line["org_id"] in org_ids]


def request_record(org_id: str, key_id: str, request_id: str, cost: str) -> UsageRecord:
    return UsageRecord(
        request_id=request_id,
        started_at=utcnow(),
        org_id=org_id,
        key_id=key_id,
        endpoint="chat/completions",
        model="test-chat",
        status=200,
        cost_usd=Decimal(cost),
    )


def take_hold(tables: Tables, org_id: str, amount: str) -> tuple[str, int]:
    """A hold as the gateway takes it, then dropped (no settle): its id and its expiry."""
    request_id = f"req_{uuid.uuid4().hex[:24]}"
    hold = tables.store.hold(
        org_id, Decimal(amount), request_id=request_id, returnable_after=LIFETIME
    )
    assert hold.recorded
    expires_at = int(recorded_holds(tables, org_id)[f"hold_{request_id}"]["expires_at"])
    return request_id, expires_at


# -- a gateway process killed mid-request -------------------------------------------------


def test_given_a_killed_gateway_when_the_job_runs_then_its_hold_returns_once_after_expiry(
    make_account, tables, catalog_path, fake_provider, tmp_path
):
    provider, _ = fake_provider
    account = make_account("2")
    marker = f"marker-{uuid.uuid4().hex}"
    overrides = {"DYNOYARD_UPSTREAM_READ_TIMEOUT": "10", "DYNOYARD_REQUEST_DEADLINE_SECONDS": "20"}
    with running_gateway(tables, catalog_path, tmp_path, overrides) as gateway:

        def doomed_request() -> None:
            with pytest.raises(httpx.HTTPError):  # the process dies before it answers
                httpx.post(
                    f"{gateway.base_url}/v1/chat/completions",
                    json={"model": "test-slow", "messages": CHAT, "user": marker},
                    headers={"authorization": f"Bearer {account.key}"},
                    timeout=30,
                )

        client = threading.Thread(target=doomed_request)
        taken_at = time.time()
        client.start()
        deadline = time.monotonic() + 5
        while not provider.requests_for(marker):  # the upstream was called: the hold is taken
            assert time.monotonic() < deadline
            time.sleep(0.02)
        gateway.process.kill()  # as Lambda kills a process at its timeout: no settle
        gateway.process.wait(timeout=10)
        client.join(timeout=10)
    holds = recorded_holds(tables, account.org_id)
    assert len(holds) == 1
    ((name, hold),) = holds.items()
    request_id = name.removeprefix("hold_")
    expires_at = int(hold["expires_at"])
    # The request's deadline, then the grace: past any Lambda timeout and settle retry.
    lifetime = 20 + STRANDED_AFTER_DEADLINE_SECONDS
    assert taken_at + lifetime <= expires_at <= time.time() + lifetime + 1
    money = org_money(tables, account.org_id)
    assert money.held_usd == hold["amount"] > 0
    assert money.balance_usd + money.held_usd == Decimal(2)

    assert returned(tables, expires_at - 1, account.org_id) == []  # not before its expiry
    assert org_money(tables, account.org_id) == money
    (line,) = returned(tables, expires_at, account.org_id)
    assert returned(tables, expires_at + 3600, account.org_id) == []  # once

    assert recorded_holds(tables, account.org_id) == {}
    assert org_money(tables, account.org_id) == OrgMoney(Decimal(2), Decimal(0))
    found = reconciled(tables, account.org_id)
    assert found.difference_usd == 0 and found.held_usd == 0, found.show()
    assert line["request_id"] == request_id and Decimal(line["amount_usd"]) == hold["amount"]
    assert CHAT[0]["content"] not in str(line) and account.key not in str(line)


# -- holds taken through the ledger and dropped -------------------------------------------


def test_given_two_concurrent_runs_then_two_more_when_holds_are_stranded_then_each_returns_once(
    make_account, tables, capsys
):
    first, second = make_account("3"), make_account("1")
    stranded = [take_hold(tables, first.org_id, "0.25") for _ in range(4)]
    stranded.append(take_hold(tables, second.org_id, "0.5"))
    late_id = f"req_{uuid.uuid4().hex[:24]}"  # taken later: not expired at the run's time
    tables.store.hold(
        first.org_id, Decimal("0.1"), request_id=late_id, returnable_after=LIFETIME + 600
    )
    now = max(expires for _, expires in stranded)

    orgs = (first.org_id, second.org_id)

    async def two_runs() -> list[tuple[JobResult, list[dict[str, Any]]]]:
        runs = (asyncio.to_thread(run_step, tables, now) for _ in "ab")
        return list(await asyncio.gather(*runs))

    capsys.readouterr()
    lines = [line for _, run in asyncio.run(two_runs()) for line in run if line["org_id"] in orgs]
    assert sorted(line["request_id"] for line in lines) == sorted(r for r, _ in stranded)
    assert '"StrandedHoldsReturned"' in capsys.readouterr().out  # the EMF metric
    assert returned(tables, now, *orgs) == []
    assert returned(tables, now + 1, *orgs) == []

    assert org_money(tables, first.org_id) == OrgMoney(Decimal("2.9"), Decimal("0.1"))
    assert list(recorded_holds(tables, first.org_id)) == [f"hold_{late_id}"]
    assert org_money(tables, second.org_id) == OrgMoney(Decimal(1), Decimal(0))
    for account in (first, second):
        assert reconciled(tables, account.org_id).difference_usd == 0


def test_given_a_hold_returned_as_stranded_when_its_settle_comes_late_then_the_cost_is_charged_once(
    make_account, tables
):
    account = make_account("1")
    request_id, expires_at = take_hold(tables, account.org_id, "0.4")
    assert len(returned(tables, expires_at, account.org_id)) == 1
    assert org_money(tables, account.org_id) == OrgMoney(Decimal(1), Decimal(0))

    record = request_record(account.org_id, account.key_id, request_id, "0.15")
    tables.store.settle(record, Decimal("0.4"), recorded=True)
    tables.store.settle(record, Decimal("0.4"), recorded=True)  # replayed: changes nothing
    assert org_money(tables, account.org_id) == OrgMoney(Decimal("0.85"), Decimal(0))
    assert returned(tables, expires_at + 3600, account.org_id) == []
    found = reconciled(tables, account.org_id)
    assert found.difference_usd == 0 and found.ledger_usd == Decimal("0.85"), found.show()


def test_given_a_recorded_hold_settled_twice_then_it_leaves_once_and_nothing_is_returned_later(
    make_account, tables
):
    account = make_account("1")
    request_id, expires_at = take_hold(tables, account.org_id, "0.4")
    record = request_record(account.org_id, account.key_id, request_id, "0.1")
    tables.store.settle(record, Decimal("0.4"), recorded=True)
    assert recorded_holds(tables, account.org_id) == {}
    tables.store.settle(record, Decimal("0.4"), recorded=True)  # a lost answer, retried
    assert org_money(tables, account.org_id) == OrgMoney(Decimal("0.9"), Decimal(0))
    assert returned(tables, expires_at + 86_400, account.org_id) == []
    assert org_money(tables, account.org_id) == OrgMoney(Decimal("0.9"), Decimal(0))
    assert reconciled(tables, account.org_id).difference_usd == 0


def test_given_an_unrecorded_hold_then_it_settles_as_before_and_is_never_returned(
    make_account, tables
):
    account = make_account("1")
    tables.store.hold(account.org_id, Decimal("0.3"))  # no request id: no attribute
    assert recorded_holds(tables, account.org_id) == {}
    assert returned(tables, time.time() + 86_400, account.org_id) == []
    assert org_money(tables, account.org_id) == OrgMoney(Decimal("0.7"), Decimal("0.3"))
    record = request_record(account.org_id, account.key_id, f"req_{uuid.uuid4().hex[:24]}", "0.1")
    tables.store.settle(record, Decimal("0.3"))
    assert org_money(tables, account.org_id) == OrgMoney(Decimal("0.9"), Decimal(0))


@pytest.mark.parametrize("request_id", ["req_a.b", "hold #1", "", "x" * 65, "req_ä", 'a"b'])
def test_given_an_unsafe_request_id_when_holding_then_refused_before_any_write(
    make_account, tables, request_id
):
    account = make_account("1")
    with pytest.raises(ValueError):
        tables.store.hold(account.org_id, Decimal("0.1"), request_id=request_id)
    assert org_money(tables, account.org_id) == OrgMoney(Decimal(1), Decimal(0))


# -- normal requests -----------------------------------------------------------------------


def test_given_normal_requests_when_settled_then_no_hold_attribute_stays(
    gateway, make_account, tables
):
    account = make_account("1")
    headers = {"authorization": f"Bearer {account.key}"}
    url = f"{gateway.base_url}/v1/chat/completions"
    answer = httpx.post(url, json={"model": "test-chat", "messages": CHAT}, headers=headers)
    assert answer.status_code == 200
    body = {"model": "test-chat", "messages": CHAT, "stream": True}
    with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as stream:
        assert stream.status_code == 200
        assert any(line == "data: [DONE]" for line in stream.iter_lines())
    deadline = time.monotonic() + 10
    while org_money(tables, account.org_id).held_usd:  # the stream settles as it closes
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert recorded_holds(tables, account.org_id) == {}
    money = org_money(tables, account.org_id)
    assert money.held_usd == 0 and money.balance_usd < 1
    assert reconciled(tables, account.org_id).difference_usd == 0
