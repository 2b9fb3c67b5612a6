"""The same authentication, metering and limits on both AWS entrances.

One list of scenarios, each run against:
- `rest`: functions/gateway/app.py's handler (Mangum), in this process, driven with API
  Gateway REST proxy events as API Gateway sends them (the buffered entrance);
- `stream`: functions/gateway/run.sh under uvicorn, as the Lambda Web Adapter runs it behind
  the Function URL (the streaming entrance), over HTTP.

Each scenario sends requests through an `Entrance` and checks the status, the OpenAI error
body, the headers, the upstream calls, the usage record and the balance: missing, bad and
revoked keys (401); a buffered and a streamed answer metered to the exact cost; a zero
balance (429 insufficient_quota); the org's and a key's rpm limit (429 with retry-after and
x-ratelimit-*); a key's spend cap; a body over the limit (413). The two entrances must give
the same answers, because they are the same app; only the way a stream travels differs.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest

from dynoyard.domain.limits import key_limits
from tests.conftest import (
    GATEWAY_SETTINGS,
    Account,
    FakeContext,
    loaded_lambda_handler,
    model_price,
)
from tests.conftest import lambda_event as event

MILLION = Decimal(1_000_000)
BODY_LIMIT = int(GATEWAY_SETTINGS["DYNOYARD_MAX_BODY_BYTES"])


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes
    streamed: bool  # sent in chunks, without a content-length

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


class Entrance:
    name: str

    def post(
        self, body: bytes | dict[str, Any], key: str | None, path: str = "/v1/chat/completions"
    ) -> Answer:
        raise NotImplementedError


class RestEntrance(Entrance):
    """API Gateway (REST) -> Lambda -> Mangum: the event API Gateway would send."""

    name = "rest"

    def __init__(self, handler: Callable[[dict[str, Any], Any], dict[str, Any]]) -> None:
        self.handler = handler

    def post(
        self, body: bytes | dict[str, Any], key: str | None, path: str = "/v1/chat/completions"
    ) -> Answer:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = event("chat_completion.json", key, raw_body=raw.decode())
        request["path"] = path
        request["pathParameters"] = {"proxy": path.removeprefix("/v1/")}
        request["requestContext"]["path"] = f"/dev{path}"
        request["requestContext"]["requestId"] = str(uuid.uuid4())
        if key is None:
            request["headers"].pop("Authorization")
            request["multiValueHeaders"].pop("Authorization")
        response = self.handler(request, FakeContext())
        headers: dict[str, str] = {}
        for name, values in (response.get("multiValueHeaders") or {}).items():
            headers[name.lower()] = ", ".join(values)
        for name, value in (response.get("headers") or {}).items():
            headers[name.lower()] = value
        payload = response.get("body") or ""
        data = base64.b64decode(payload) if response.get("isBase64Encoded") else payload.encode()
        return Answer(response["statusCode"], headers, data, streamed=False)


class StreamEntrance(Entrance):
    """Function URL -> Lambda Web Adapter -> run.sh (uvicorn): plain HTTP to the app."""

    name = "stream"

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def post(
        self, body: bytes | dict[str, Any], key: str | None, path: str = "/v1/chat/completions"
    ) -> Answer:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"content-type": "application/json", "x-forwarded-for": "203.0.113.9"}
        if key is not None:
            headers["authorization"] = f"Bearer {key}"
        with httpx.stream(
            "POST", self.base_url + path, content=raw, headers=headers, timeout=20
        ) as response:
            data = response.read()
            streamed = "content-length" not in response.headers
            return Answer(response.status_code, dict(response.headers), data, streamed)


@pytest.fixture(scope="module")
def rest_handler(tables, catalog_path, fake_provider):
    with loaded_lambda_handler(tables, catalog_path, "entrances_lambda_app") as handler:
        yield handler


@pytest.fixture(params=["rest", "stream"])
def entrance(request: pytest.FixtureRequest) -> Entrance:
    if request.param == "rest":
        return RestEntrance(request.getfixturevalue("rest_handler"))
    return StreamEntrance(request.getfixturevalue("stream_entrance").base_url)


@dataclass
class World:
    """What a scenario may use besides the entrance."""

    make_account: Callable[..., Account]
    tables: Any
    provider: Any

    def upstream_calls(self, marker: str) -> int:
        return len(self.provider.requests_for(marker))


def chat(marker: str, stream: bool = False, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "test-chat",
        "messages": [{"role": "user", "content": "Hello, entrance."}],
        "max_tokens": 50,
        "user": marker,  # the fake provider records its requests by this marker
        **extra,
    }
    if stream:
        body["stream"] = True
    return body


def assert_error(answer: Answer, status: int, error_type: str, code: str) -> dict[str, Any]:
    assert answer.status == status, answer.text[:500]
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == (error_type, code)
    assert answer.headers["x-request-id"]
    return error  # type: ignore[no-any-return]


# -- the scenarios ----------------------------------------------------------------------


def missing_key(entrance: Entrance, world: World) -> None:
    marker = uuid.uuid4().hex
    answer = entrance.post(chat(marker), key=None)
    assert_error(answer, 401, "invalid_request_error", "invalid_api_key")
    assert world.upstream_calls(marker) == 0


def bad_key(entrance: Entrance, world: World) -> None:
    marker = uuid.uuid4().hex
    answer = entrance.post(chat(marker), key="sk-dy-" + uuid.uuid4().hex + "x" * 11)
    assert_error(answer, 401, "invalid_request_error", "invalid_api_key")
    assert world.upstream_calls(marker) == 0


def revoked_key(entrance: Entrance, world: World) -> None:
    account = world.make_account("1")
    assert entrance.post(chat(uuid.uuid4().hex), key=account.key).status == 200
    world.tables.store.revoke_key(account.key_id)  # the test gateways cache keys for 0 s
    marker = uuid.uuid4().hex
    answer = entrance.post(chat(marker), key=account.key)
    assert_error(answer, 401, "invalid_request_error", "invalid_api_key")
    assert world.upstream_calls(marker) == 0
    assert account.balance() == Decimal("1") - _charged_so_far(world, account)


def metered(entrance: Entrance, world: World, stream: bool = False) -> None:
    account = world.make_account("2")
    marker = uuid.uuid4().hex
    answer = entrance.post(chat(marker, stream=stream), key=account.key)
    assert answer.status == 200, answer.text[:500]
    assert world.upstream_calls(marker) == 1
    if stream:
        assert answer.text.rstrip().endswith("data: [DONE]")
        # The Function URL's entrance sends the stream as it comes; Mangum buffers it whole.
        assert answer.streamed is (entrance.name == "stream")
    else:
        assert answer.json()["usage"]["total_tokens"] > 0
    record = world.tables.usage_item(answer.headers["x-request-id"])
    prompt = int(record["prompt_tokens"]["N"])
    completion = int(record["completion_tokens"]["N"])
    cost = Decimal(record["cost_usd"]["N"])
    assert prompt > 0 and completion > 0
    assert record["status"]["N"] == "200" and record["key_id"]["S"] == account.key_id
    assert record["stream"]["BOOL"] is stream
    assert not record.get("usage_estimated", {}).get("BOOL", False)
    price = model_price("test-chat")
    expected = (
        prompt * Decimal(price["input_per_mtok"]) + completion * Decimal(price["output_per_mtok"])
    ) / MILLION
    assert cost == expected > 0
    assert account.balance() == Decimal("2") - cost  # exactly the cost, nothing held back


def metered_stream(entrance: Entrance, world: World) -> None:
    metered(entrance, world, stream=True)


def zero_balance(entrance: Entrance, world: World) -> None:
    account = world.make_account("0")
    marker = uuid.uuid4().hex
    answer = entrance.post(chat(marker), key=account.key)
    assert_error(answer, 429, "insufficient_quota", "insufficient_quota")
    assert world.upstream_calls(marker) == 0
    assert account.balance() == Decimal("0")


def org_rpm_limit(entrance: Entrance, world: World) -> None:
    account = world.make_account("1")
    world.tables.store.update_org_settings(account.org_id, rate_limit_rpm=1)
    if time.time() % 60 > 55:  # both requests inside one minute's window
        time.sleep(61 - time.time() % 60)
    first = entrance.post(chat(uuid.uuid4().hex), key=account.key)
    assert first.status == 200, first.text[:500]
    assert first.headers["x-ratelimit-limit-requests"] == "1"
    assert first.headers["x-ratelimit-remaining-requests"] == "0"
    balance = account.balance()
    marker = uuid.uuid4().hex
    second = entrance.post(chat(marker), key=account.key)
    assert_error(second, 429, "requests", "rate_limit_exceeded")
    assert 1 <= int(second.headers["retry-after"]) <= 60
    assert second.headers["x-ratelimit-limit-requests"] == "1"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert second.headers["x-ratelimit-reset-requests"].endswith("s")
    assert world.upstream_calls(marker) == 0
    assert account.balance() == balance  # a refused request costs nothing
    record = world.tables.usage_item(second.headers["x-request-id"])
    assert record["status"]["N"] == "429" and record["error_code"]["S"] == "rate_limit_exceeded"


def key_rpm_limit(entrance: Entrance, world: World) -> None:
    account = world.make_account("1")
    key = world.tables.store.create_key(
        account.org_id, "limited", frozenset(), None, key_limits(rpm=1)
    ).secret
    if time.time() % 60 > 55:
        time.sleep(61 - time.time() % 60)
    first = entrance.post(chat(uuid.uuid4().hex), key=key)
    assert first.status == 200, first.text[:500]
    assert first.headers["x-ratelimit-limit-requests"] == "1"
    marker = uuid.uuid4().hex
    second = entrance.post(chat(marker), key=key)
    assert_error(second, 429, "requests", "rate_limit_exceeded")
    assert 1 <= int(second.headers["retry-after"]) <= 60
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert world.upstream_calls(marker) == 0


def key_spend_cap(entrance: Entrance, world: World) -> None:
    account = world.make_account("1")
    # A hold here is about $0.0002 (max_tokens 50 at test prices): the cap can not cover one.
    key = world.tables.store.create_key(
        account.org_id, "capped", frozenset(), None, key_limits(daily_usd="0.00001")
    ).secret
    marker = uuid.uuid4().hex
    answer = entrance.post(chat(marker), key=key)
    assert_error(answer, 429, "insufficient_quota", "spend_cap_reached")
    assert 1 <= int(answer.headers["retry-after"]) <= 86_400
    assert world.upstream_calls(marker) == 0
    assert account.balance() == Decimal("1")


def oversized_body(entrance: Entrance, world: World) -> None:
    account = world.make_account("1")
    marker = uuid.uuid4().hex
    filler = "x" * (BODY_LIMIT + 1024)
    body = chat(marker, messages=[{"role": "user", "content": filler}])
    answer = entrance.post(json.dumps(body).encode(), key=account.key)
    assert_error(answer, 413, "invalid_request_error", "request_too_large")
    assert world.upstream_calls(marker) == 0
    assert account.balance() == Decimal("1")


def _charged_so_far(world: World, account: Account) -> Decimal:
    records = world.tables.store.usage_records(account.org_id)
    return sum((r.cost_usd for r in records), Decimal(0))


SCENARIOS: list[Callable[[Entrance, World], None]] = [
    missing_key,
    bad_key,
    revoked_key,
    metered,
    metered_stream,
    zero_balance,
    org_rpm_limit,
    key_rpm_limit,
    key_spend_cap,
    oversized_body,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__ for s in SCENARIOS])
def test_given_either_entrance_when_the_scenario_runs_then_the_outcome_is_the_same(
    entrance: Entrance, scenario, make_account, tables, fake_provider
):
    scenario(entrance, World(make_account, tables, fake_provider[0]))
