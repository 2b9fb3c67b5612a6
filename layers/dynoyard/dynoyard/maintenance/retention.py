"""The retention step (issue 10): deletes what is past its retention where DynamoDB's TTL
has not acted yet (it lags by days), so "kept 90 days" means 90 days.

- Accounts table: sessions, sign-in links and their address pointers, OAuth sign-ins under
  way, invitations (all three items), rate-limit windows, unsubscribe links and audit
  entries (400 days): every item whose `expires_at` has passed, deleted only if it still
  has (a session renewed meanwhile stays).
- Usage records older than RETENTION_DAYS (90), per organization, but never a day the
  roll-up has not covered yet: that day is skipped and counted (`usage_days_waiting`),
  and deleted by a later run once its aggregate and ledger entry exist.
- Cache answers past their expiry.

Finding expired accounts items takes a Scan (no index by expiry), so a round starts on the
daily run (or on any run 23 hours after the last round began, `JOB#retention_round`); it
reads SCAN_PAGE items a page, saves its cursor (`JOB#retention`) after each page and stops
when the budget runs out; any next run, hourly too, resumes the round until it reaches the
table's end. Every delete is conditional or of an item that never
changes, so two runs at once, or a page done twice, delete nothing that should stay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from datetime import UTC, datetime

from dynoyard.adapters.dynamo.retention_store import RetentionStore
from dynoyard.domain.usage import RETENTION_DAYS
from dynoyard.maintenance.job import JobContext, StepReport

STEP = "retention"
ROUND = "retention_round"  # when the last round started (its own checkpoint item)
# A round starts on the daily run, or on any run (the hourly one, `dynoyard cleanup run`)
# once this long has passed since the last began: a missed daily event delays it by an hour.
ROUND_EVERY_SECONDS = 23 * 3600
PARALLEL_DELETES = 8


async def retention_step(ctx: JobContext) -> StepReport:
    cursor = await ctx.checkpoints.get(STEP)
    counts = {
        "pages": 0,
        "accounts_deleted": 0,
        "orgs": 0,
        "usage_deleted": 0,
        "usage_days_waiting": 0,
        "cache_deleted": 0,
    }
    if cursor is None:  # no round under way: start one on the daily run, or a day after the last
        started = await ctx.checkpoints.get(ROUND)
        if ctx.run != "daily" and started and ctx.now - float(started) < ROUND_EVERY_SECONDS:
            return StepReport(STEP, finished=True, counts=counts)
        await ctx.checkpoints.put(ROUND, str(int(ctx.now)))
    store = RetentionStore.of(ctx.store)
    now = int(ctx.now)
    cutoff = datetime.fromtimestamp(now - RETENTION_DAYS * 86_400, UTC).isoformat(
        timespec="milliseconds"
    )
    while True:
        if ctx.budget_left() <= 0:
            return _stopped(ctx, counts)
        expired, orgs, next_cursor = await store.accounts_page(cursor, now)
        counts["pages"] += 1
        counts["accounts_deleted"] += await _deleted(
            store.delete_if_expired(store.accounts_table, key, now) for key in expired
        )
        for org_id in orgs:
            if ctx.budget_left() <= 0:
                return _stopped(ctx, counts)  # this page again next run: idempotent
            counts["orgs"] += 1
            await _purge_org(store, org_id, now, cutoff, counts)
        # The page is done: a later run resumes after it.
        await ctx.checkpoints.put(STEP, next_cursor)
        if next_cursor is None:
            ctx.log.info("retention round finished", extra={"counts": counts})
            return StepReport(STEP, finished=True, counts=counts)
        cursor = next_cursor


async def _purge_org(
    store: RetentionStore, org_id: str, now: int, cutoff: str, counts: dict[str, int]
) -> None:
    for day, (keys, cost) in sorted((await store.usage_before(org_id, cutoff)).items()):
        if not await store.rolled_up(org_id, day, cost):
            counts["usage_days_waiting"] += 1  # its cost still counts in reconciliation
            continue
        await store.delete_batch(store.usage_table, keys)
        counts["usage_deleted"] += len(keys)
    expired_cache = await store.expired_cache(org_id, now)
    counts["cache_deleted"] += await _deleted(
        store.delete_if_expired(store.cache_table, key, now) for key in expired_cache
    )


async def _deleted(deletes: Iterable[Awaitable[bool]]) -> int:
    """Runs the conditional deletes a few at a time; how many deleted an item."""
    pending = list(deletes)
    done = 0
    for start in range(0, len(pending), PARALLEL_DELETES):
        done += sum(await asyncio.gather(*pending[start : start + PARALLEL_DELETES]))
    return done


def _stopped(ctx: JobContext, counts: dict[str, int]) -> StepReport:
    ctx.log.info("retention stopped by the budget", extra={"counts": counts})
    return StepReport(STEP, finished=False, counts=counts)
