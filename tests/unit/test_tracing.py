"""No body reaches a trace: with tracing on (`TraceSubsegments=true`), the handler wrapped by
`dynoyard.observability.lambda_handler` sends X-Ray subsegments without its response.

The real X-Ray SDK runs in a child process that looks like Lambda (LAMBDA_TASK_ROOT, a sampled
_X_AMZN_TRACE_ID) and emits to a UDP socket here, standing in for the X-Ray daemon; the test
reads exactly what would leave the function."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

CHILD = """
import os
import sys

from aws_lambda_powertools import Tracer

from dynoyard.observability import lambda_handler, subsegment, tracing_enabled

CANARY = sys.argv[1]
assert tracing_enabled()


class Context:
    function_name = "dynoyard-test"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:dynoyard-test"
    aws_request_id = "req-1"


def dynoyard_ok(event, context):
    # What the DynamoDB client and the upstream adapter wrap their calls in.
    with subsegment("DynamoDB GetItem"):
        pass
    with subsegment("upstream fake"):
        pass
    try:
        with subsegment("DynamoDB PutItem"):
            raise ValueError("ValidationException quoting " + CANARY)
    except ValueError:
        pass
    return {"statusCode": 200, "body": "completion " + CANARY}


def dynoyard_raises(event, context):
    raise RuntimeError("failed")


def powertools_default(event, context):
    return {"statusCode": 200, "body": "completion " + CANARY}


def template_env(event, context):
    return {"statusCode": 200, "body": "completion " + CANARY}


handlers = [
    lambda_handler(dynoyard_ok),
    lambda_handler(dynoyard_raises),
    # The control: Powertools' defaults record the response, so the harness can see one.
    Tracer(service="dynoyard").capture_lambda_handler(powertools_default),
]
# What template.yaml's environment does to any handler the Tracer wraps.
os.environ["POWERTOOLS_TRACER_CAPTURE_RESPONSE"] = "false"
os.environ["POWERTOOLS_TRACER_CAPTURE_ERROR"] = "false"
handlers.append(Tracer(service="dynoyard").capture_lambda_handler(template_env))

for handler in handlers:
    try:
        handler({"body": "prompt " + CANARY}, Context())
    except RuntimeError:
        pass
print("ok")
"""


def _traced_run(tmp_path: Path) -> tuple[str, dict[str, dict[str, Any]], list[bytes]]:
    """Runs CHILD like Lambda with tracing on; returns the canary, the subsegments by name
    and every datagram sent to the X-Ray daemon."""
    canary = f"CANARY-{uuid.uuid4().hex}"
    daemon = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    daemon.bind(("127.0.0.1", 0))
    daemon.settimeout(1.0)
    port = daemon.getsockname()[1]
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("POWERTOOLS_", "AWS_XRAY_", "_X_AMZN", "AWS_SAM"))
    }
    env |= {
        "AWS_LAMBDA_FUNCTION_NAME": "dynoyard-test",
        "LAMBDA_TASK_ROOT": str(tmp_path),
        "POWERTOOLS_TRACE_DISABLED": "false",
        "_X_AMZN_TRACE_ID": (
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
        ),
        "AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{port}",
        "AWS_REGION": "us-east-1",
    }
    script = tmp_path / "traced_child.py"
    script.write_text(CHILD)
    datagrams: list[bytes] = []
    try:
        done = subprocess.run(
            [sys.executable, str(script), canary],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0 and "ok" in done.stdout, done.stdout + done.stderr
        while True:
            try:
                datagrams.append(daemon.recv(65536))
            except TimeoutError:
                break
    finally:
        daemon.close()
    subsegments: dict[str, dict[str, Any]] = {}
    for datagram in datagrams:
        _header, _, body = datagram.decode().partition("\n")
        document = json.loads(body)
        subsegments[document["name"]] = document
    return canary, subsegments, datagrams


def test_given_tracing_on_when_handlers_run_then_no_response_or_error_reaches_x_ray(tmp_path):
    canary, subsegments, datagrams = _traced_run(tmp_path)
    assert {"## dynoyard_ok", "## dynoyard_raises", "## template_env"} <= set(subsegments)

    # The harness sees what a default Tracer records (else this test could prove nothing).
    control = subsegments["## powertools_default"]
    assert canary in json.dumps(control["metadata"])

    for name in ("## dynoyard_ok", "## dynoyard_raises", "## template_env"):
        assert "metadata" not in subsegments[name], subsegments[name]
    # The error is still seen. The X-Ray SDK itself puts the exception's type, message and
    # frames in `cause` (so does Lambda's runtime): no app exception gets that far, the app's
    # middleware answers them with a 500 and logs their type only.
    assert subsegments["## dynoyard_raises"].get("fault") is True
    leaked = [d for d in datagrams if canary.encode() in d and b"powertools_default" not in d]
    assert leaked == []


def test_given_tracing_on_when_calls_go_out_then_dynamodb_and_upstream_subsegments_hold_no_body(
    tmp_path,
):
    canary, subsegments, datagrams = _traced_run(tmp_path)
    handler = subsegments["## dynoyard_ok"]
    nested = {sub["name"]: sub for sub in handler.get("subsegments", [])}
    streamed = {name: sub for name, sub in subsegments.items() if not name.startswith("##")}
    calls = nested | streamed
    assert {"DynamoDB GetItem", "upstream fake", "DynamoDB PutItem"} <= set(calls)
    for name in ("DynamoDB GetItem", "upstream fake", "DynamoDB PutItem"):
        call = calls[name]
        assert call["namespace"] == "remote"
        assert "metadata" not in call and "annotations" not in call, call
        assert "cause" not in call  # the exception (its message may quote data) stays out
    assert calls["DynamoDB PutItem"].get("fault") is True
    assert "fault" not in calls["DynamoDB GetItem"]
    leaked = [d for d in datagrams if canary.encode() in d and b"powertools_default" not in d]
    assert leaked == []
