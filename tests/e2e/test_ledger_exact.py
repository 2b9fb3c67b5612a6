"""The ledger is exact to the unit, end to end: a running gateway spends on one organization
while top-ups (straight through `BillingStore.apply`, replayed, and as signed Stripe events
through the served webhook) and operator grants land at the same time; requests are cut
short (the client leaves, the upstream fails or breaks off); a refund comes after the
spending. Then `reconcile` finds no difference and no hold left in flight, also with
DynamoDB refusing a third of the writes as conflicts. A hold in flight shows in `held_usd`
and reconciles while its request is still open; a closed organization takes no hold."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from dynoyard.adapters.dynamo.client import DynamoClient
from dynoyard.adapters.dynamo.store import DynamoStore
from dynoyard.domain.billing import Charge, Movement, cents_to_usd, iso_now
from dynoyard.domain.ports import StoreUnavailable
from dynoyard.domain.reconcile import OrgMoney, Reconciliation, reconcile_org
from dynoyard.domain.usage import UsageRecord, utcnow
from tests.conftest import GatewayProcess, Tables, ThreadedServer, ddb_endpoint, running_gateway
from tests.e2e.test_stripe_webhook import Hook, event, hook, refunded, session_obj
from tests.fakes.conflict_proxy import ConflictProxy

__all__ = ["hook"]  # the served webhook and its Stripe stand-in (test_stripe_webhook.py)

CHAT = [{"role": "user", "content": "tell me a long story"}]
TOPUP_CENTS = 700
WEBHOOK_TOPUP_CENTS = 1_100
GRANT_USD = Decimal("0.123457")
REFUND_CENTS = 300


def dynamo(tables: Tables, endpoint: str | None = None) -> DynamoStore:
    return DynamoStore(
        DynamoClient(endpoint or ddb_endpoint(), "us-east-1"),
        tables.accounts,
        tables.usage,
        cache_table=tables.names["CACHE_TABLE"],
    )


def reconciled(tables: Tables, org_id: str) -> Reconciliation:
    async def run() -> Reconciliation:
        store = dynamo(tables)
        try:
            return await reconcile_org(store, store.billing, org_id)
        finally:
            await store.aclose()

    return asyncio.run(run())


def org_money(tables: Tables, org_id: str) -> OrgMoney:
    return tables.store.org_money(org_id)  # type: ignore[no-any-return]


def records_of(tables: Tables, org_id: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for page in tables.client.get_paginator("query").paginate(
        TableName=tables.usage,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"ORG#{org_id}"}},
        ConsistentRead=True,
    ):
        found |= {item["request_id"]["S"]: item for item in page["Items"]}
    return found


def wait_for_records(tables: Tables, org_id: str, request_ids: list[str]) -> dict[str, Any]:
    """Every request's record (a stream whose client left is settled as it closes)."""
    deadline = time.monotonic() + 20
    while True:
        records = records_of(tables, org_id)
        if all(rid in records for rid in request_ids):
            return records
        assert time.monotonic() < deadline, "a request was never settled"
        time.sleep(0.1)


def assert_exact(tables: Tables, org_id: str, credited: Decimal, request_ids: list[str]) -> None:
    """No difference, nothing held, and the balance is every credit less every record's
    cost, counted here independently of reconcile."""
    records = wait_for_records(tables, org_id, request_ids)
    spent = sum((Decimal(r["cost_usd"]["N"]) for r in records.values()), Decimal(0))
    found = reconciled(tables, org_id)
    assert found.stable
    assert found.difference_usd == 0, found.show()
    assert found.held_usd == 0, found.show()
    assert spent > 0 and found.balance_usd == credited - spent
    assert found.ledger_usd == credited - spent


# -- one busy organization -------------------------------------------------------------


async def buffered(client: httpx.AsyncClient, key: str, model: str) -> str:
    answer = await client.post(
        "/v1/chat/completions",
        json={"model": model, "messages": CHAT},
        headers={"authorization": f"Bearer {key}"},
    )
    assert answer.status_code in (200, 502, 503), answer.text
    return answer.headers["x-request-id"]


