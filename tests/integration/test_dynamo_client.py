"""DynamoClient against real HTTP servers on 127.0.0.1: a scripted fake DynamoDB endpoint
that checks every signature with botocore, a fake ECS container-credentials endpoint, an
AWS profile whose credential_process issues expiring keys, DynamoDB Local, and DynamoDB
Local behind a proxy that answers write conflicts as DynamoDB does."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from dynoyard.adapters.dynamo import client as dynamo_client
from dynoyard.adapters.dynamo.client import DynamoClient, DynamoError
from dynoyard.adapters.dynamo.store import DynamoStore
from dynoyard.domain.ports import StoreUnavailable
from dynoyard.domain.usage import UsageRecord
from tests.conftest import ddb_endpoint
from tests.fakes.dynamo_fake import (
    ConflictingProxy,
    FakeDynamo,
    bare,
    cancelled,
    drop,
    error,
    gzipped,
)

GET = {"TableName": "t", "Key": {"pk": {"S": "ORG#a"}, "sk": {"S": "ORG"}}}
UPDATE = {
    "TableName": "t",
    "Key": {"pk": {"S": "ORG#a"}, "sk": {"S": "ORG"}},
    "UpdateExpression": "ADD balance_usd :d",
    "ExpressionAttributeValues": {":d": {"N": "-1"}},
}
ITEM = {"pk": {"S": "ORG#a"}, "sk": {"S": "ORG"}, "balance_usd": {"N": "12.5"}}
CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


@pytest.fixture
def no_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No credentials in the environment, no ~/.aws files, no instance metadata."""
    for name in CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield


@pytest.fixture
def container_credentials(
    no_aws_credentials: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeDynamo]:
    """A fake DynamoDB whose container-credentials endpoint the environment names."""
    with FakeDynamo(answer={"Item": ITEM}) as fake:
        monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", fake.credentials_url)
        yield fake


def calls(
    fake: FakeDynamo, *requests: tuple[str, dict[str, Any], bool]
) -> list[dict[str, Any] | Exception]:
    """Makes the calls one after another on one client; answers or raised errors."""

    async def scenario() -> list[dict[str, Any] | Exception]:
        client = DynamoClient(endpoint=fake.url, region="eu-west-1")
        results: list[dict[str, Any] | Exception] = []
        try:
            for operation, params, idempotent in requests:
                try:
                    results.append(await client.call(operation, params, idempotent=idempotent))
                except (DynamoError, StoreUnavailable) as exc:
                    results.append(exc)
        finally:
            await client.aclose()
        return results

    return asyncio.run(scenario())


def one_call(
    fake: FakeDynamo, operation: str = "GetItem", idempotent: bool = True
) -> dict[str, Any] | Exception:
    params = GET if operation == "GetItem" else UPDATE
    return calls(fake, (operation, params, idempotent))[0]


# -- credentials ------------------------------------------------------------------------


def test_given_container_credentials_that_expire_soon_when_calling_then_they_are_refreshed_before_expiry_and_the_new_key_signs(  # noqa: E501
    container_credentials: FakeDynamo,
):
    fake = container_credentials
    # Within 10 minutes of expiry a refresh is awaited; within 15 it runs in the background.
    fake.lifetimes = [timedelta(minutes=5), timedelta(minutes=12), timedelta(hours=1)]

    async def scenario() -> None:
        client = DynamoClient(endpoint=fake.url, region="eu-west-1")
        for _ in range(3):
            await client.call("GetItem", GET)
        for _ in range(50):  # until the background refresh has landed
            await client.call("GetItem", GET)
            if fake.keys_used()[-1] == "AKIDFAKE3":
                break
            await asyncio.sleep(0.01)
        await client.aclose()

    asyncio.run(scenario())

    keys = fake.keys_used()
    assert keys[:3] == ["AKIDFAKE1", "AKIDFAKE2", "AKIDFAKE2"]
    assert keys[-1] == "AKIDFAKE3"
    assert len(fake.fetches) == 3
    for fetched, previous_expiry in zip(fake.fetches[1:], fake.expirations, strict=False):
        assert fetched < previous_expiry
    # Every request is signed with the secret of the key it names (no stale signing key).
    assert all(seen.signature_ok for seen in fake.seen)
    assert [seen.token for seen in fake.seen[:3]] == ["token-1", "token-2", "token-2"]


@pytest.mark.parametrize(
    "code", ["ExpiredTokenException", "UnrecognizedClientException", "InvalidSignatureException"]
)
def test_given_a_stale_credentials_answer_when_writing_then_credentials_are_fetched_again_and_the_write_sent_again(  # noqa: E501
    container_credentials: FakeDynamo, code: str
):
    fake = container_credentials
    fake.script = [error(code)]

    answer = one_call(fake, "UpdateItem", idempotent=False)

    assert answer == {"Item": ITEM}
    assert fake.keys_used() == ["AKIDFAKE1", "AKIDFAKE2"]
    assert len(fake.fetches) == 2
    assert all(seen.signature_ok for seen in fake.seen)


