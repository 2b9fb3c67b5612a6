"""Cleanup Lambda: the scheduled job (dynoyard/maintenance/), on EventBridge schedules
hourly and daily (the daily rule's event says `{"run": "daily"}`). It works within the
invocation's remaining time less a margin, then resumes on the next run; any failed step
fails the invocation so the Lambda errors metric and the cleanup alarm see it."""

from __future__ import annotations

import asyncio
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from dynoyard.maintenance.run import run_cleanup
from dynoyard.maintenance.settings import CleanupSettings
from dynoyard.observability import lambda_handler, logger, metrics

# Left for writing the last checkpoint and the reports before Lambda stops the invocation.
MARGIN_SECONDS = 30.0


class CleanupFailed(Exception):
    """One or more steps raised (their class names are in the message)."""


def _run_of(event: Any) -> str:
    """Daily when the event says so: the daily schedule's constant input `{"run": "daily"}`
    (or a scheduled event whose detail says it); any other event is the hourly run."""
    if not isinstance(event, dict):
        return "hourly"
    detail = event.get("detail")
    said = event.get("run") or (detail.get("run") if isinstance(detail, dict) else None)
    return "daily" if said == "daily" else "hourly"


def _invoke(event: dict[str, Any], context: Any) -> dict[str, Any]:
    run = _run_of(event)
    remaining = context.get_remaining_time_in_millis() / 1000 if context is not None else 900.0
    budget = max(remaining - MARGIN_SECONDS, 1.0)
    result = asyncio.run(
        run_cleanup(CleanupSettings(), budget_seconds=budget, run=run, logger=logger)
    )
    reports = [report.show() for report in result.reports]
    for shown in reports:
        logger.info("cleanup step", extra=shown)
    failures = sum(1 for report in result.reports if report.failed)
    metrics.add_metric(name="CleanupFailures", unit=MetricUnit.Count, value=failures)
    metrics.flush_metrics()
    if result.failed:
        failed = sorted({r.failed for r in result.reports if r.failed})
        raise CleanupFailed(", ".join(failed))
    return {"run": run, "steps": reports}


handler = lambda_handler(_invoke)
