"""The Lambda handler, driven through Mangum with real-shaped API Gateway events from
events/, as API Gateway would call it, against DynamoDB Local and the fake provider."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from tests.conftest import FakeContext, loaded_lambda_handler
from tests.conftest import lambda_event as event
from tests.conftest import lambda_header as header


@pytest.fixture(scope="module")
def handler(tables, catalog_path, fake_provider):
    with loaded_lambda_handler(tables, catalog_path, "gateway_lambda_app") as loaded:
        yield loaded


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