async def streamed(client: httpx.AsyncClient, key: str, model: str, leave_after: int = 0) -> str:
    """A streamed request, read to the end, or left after `leave_after` events."""
    body = {"model": model, "messages": CHAT, "stream": True}
    headers = {"authorization": f"Bearer {key}"}
    async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
        request_id = r.headers["x-request-id"]
        events = 0
        async for line in r.aiter_lines():
            events += line.startswith("data: ")
            if leave_after and events >= leave_after:
                break  # the client leaves: the connection closes with the context
    return request_id


def topup(org_id: str, number: int) -> Movement:
    session = f"cs_exact_{org_id}_{number}"
    charge = Charge(f"ch_exact_{org_id}_{number}", org_id, TOPUP_CENTS, card_brand="visa")
    return Movement(
        movement_id=f"topup:{session}",
        org_id=org_id,
        kind="topup",
        amount_usd=cents_to_usd(TOPUP_CENTS),
        at=iso_now(),
        stripe_checkout_session=session,
        stripe_charge=charge.charge_id,
        card_brand="visa",
        charge=charge,
    )


def deliver(hook: Hook, evt: dict[str, Any]) -> httpx.Response:
    """A Stripe event delivered until answered 2xx, as Stripe retries it (409: the same event
    is being handled by a concurrent delivery)."""
    for _ in range(50):
        answer = hook.send(evt)
        if answer.status_code != 409:
            return answer
        time.sleep(0.1)
    return answer


async def until_answered(attempt: Any) -> Any:
    """A write retried while DynamoDB answers only conflicts (nothing applied then)."""
    while True:
        try:
            return await attempt()
        except StoreUnavailable:
            await asyncio.sleep(0.05)


async def spend_while_crediting(
    gateway: GatewayProcess, key: str, store: DynamoStore, org_id: str, hook: Hook | None
) -> tuple[list[str], Decimal, list[dict[str, Any]]]:
    """Requests of every ending at once with top-ups (each sent twice) and grants: the
    request ids, what was credited, and the webhook's charges (to refund later)."""
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=gateway.base_url, limits=limits, timeout=60) as client:
        spending = [buffered(client, key, "test-chat") for _ in range(14)]
        spending += [streamed(client, key, "test-chat") for _ in range(6)]
        spending += [buffered(client, key, model) for model in ["test-500", "test-reset"] * 3]
        spending += [streamed(client, key, "test-slow-chunks", leave_after=4) for _ in range(4)]
        spending += [streamed(client, key, "test-break") for _ in range(3)]
        movements = [topup(org_id, n) for n in range(6)]
        applied = [until_answered(lambda m=m: store.billing.apply(m)) for m in movements * 2]
        grants = [
            until_answered(lambda: store.grant_credits(org_id, GRANT_USD, "exact test"))
            for _ in range(4)
        ]
        sessions = [session_obj(org_id, WEBHOOK_TOPUP_CENTS) for _ in range(3)]
        deliveries = []
        if hook is not None:
            events = [event("checkout.session.completed", session) for session, _ in sessions]
            deliveries = [asyncio.to_thread(deliver, hook, evt) for evt in events * 2]
        results = await asyncio.gather(*spending, *applied, *grants, *deliveries)
    request_ids = results[: len(spending)]
    first_time = results[len(spending) : len(spending) + len(applied)]
    assert first_time.count(True) == len(movements)  # each movement once, its replay a no-op
    for delivery in results[len(spending) + len(applied) + len(grants) :]:
        assert delivery.status_code == 200, delivery.text
    credited = len(movements) * cents_to_usd(TOPUP_CENTS) + len(grants) * GRANT_USD
    if hook is not None:
        credited += len(sessions) * cents_to_usd(WEBHOOK_TOPUP_CENTS)
    return request_ids, credited, [charge for _, charge in sessions]


