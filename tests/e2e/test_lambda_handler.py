"""The Lambda handler, driven through Mangum with real-shaped API Gateway events from
events/, as API Gateway would call it, against DynamoDB Local and the fake provider."""

from __future__ import annotations

import importlib.util
import json
import sys
from decimal import Decimal
from typing import Any

import pytest

from tests.conftest import GATEWAY_SETTINGS, ROOT, UPSTREAM_SECRET

EVENTS = ROOT / "events"


class FakeContext:
    function_name = "dynoyard-gateway"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:dynoyard-gateway"
    memory_limit_in_mb = 1024
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e812345678"
    log_group_name = "/aws/lambda/dynoyard-gateway"
    log_stream_name = "2026/11/25/[$LATEST]abc"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


@pytest.fixture(scope="module")
def handler(tables, catalog_path, fake_provider):
    patch = pytest.MonkeyPatch()
    for name, value in {**tables.env, **GATEWAY_SETTINGS}.items():
        patch.setenv(name, value)
    patch.setenv("DYNOYARD_MODELS_FILE", str(catalog_path))
    patch.setenv("FAKE_PROVIDER_KEY", UPSTREAM_SECRET)
    spec = importlib.util.spec_from_file_location(
        "gateway_lambda_app", ROOT / "functions" / "gateway" / "app.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gateway_lambda_app"] = module
    spec.loader.exec_module(module)
    yield module.handler
    patch.undo()


def event(name: str, key: str | None = None, **body_changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS / name).read_text())
    if key is not None:
        for headers in (data.get("headers") or {},):
            headers["Authorization"] = f"Bearer {key}"
        multi = data.get("multiValueHeaders") or {}
        if "Authorization" in multi:
            multi["Authorization"] = [f"Bearer {key}"]
    if body_changes and data.get("body"):
        body = json.loads(data["body"])
        body.update(body_changes)
        data["body"] = json.dumps(body)
    return data


def header(response: dict[str, Any], name: str) -> str:
    for source in (response.get("headers") or {}, response.get("multiValueHeaders") or {}):
        for key, value in source.items():
            if key.lower() == name:
                return value[0] if isinstance(value, list) else value
    raise KeyError(name)


def test_given_a_chat_event_when_handled_then_api_gateway_gets_the_completion(
    handler, make_account, tables
):
    account = make_account("2")
    response = handler(event("chat_completion.json", account.key, model="test-chat"), FakeContext())
    assert response["statusCode"] == 200, response["body"]
    body = json.loads(response["body"])
    assert "COMPLETION-CANARY-" in body["choices"][0]["message"]["content"]
    record = tables.usage_item(header(response, "x-request-id"))
    assert record["client_ip"]["S"] == "198.51.100.7"  # API Gateway's sourceIp
    assert account.balance() < Decimal("2")
    assert header(response, "server-timing").startswith("gateway;dur=")


def test_given_a_streaming_event_when_buffered_by_api_gateway_then_the_whole_stream_returns(
    handler, make_account
):
    account = make_account("2")
    response = handler(
        event("chat_completion_stream.json", account.key, model="test-chat"), FakeContext()
    )
    assert response["statusCode"] == 200
    assert response["body"].rstrip().endswith("data: [DONE]")


def test_given_the_other_route_events_when_handled_then_each_answers_in_openai_shape(
    handler, make_account
):
    account = make_account("2")
    completions = handler(event("completions.json", account.key, model="test-chat"), FakeContext())
    assert completions["statusCode"] == 200
    embeddings = handler(event("embeddings.json", account.key, model="test-embed"), FakeContext())
    assert json.loads(embeddings["body"])["object"] == "list"
    models = handler(event("models_list.json", account.key), FakeContext())
    assert "test-chat" in {m["id"] for m in json.loads(models["body"])["data"]}
    health = handler(event("healthz.json"), FakeContext())
    assert health["statusCode"] == 200
    missing = handler(event("model_get.json", account.key), FakeContext())
    assert missing["statusCode"] == 404  # dynoyard-demo is not in the test catalog
    bad = handler(event("bad_json.json", account.key), FakeContext())
    assert bad["statusCode"] == 400
    assert set(json.loads(bad["body"])["error"]) == {"message", "type", "param", "code"}
    unauthorized = handler(event("chat_completion.json", "sk-dy-" + "0" * 43), FakeContext())
    assert unauthorized["statusCode"] == 401
