"""Metric dimensions stay cheap: every EMF blob the service prints has only the allowed
dimensions (service, and ErrorClass from a small fixed set), never an organization, key,
model or request id; and no code adds another dimension without this file changing."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from dynoyard.domain.usage import UsageRecord
from dynoyard.observability import (
    ALLOWED_DIMENSIONS,
    ERROR_CLASSES,
    NAMESPACE,
    PowertoolsObserver,
    error_class,
)

ROOT = Path(__file__).resolve().parents[2]
ORG = "org_dimcanary0001"
KEY = "key_dimcanary0002"


def record(**fields: Any) -> UsageRecord:
    base: dict[str, Any] = {
        "request_id": "req_dimcanary0003",
        "started_at": datetime.now(UTC),
        "org_id": ORG,
        "key_id": KEY,
        "endpoint": "chat.completions",
        "model": "gpt-dimcanary",
        "provider": "openai",
        "status": 200,
        "prompt_tokens": 12,
        "completion_tokens": 30,
        "cost_usd": Decimal("0.000420"),
        "latency_ms": 900,
        "upstream_ms": 850,
    }
    return UsageRecord(**{**base, **fields})


RECORDS = {
    "ok": record(),
    "cached": record(cached=True, upstream_ms=0, latency_ms=15),
    "throttle": record(status=429, error_code="rate_limit_exceeded", upstream_ms=0),
    "upstream": record(status=502, error_code="upstream_error"),
    "timeout": record(status=504, error_code="upstream_timeout"),
    "store": record(status=503, error_code="service_unavailable", upstream_ms=0),
    "internal": record(status=500, error_code="internal_error"),
    "client": record(status=400, error_code="model_not_found", upstream_ms=0),
}


def emf_blobs(text: str) -> list[dict[str, Any]]:
    blobs = []
    for line in text.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            blobs.append(json.loads(line))
    return blobs


def printed(capsys: pytest.CaptureFixture[str], *records: UsageRecord) -> list[dict[str, Any]]:
    observer = PowertoolsObserver()
    for each in records:
        observer.request_finished(each)
    observer.settle_failed(records[0], RuntimeError("x"))
    observer.hold_exceeded(records[0], Decimal("0.0001"))
    return emf_blobs(capsys.readouterr().out)


def test_given_every_kind_of_request_when_metrics_print_then_only_allowed_dimensions(
    capsys: pytest.CaptureFixture[str],
) -> None:
    blobs = printed(capsys, *RECORDS.values())
    names: set[str] = set()
    for blob in blobs:
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == NAMESPACE
            for dimension_set in directive["Dimensions"]:
                assert set(dimension_set) <= ALLOWED_DIMENSIONS, dimension_set
            names |= {metric["Name"] for metric in directive["Metrics"]}
        if "ErrorClass" in blob:
            assert blob["ErrorClass"] in ERROR_CLASSES
        # No value of an org, key or model anywhere in the blob (as a dimension or property).
        text = json.dumps(blob)
        assert ORG not in text and KEY not in text and "gpt-dimcanary" not in text
    assert {
        "Requests",
        "Tokens",
        "CostUsd",
        "UpstreamLatencyMs",
        "GatewayOverheadMs",
        "LatencyMs",
        "CacheHits",
        "Errors",
        "Throttles",
        "SettleFailures",
        "HoldExceeded",
    } <= names


def test_given_each_error_when_classified_then_one_of_the_fixed_classes() -> None:
    assert error_class(RECORDS["ok"]) is None
    assert error_class(RECORDS["cached"]) is None
    assert {
        name: error_class(each) for name, each in RECORDS.items() if name not in ("ok", "cached")
    } == {
        "throttle": "throttle",
        "upstream": "upstream",
        "timeout": "upstream",
        "store": "store",
        "internal": "internal",
        "client": "client",
    }


def test_given_errors_when_printed_then_one_errors_blob_per_failed_request_with_its_class(
    capsys: pytest.CaptureFixture[str],
) -> None:
    blobs = printed(capsys, RECORDS["upstream"], RECORDS["throttle"], RECORDS["ok"])
    errors = [blob for blob in blobs if "Errors" in blob]
    assert [blob["ErrorClass"] for blob in errors] == ["upstream", "throttle"]
    # The request metrics are never split by ErrorClass.
    assert all("ErrorClass" not in blob for blob in blobs if "Requests" in blob)


def test_given_the_code_when_dimensions_are_added_then_each_is_an_allowed_name() -> None:
    """A tripwire over every module: a new dimension (default or per metric) must be one
    of ALLOWED_DIMENSIONS, so an org or key id can never become one."""
    sources = [*(ROOT / "layers").rglob("*.py"), *(ROOT / "functions").rglob("*.py")]
    calls = r"(add_dimension|set_default_dimensions|default_dimensions)\((.*?)\)"
    pattern = re.compile(calls, re.S)
    found = 0
    for source in sources:
        for _, arguments in pattern.findall(source.read_text()):
            found += 1
            literal = re.search(r'name="(\w+)"|^"(\w+)"|(\w+)=', arguments.strip())
            assert literal, f"{source}: a dimension whose name is not a literal: {arguments}"
            assert set(literal.groups()) - {None} <= ALLOWED_DIMENSIONS, (source, arguments)
    assert found >= 2  # the Errors blob's service and ErrorClass