def test_given_requests_top_ups_webhook_events_and_grants_at_once_then_it_reconciles_to_the_unit(
    gateway, make_account, tables, hook
):
    account = make_account("5")

    async def run() -> tuple[list[str], Decimal, list[dict[str, Any]]]:
        store = dynamo(tables)
        try:
            return await spend_while_crediting(gateway, account.key, store, account.org_id, hook)
        finally:
            await store.aclose()

    request_ids, credited, charges = asyncio.run(run())
    statuses = {
        r["status"]["N"] for r in wait_for_records(tables, account.org_id, request_ids).values()
    }
    assert {"200", "502", "499"} <= statuses  # served, failed upstream, client left
    assert_exact(tables, account.org_id, Decimal(5) + credited, request_ids)
    # A refund after the spending, delivered twice: taken back once, and still exact.
    refund = event("charge.refunded", refunded(charges[0], REFUND_CENTS))
    assert [deliver(hook, refund).status_code for _ in range(2)] == [200, 200]
    credited -= cents_to_usd(REFUND_CENTS)
    assert_exact(tables, account.org_id, Decimal(5) + credited, request_ids)


@pytest.fixture(scope="module")
def conflicted(tables, catalog_path, tmp_path_factory) -> Iterator[tuple[GatewayProcess, str]]:
    """A gateway (and the test's own writes) behind a DynamoDB that refuses a third of the
    writes as conflicts, as a busy organization's item does on AWS."""
    proxy = ConflictProxy(ddb_endpoint(), share=0.33)
    with ThreadedServer(proxy.app) as server:
        endpoint = f"http://127.0.0.1:{server.port}"
        overrides = {"AWS_ENDPOINT_URL_DYNAMODB": endpoint}
        with running_gateway(
            tables, catalog_path, tmp_path_factory.mktemp("conflicted-ledger"), overrides
        ) as process:
            yield process, endpoint
    assert proxy.injected["UpdateItem"] > 0 and proxy.injected["TransactWriteItems"] > 0


def test_given_write_conflicts_when_spending_and_crediting_at_once_then_it_reconciles_to_the_unit(
    conflicted, make_account, tables
):
    gateway, endpoint = conflicted
    account = make_account("5")

    async def run() -> tuple[list[str], Decimal, list[dict[str, Any]]]:
        store = dynamo(tables, endpoint)
        try:
            return await spend_while_crediting(gateway, account.key, store, account.org_id, None)
        finally:
            await store.aclose()

    request_ids, credited, _ = asyncio.run(run())
    assert_exact(tables, account.org_id, Decimal(5) + credited, request_ids)
    # A refund after the spending, through the conflicted store too.
    refund = Movement(
        movement_id=f"refund:ch_exact_{account.org_id}_0:{REFUND_CENTS}",
        org_id=account.org_id,
        kind="refund",
        amount_usd=-cents_to_usd(REFUND_CENTS),
        at=iso_now(),
    )

    async def refund_twice() -> list[bool]:
        store = dynamo(tables, endpoint)
        try:
            return [await until_answered(lambda: store.billing.apply(refund)) for _ in range(2)]
        finally:
            await store.aclose()

    assert asyncio.run(refund_twice()) == [True, False]
    credited -= cents_to_usd(REFUND_CENTS)
    assert_exact(tables, account.org_id, Decimal(5) + credited, request_ids)


# -- holds in flight ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def patient_gateway(tables, catalog_path, tmp_path_factory) -> Iterator[GatewayProcess]:
    """Upstreams may take 10 s per read: a slow request keeps its hold for 5 s."""
    overrides = {"DYNOYARD_UPSTREAM_READ_TIMEOUT": "10"}
    with running_gateway(
        tables, catalog_path, tmp_path_factory.mktemp("patient"), overrides
    ) as process:
        yield process


