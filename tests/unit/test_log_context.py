"""Log lines carry the request's ids (observability.log_context, lambda_handler): API
Gateway's request id, the gateway's request id, the organization id; each request its own,
even when they run at once in one process."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from dynoyard.observability import lambda_handler, log_context, logger


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """What the service's logger prints (its Powertools JSON formatter), in a buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logger.registered_formatter)
    logger._logger.addHandler(handler)
    try:
        yield buffer
    finally:
        logger._logger.removeHandler(handler)


def printed(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


class Context:
    function_name = "dynoyard-test"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:dynoyard-test"
    aws_request_id = "lambda-req-1"


def test_given_an_api_gateway_event_when_handled_then_lines_carry_both_request_ids(
    lines: io.StringIO,
) -> None:
    def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
        logger.info("inside")
        return {"statusCode": 200}

    handler = lambda_handler(handle)
    handler({"requestContext": {"requestId": "apigw-1"}}, Context())
    handler({"no": "context"}, Context())  # the next invocation does not inherit it
    first, second = printed(lines)
    assert (first["api_request_id"], first["function_request_id"]) == ("apigw-1", "lambda-req-1")
    assert "api_request_id" not in second


def test_given_concurrent_requests_when_they_log_then_each_line_has_its_own_ids(
    lines: io.StringIO,
) -> None:
    async def request(number: int) -> None:
        log_context(request_id=f"req_{number}", org_id=f"org_{number}")
        await asyncio.sleep(0.01 * (3 - number))
        logger.info("finished")

    async def both() -> None:
        await asyncio.gather(request(1), request(2))

    asyncio.run(both())
    shown = {(line["request_id"], line["org_id"]) for line in printed(lines)}
    assert shown == {("req_1", "org_1"), ("req_2", "org_2")}
    logger.info("after")  # outside both requests: neither's ids
    assert "org_id" not in printed(lines)[-1]
