"""The cleanup job: ordered steps run within a time budget.

Each step is idempotent (every write conditional or a whole-item overwrite of the same
numbers) and resumable (a checkpoint, adapters/dynamo/job_store.py), so a run may stop
anywhere, run twice or run next to another. A failing step is reported and logged by its
exception's class only (a message could carry data); the other steps still run.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger as PowertoolsLogger

    from dynoyard.adapters.dynamo.console_store import ConsoleStore
    from dynoyard.adapters.dynamo.job_store import Checkpoints
    from dynoyard.adapters.dynamo.store import DynamoStore
    from dynoyard.domain.alerts import Recharger
    from dynoyard.domain.email import EmailSender
    from dynoyard.maintenance.settings import CleanupSettings


@dataclass(frozen=True)
class JobContext:
    now: float  # epoch seconds (a fake clock in tests)
    budget_left: Callable[[], float]  # seconds left of the run's time budget
    store: DynamoStore
    console_store: ConsoleStore
    email: EmailSender
    payments: Recharger | None
    settings: CleanupSettings
    log: logging.Logger | PowertoolsLogger
    checkpoints: Checkpoints
    run: str = "hourly"  # "hourly" or "daily" (the EventBridge rule's event)


@dataclass(frozen=True)
class StepReport:
    step: str
    finished: bool  # False: stopped by the budget; the next run resumes
    counts: dict[str, int] = field(default_factory=dict)
    failed: str | None = None  # the exception's class name, when the step raised

    def show(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"step": self.step, "finished": self.finished}
        shown["counts"] = dict(self.counts)
        if self.failed is not None:
            shown["failed"] = self.failed
        return shown


Step = Callable[[JobContext], Awaitable[StepReport]]


@dataclass(frozen=True)
class JobResult:
    reports: list[StepReport]

    @property
    def failed(self) -> bool:
        return any(report.failed is not None for report in self.reports)


async def run_job(ctx: JobContext, steps: Sequence[tuple[str, Step]]) -> JobResult:
    """Runs every step in order; a step left without budget is reported unfinished (it
    resumes next run), one that raises is reported failed and the next one runs."""
    reports: list[StepReport] = []
    for name, step in steps:
        if ctx.budget_left() <= 0:
            reports.append(StepReport(name, finished=False))
            continue
        try:
            reports.append(await step(ctx))
        except Exception as exc:  # one step's failure must not stop the others
            ctx.log.error("cleanup step failed", extra={"step": name, "error": type(exc).__name__})
            reports.append(StepReport(name, finished=False, failed=type(exc).__name__))
    return JobResult(reports)
