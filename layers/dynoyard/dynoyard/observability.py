"""Powertools Logger, Metrics and Tracer: one place, metadata only.

A log line or metric never holds a body or a secret header: only request id, org id, key
id, model, provider, status, tokens, latency. The privacy tests scan all of it.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from dynoyard.domain.money import format_usd
from dynoyard.domain.usage import UsageRecord

SERVICE = "dynoyard"
NAMESPACE = "Dynoyard"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)

# Dimensions stay cheap: one series per value, so never an org, key, model or request id
# (tests/unit/test_metrics_dimensions.py holds every metric to these).
ALLOWED_DIMENSIONS = frozenset({"service", "ErrorClass"})
# The ErrorClass dimension's fixed values.
ERROR_CLASSES = ("client", "throttle", "upstream", "store", "internal")


def error_class(record: UsageRecord) -> str | None:
    """A request's error as one of ERROR_CLASSES, None when it succeeded."""
    if record.error_code is None and record.status < 400:
        return None
    if record.error_code == "rate_limit_exceeded" or record.status == 429:
        return "throttle"
    if record.error_code in ("upstream_error", "upstream_timeout"):
        return "upstream"
    if record.error_code == "service_unavailable":
        return "store"
    if record.status >= 500:
        return "internal"
    return "client"


LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


def tracing_enabled() -> bool:
    """X-Ray subsegments through the Powertools Tracer cost ~200 ms of cold start (the X-Ray
    SDK import), so they are opt-in: POWERTOOLS_TRACE_DISABLED=false on Lambda. Lambda's own
    active tracing records every invocation either way."""
    disabled = os.environ.get("POWERTOOLS_TRACE_DISABLED", "true").lower() in ("true", "1")
    return not disabled and "AWS_LAMBDA_FUNCTION_NAME" in os.environ


@contextlib.contextmanager
def subsegment(name: str) -> Iterator[None]:
    """An X-Ray subsegment around an outbound call (a DynamoDB operation, the upstream's
    request), when tracing is on. Its name and timing only: no metadata, no annotation, and
    a failure marks it faulted without its exception (whose message may quote data)."""
    # No trace header, no segment to hang it on: the streaming function's web server (Lambda
    # Web Adapter) gets none, and the X-Ray SDK would log an error per call.
    if not tracing_enabled() or "_X_AMZN_TRACE_ID" not in os.environ:
        yield
        return
    from aws_xray_sdk.core import xray_recorder

    try:
        opened = xray_recorder.begin_subsegment(name, namespace="remote")
    except Exception:  # no segment to hang it on (outside an invocation)
        opened = None
    try:
        yield
    except BaseException:
        if opened is not None:
            opened.add_fault_flag()
        raise
    finally:
        if opened is not None:
            xray_recorder.end_subsegment()


def log_context(**ids: str) -> None:
    """Ids (request id, org id) on every later log line of the current request. A context
    variable: concurrent requests in one process (uvicorn, tests) keep their own, and a
    Lambda invocation's task starts without the previous one's."""
    logger.thread_safe_append_keys(**ids)


def _with_api_request_id(handler: LambdaHandler) -> LambdaHandler:
    @functools.wraps(handler)  # the tracer names its subsegment after the handler
    def invoke(event: dict[str, Any], context: Any) -> dict[str, Any]:
        request_context = event.get("requestContext") if isinstance(event, dict) else None
        api_request_id = (
            request_context.get("requestId") if isinstance(request_context, dict) else None
        )
        # API Gateway's id (its access logs and X-Ray use it); cleared each invocation.
        if isinstance(api_request_id, str):
            logger.append_keys(api_request_id=api_request_id[:64])
        return handler(event, context)

    return invoke


