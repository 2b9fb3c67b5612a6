"""Hostile bodies through the real server, on every endpoint: whatever the body, the answer
is never a 500, an error always has OpenAI's shape, and money only moves for what was
served."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile import ENDPOINTS, REQUEST_FIELDS, json_values

MODELS = ["test-chat", "test-embed", "test-contract-embed", "test-500", "nope", ""]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    model=st.sampled_from(MODELS),
    fields=st.dictionaries(REQUEST_FIELDS, json_values(max_leaves=12), max_size=5),
)
def test_fuzz_given_any_body_through_the_server_then_never_a_500_and_errors_are_openai_shaped(
    gateway, make_account, endpoint, model, fields
):
    funded_account = make_account("1")  # one per example: nothing carries over
    body = json.dumps({"model": model, **fields})
    answer = httpx.post(
        f"{gateway.base_url}/v1/{endpoint}",
        content=body,
        headers={
            "authorization": f"Bearer {funded_account.key}",
            "content-type": "application/json",
        },
        timeout=20,
    )
    assert answer.status_code < 500 or answer.status_code in (502, 504), answer.text
    if answer.status_code >= 400:
        error = answer.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert funded_account.balance() > Decimal(0)