def test_given_requests_in_flight_when_reconciled_then_their_holds_are_held_and_nothing_differs(
    patient_gateway, make_account, tables, fake_provider
):
    provider, _ = fake_provider
    account = make_account("2")
    marker = f"marker-{uuid.uuid4().hex}"
    answers: list[httpx.Response] = []

    def slow_request() -> None:
        answers.append(
            httpx.post(
                f"{patient_gateway.base_url}/v1/chat/completions",
                json={"model": "test-slow", "messages": CHAT, "user": marker},
                headers={"authorization": f"Bearer {account.key}"},
                timeout=30,
            )
        )

    slow = threading.Thread(target=slow_request)
    slow.start()
    deadline = time.monotonic() + 4
    while not provider.requests_for(marker):  # upstream called: its hold is taken
        assert time.monotonic() < deadline
        time.sleep(0.02)
    body = {"model": "test-slow-chunks", "messages": CHAT, "stream": True}
    with httpx.stream(
        "POST",
        f"{patient_gateway.base_url}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {account.key}"},
        timeout=30,
    ) as stream:
        request_id = stream.headers["x-request-id"]
        lines = stream.iter_lines()  # kept: a closed iterator would close the stream
        next(line for line in lines if line.startswith("data: "))
        found = reconciled(tables, account.org_id)  # two holds in flight
        assert slow.is_alive() and found.stable
        assert found.held_usd > 0 and found.difference_usd == 0, found.show()
        assert found.balance_usd + found.held_usd == Decimal(2)  # nothing charged yet
        assert found.ledger_usd == Decimal(2)
    # The stream's client left; the slow request ends with its answer.
    slow.join(timeout=15)
    assert answers and answers[0].status_code == 200
    request_ids = [request_id, answers[0].headers["x-request-id"]]
    records = wait_for_records(tables, account.org_id, request_ids)
    assert sorted(r["status"]["N"] for r in records.values()) == ["200", "499"]
    spent = sum((Decimal(r["cost_usd"]["N"]) for r in records.values()), Decimal(0))
    found = reconciled(tables, account.org_id)
    assert found.held_usd == 0 and found.difference_usd == 0
    assert spent > 0 and found.balance_usd == Decimal(2) - spent


def test_given_a_settle_sent_twice_when_applied_then_the_hold_leaves_held_usd_once(
    make_account, tables
):
    account = make_account("1")
    store = tables.store
    store.hold(account.org_id, Decimal("0.4"))
    store.hold(account.org_id, Decimal("0.25"))
    assert org_money(tables, account.org_id) == OrgMoney(Decimal("0.35"), Decimal("0.65"))
    record = UsageRecord(
        request_id=f"req_{uuid.uuid4().hex}",
        started_at=utcnow(),
        org_id=account.org_id,
        key_id=account.key_id,
        endpoint="chat/completions",
        model="test-chat",
        status=200,
        cost_usd=Decimal("0.1"),
    )
    store.settle(record, Decimal("0.4"))
    store.settle(record, Decimal("0.4"))  # a lost answer, retried: changes nothing
    assert org_money(tables, account.org_id) == OrgMoney(Decimal("0.65"), Decimal("0.25"))
    found = reconciled(tables, account.org_id)
    assert found.difference_usd == 0 and found.held_usd == Decimal("0.25")


# -- a closed organization ---------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_given_a_closed_org_when_its_key_is_used_then_401_invalid_api_key_and_no_hold(
    gateway, make_account, tables, stream
):
    account = make_account("3")
    tables.store.close_org(account.org_id)
    answer = httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        json={"model": "test-chat", "messages": CHAT, "stream": stream},
        headers={"authorization": f"Bearer {account.key}"},
        timeout=20,
    )
    assert answer.status_code == 401
    error = answer.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_api_key")
    assert org_money(tables, account.org_id) == OrgMoney(Decimal(3), Decimal(0))
    found = reconciled(tables, account.org_id)
    assert found.difference_usd == 0 and found.balance_usd == Decimal(3)