def lambda_handler(handler: LambdaHandler) -> LambdaHandler:
    """Wraps a Lambda handler with the logger's context (Lambda's request id, and API
    Gateway's when the event has one) and, when enabled, the tracer. The tracer records
    neither the response (a completion) nor the error as trace metadata."""
    handler = _with_api_request_id(handler)
    if tracing_enabled():
        from aws_lambda_powertools import Tracer

        handler = Tracer(service=SERVICE).capture_lambda_handler(
            handler, capture_response=False, capture_error=False
        )
    wrapped: LambdaHandler = logger.inject_lambda_context(handler, clear_state=True)
    return wrapped


class PowertoolsObserver:
    """The domain's Observer port: one structured log line and a few metrics per request."""

    def __init__(self, metrics_enabled: bool = True) -> None:
        # Disabled metrics are still collected by Powertools and printed every 100 values,
        # so nothing is added when they are off.
        self._metrics_enabled = metrics_enabled

    def request_finished(self, record: UsageRecord) -> None:
        # The export's fields are metadata only: ids, model, status, tokens, cost, latency.
        logger.info(
            "request finished",
            extra={
                **record.export(),
                "upstream_ms": record.upstream_ms,
                "attempts": record.attempts,
            },
        )
        if not self._metrics_enabled:
            return
        metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="LatencyMs", unit=MetricUnit.Milliseconds, value=record.latency_ms)
        metrics.add_metric(name="Tokens", unit=MetricUnit.Count, value=record.total_tokens)
        # EMF values are JSON numbers: the cost's float is for graphs only, never for money.
        metrics.add_metric(name="CostUsd", unit=MetricUnit.NoUnit, value=float(record.cost_usd))
        if record.upstream_ms > 0:
            metrics.add_metric(
                name="UpstreamLatencyMs", unit=MetricUnit.Milliseconds, value=record.upstream_ms
            )
        # What the gateway itself adds: authentication, the hold, the settle, the cache.
        overhead = max(record.latency_ms - record.upstream_ms, 0)
        metrics.add_metric(name="GatewayOverheadMs", unit=MetricUnit.Milliseconds, value=overhead)
        if record.cached:
            metrics.add_metric(name="CacheHits", unit=MetricUnit.Count, value=1)
        if record.error_code in ("upstream_error", "upstream_timeout"):
            metrics.add_metric(name="UpstreamErrors", unit=MetricUnit.Count, value=1)
        if record.error_code == "service_unavailable":
            metrics.add_metric(name="StoreUnavailable", unit=MetricUnit.Count, value=1)
        failure = error_class(record)
        if failure == "throttle":
            metrics.add_metric(name="Throttles", unit=MetricUnit.Count, value=1)
        metrics.flush_metrics()
        if failure is not None:
            # Its own blob: the ErrorClass dimension must not split the metrics above.
            with single_metric(
                name="Errors", unit=MetricUnit.Count, value=1, namespace=NAMESPACE
            ) as errors:
                errors.add_dimension(name="service", value=SERVICE)
                errors.add_dimension(name="ErrorClass", value=failure)

    def hold_exceeded(self, record: UsageRecord, held: Decimal) -> None:
        logger.warning(
            "hold exceeded: the upstream generated past the limit it was sent",
            extra={
                "request_id": record.request_id,
                "org_id": record.org_id,
                "model": record.model,
                "provider": record.provider,
                "held_usd": format_usd(held),
                "cost_usd": format_usd(record.cost_usd),
                "completion_tokens": record.completion_tokens,
            },
        )
        if self._metrics_enabled:
            metrics.add_metric(name="HoldExceeded", unit=MetricUnit.Count, value=1)
            metrics.flush_metrics()

    def settle_failed(self, record: UsageRecord, error: Exception) -> None:
        logger.error(
            "settle failed: reconcile this request",
            extra={
                "request_id": record.request_id,
                "org_id": record.org_id,
                "error_type": type(error).__name__,
            },
        )
        if self._metrics_enabled:
            metrics.add_metric(name="SettleFailures", unit=MetricUnit.Count, value=1)
            metrics.flush_metrics()
