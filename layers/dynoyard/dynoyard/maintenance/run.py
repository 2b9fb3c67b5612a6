"""`run_cleanup`: the one entry of the scheduled function and of `dynoyard cleanup run`. It
builds the job's context once (one DynamoDB client, reused by every step) and runs STEPS."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from dynoyard.adapters.dynamo.client import DynamoClient
from dynoyard.adapters.dynamo.console_store import ConsoleStore
from dynoyard.adapters.dynamo.job_store import Checkpoints
from dynoyard.adapters.dynamo.store import DynamoStore
from dynoyard.adapters.email_settings import EmailSettings
from dynoyard.adapters.recharges import StripeRecharges
from dynoyard.maintenance.job import JobContext, JobResult, Step, run_job
from dynoyard.maintenance.settings import CleanupSettings

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger as PowertoolsLogger

# Enough for the hourly run's work on a quiet service; the Lambda passes its remaining time.
DEFAULT_BUDGET_SECONDS = 600.0

log = logging.getLogger("dynoyard.cleanup")


@asynccontextmanager
async def job_context(
    settings: CleanupSettings,
    now: float | None = None,
    budget_left: Callable[[], float] | None = None,
    run: str = "hourly",
    logger: logging.Logger | PowertoolsLogger | None = None,
) -> AsyncIterator[JobContext]:
    """The job's context, built once: one DynamoDB client every step reuses, closed after."""
    at = time.time() if now is None else now
    client = DynamoClient(settings.dynamodb_endpoint, settings.aws_region)
    store = DynamoStore(
        client,
        settings.accounts_table,
        settings.usage_table,
        clock=lambda: at,
        cache_table=settings.cache_table,
    )
    try:
        yield JobContext(
            now=at,
            budget_left=budget_left or (lambda: DEFAULT_BUDGET_SECONDS),
            store=store,
            console_store=ConsoleStore(client, settings.accounts_table, clock=lambda: at),
            email=EmailSettings(outbox_dir=settings.outbox_dir).sender(),
            payments=StripeRecharges.from_environment(),
            settings=settings,
            log=logger or log,
            checkpoints=Checkpoints(client, settings.accounts_table),
            run=run,
        )
    finally:
        await client.aclose()


async def run_cleanup(
    settings: CleanupSettings,
    now: float | None = None,
    budget_seconds: float = DEFAULT_BUDGET_SECONDS,
    run: str = "hourly",
    steps: Sequence[tuple[str, Step]] | None = None,
    logger: logging.Logger | PowertoolsLogger | None = None,
) -> JobResult:
    from dynoyard.maintenance.steps import STEPS

    deadline = time.monotonic() + budget_seconds
    async with job_context(settings, now, lambda: deadline - time.monotonic(), run, logger) as ctx:
        return await run_job(ctx, STEPS if steps is None else steps)