def test_given_stale_credentials_answers_twice_when_calling_then_only_one_refresh_is_tried(
    container_credentials: FakeDynamo,
):
    fake = container_credentials
    fake.script = [error("ExpiredTokenException"), error("ExpiredTokenException")]

    answer = one_call(fake)

    assert isinstance(answer, DynamoError) and answer.code == "ExpiredTokenException"
    assert fake.keys_used() == ["AKIDFAKE1", "AKIDFAKE2"]


PROCESS = """
import json, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
counter = Path(sys.argv[1])
number = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(number))
lifetime = timedelta(minutes=15, seconds=2) if number == 1 else timedelta(hours=1)
print(json.dumps({
    "Version": 1,
    "AccessKeyId": f"AKIDPROC{number}",
    "SecretAccessKey": f"proc-secret-{number}",
    "SessionToken": f"proc-token-{number}",
    "Expiration": (datetime.now(UTC) + lifetime).strftime("%Y-%m-%dT%H:%M:%SZ"),
}))
"""


def test_given_an_aws_profile_with_expiring_keys_when_calling_over_time_then_they_are_refreshed(
    no_aws_credentials: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    process = tmp_path / "issue_keys.py"
    process.write_text(PROCESS)
    config = tmp_path / "config"
    config.write_text(
        textwrap.dedent(
            f"""\
            [profile dev]
            credential_process = {sys.executable} {process} {tmp_path / "counter"}
            """
        )
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_PROFILE", "dev")

    with FakeDynamo(answer={"Item": ITEM}) as fake:
        for n in (1, 2, 3):
            fake.issued[f"AKIDPROC{n}"] = (f"proc-secret-{n}", f"proc-token-{n}")

        async def scenario() -> None:
            client = DynamoClient(endpoint=fake.url, region="us-east-1")
            await client.call("GetItem", GET)
            # botocore refreshes within 15 minutes of expiry: the first key is there now.
            await asyncio.sleep(3)
            await client.call("GetItem", GET)
            await client.call("GetItem", GET)
            await client.aclose()

        asyncio.run(scenario())

    assert fake.keys_used() == ["AKIDPROC1", "AKIDPROC2", "AKIDPROC2"]
    assert all(seen.signature_ok for seen in fake.seen)


def test_given_no_credentials_anywhere_when_calling_a_loopback_endpoint_then_dummy_keys_are_used(
    no_aws_credentials: None,
):
    with FakeDynamo(answer={"Item": ITEM}) as fake:
        answer = one_call(fake)

    assert answer == {"Item": ITEM}
    assert fake.keys_used() == ["local"]
    assert fake.fetches == []


# -- retries ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "step",
    [
        error("ThrottlingException"),
        error("ProvisionedThroughputExceededException"),
        error("RequestLimitExceeded"),
        error("InternalServerError", status=500),
        bare(503),
    ],
    ids=["throttling", "throughput", "request-limit", "internal-error", "bare-503"],
)
def test_given_throttling_or_5xx_then_success_when_writing_then_the_write_is_retried(
    container_credentials: FakeDynamo, step: Any
):
    fake = container_credentials
    fake.script = [step] * 3

    answer = one_call(fake, "UpdateItem", idempotent=False)

    assert answer == {"Item": ITEM}
    assert [seen.operation for seen in fake.seen] == ["UpdateItem"] * 4


def test_given_throttling_that_lasts_when_calling_then_store_unavailable_after_the_attempts(
    container_credentials: FakeDynamo,
):
    fake = container_credentials
    fake.script = [error("ThrottlingException")] * 20

    answer = one_call(fake)

    assert isinstance(answer, StoreUnavailable)
    assert len(fake.seen) == dynamo_client.MAX_THROTTLED_ATTEMPTS


@pytest.mark.parametrize(
    "step",
    [error("TransactionConflictException"), cancelled("None", "TransactionConflict")],
    ids=["update-met-a-transaction", "transaction-cancelled-by-conflict"],
)
def test_given_write_conflicts_then_success_when_writing_then_the_write_is_retried(
    container_credentials: FakeDynamo, step: Any
):
    fake = container_credentials
    fake.script = [step] * 5

    answer = one_call(fake, "UpdateItem", idempotent=False)

    assert answer == {"Item": ITEM}
    assert len(fake.seen) == 6


def test_given_a_cancellation_with_a_failed_condition_when_writing_then_it_is_not_retried(
    container_credentials: FakeDynamo,
):
    fake = container_credentials
    fake.script = [cancelled("ConditionalCheckFailed", "TransactionConflict")]

    answer = one_call(fake, "UpdateItem", idempotent=False)

    assert isinstance(answer, DynamoError)
    assert answer.code == "TransactionCanceledException" and answer.condition_failed
    assert len(fake.seen) == 1


def test_given_conflicts_that_last_when_writing_then_store_unavailable_within_the_time_bound(
    container_credentials: FakeDynamo,
):
    fake = container_credentials
    fake.script = [error("TransactionConflictException")] * 10_000

    began = time.monotonic()
    answer = one_call(fake, "UpdateItem", idempotent=False)
    elapsed = time.monotonic() - began

    assert isinstance(answer, StoreUnavailable)
    assert 1.0 < elapsed < dynamo_client.RETRY_SECONDS + 1.0
    assert len(fake.seen) > 5


def test_given_a_dropped_connection_when_writing_non_idempotently_then_it_is_sent_once(
    container_credentials: FakeDynamo,
):
    fake = container_credentials
    fake.script = [drop(), drop(), drop()]

    answer = one_call(fake, "UpdateItem", idempotent=False)

    assert isinstance(answer, StoreUnavailable)
    assert len(fake.seen) == 1


def test_given_a_dropped_connection_when_reading_then_the_read_is_sent_again(
    container_credentials: FakeDynamo,
):
    fake = container_credentials
    fake.script = [drop()]

    answer = one_call(fake, "GetItem", idempotent=True)

    assert answer == {"Item": ITEM}
    assert len(fake.seen) == 2


def test_given_a_gzip_encoded_answer_when_calling_then_it_is_decoded(
    container_credentials: FakeDynamo,
):
    fake = container_credentials
    big = {"Items": [{**ITEM, "note": {"S": "x" * 2000}}] * 20, "Count": 20}
    fake.script = [gzipped(big)]

    answer = one_call(fake)

    assert answer == big


# -- DynamoDB Local -------------------------------------------------------------------------


def test_given_dynamodb_local_and_no_credentials_when_putting_then_getting_then_the_item_round_trips(  # noqa: E501
    tables: Any, no_aws_credentials: None
):
    item = {
        "pk": {"S": "ORG#roundtrip"},
        "sk": {"S": "ORG"},
        "balance_usd": {"N": "12.5"},
        "flags": {"M": {"on": {"BOOL": True}, "tags": {"L": [{"S": "a"}, {"N": "2"}]}}},
    }
    key = {"pk": item["pk"], "sk": item["sk"]}

    async def scenario() -> tuple[dict[str, Any], DynamoError]:
        client = DynamoClient(endpoint=ddb_endpoint(), region="us-east-1")
        try:
            await client.call("PutItem", {"TableName": tables.accounts, "Item": item})
            got = await client.call(
                "GetItem", {"TableName": tables.accounts, "Key": key, "ConsistentRead": True}
            )
            with pytest.raises(DynamoError) as again:
                await client.call(
                    "PutItem",
                    {
                        "TableName": tables.accounts,
                        "Item": item,
                        "ConditionExpression": "attribute_not_exists(pk)",
                    },
                    idempotent=False,
                )
            return got, again.value
        finally:
            await client.aclose()

    got, again = asyncio.run(scenario())

    assert got == {"Item": item}
    assert again.condition_failed and again.code == "ConditionalCheckFailedException"


def test_given_64_concurrent_requests_on_one_organization_when_dynamodb_answers_conflicts_then_none_gives_up(  # noqa: E501
    make_account: Any, tables: Any
):
    account = make_account("100")
    requests = 64

    with ConflictingProxy(ddb_endpoint()) as proxy:

        async def one(n: int, store: DynamoStore) -> None:
            await store.hold(account.org_id, Decimal("0.3"))
            record = UsageRecord(
                request_id=f"req_conflict_{n}",
                started_at=datetime.now(UTC),
                org_id=account.org_id,
                key_id=account.key_id,
                endpoint="chat/completions",
                model="m",
                status=200,
                cost_usd=Decimal("0.1"),
            )
            await store.settle(record, Decimal("0.3"))  # refunds 0.2 in a transaction

        async def scenario() -> list[BaseException | None]:
            store = DynamoStore(
                DynamoClient(endpoint=proxy.url, region="us-east-1"), tables.accounts, tables.usage
            )
            try:
                return await asyncio.gather(
                    *(one(n, store) for n in range(requests)), return_exceptions=True
                )
            finally:
                await store.aclose()

        results = asyncio.run(scenario())

    assert [r for r in results if r is not None] == []
    assert proxy.conflicts > 0  # the retries were needed
    assert account.balance() == Decimal("100") - requests * Decimal("0.1")
    records = tables.store.usage_records(account.org_id)
    assert len({r.request_id for r in records if r.request_id.startswith("req_conflict_")}) == 64
