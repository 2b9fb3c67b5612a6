"""The roll-up step: each organization's closed days (domain/rollup.py) into daily
aggregates (adapters/dynamo/rollup_store.py) and the ledger's `usage_daily` entry.

Per organization, from the day after its `through` mark (or its first record) to the last
closed day, each day with records: read them all (consistently, those past their TTL
too), put the aggregates, apply the ledger entry (its guard makes it count once; it moves
no balance), then move the mark. Any run may stop between two of these and the next one
redoes the day with the same numbers.

Organizations come from the paginated scan of org items `billing reconcile` uses, once a
day: the checkpoint (JOB#rollup) holds the day being rolled and the last organization
done, so the hourly runs after a finished round read nothing but the checkpoint, and one
stopped by its budget resumes after the last organization it finished.
"""

from __future__ import annotations

import json
from datetime import date, timedelta

from dynoyard.domain.billing import UnknownOrgForMovement
from dynoyard.domain.rollup import aggregate_day, last_closed_day, usage_daily_movement
from dynoyard.maintenance.job import JobContext, StepReport

STEP = "rollup"
# Left in the budget to finish a day's writes once begun (a day of one org is a few calls).
MIN_SECONDS = 5.0


async def rollup_step(ctx: JobContext) -> StepReport:
    closed = last_closed_day(ctx.now).isoformat()
    saved = await ctx.checkpoints.get(STEP)
    state = json.loads(saved) if saved else {}
    if state.get("day") == closed and state.get("done"):
        return StepReport(STEP, finished=True, counts={"orgs": 0, "days_rolled": 0})
    after = state.get("after") if state.get("day") == closed else None
    counts = {"orgs": 0, "days_rolled": 0, "ledger_entries": 0, "aggregates": 0}
    async for org_id in ctx.store.org_ids(after=after):
        if ctx.budget_left() < MIN_SECONDS:
            await ctx.checkpoints.put(STEP, json.dumps({"day": closed, "after": after}))
            return StepReport(STEP, finished=False, counts=counts)
        finished = await _roll_org(ctx, org_id, closed, counts)
        if not finished:
            await ctx.checkpoints.put(STEP, json.dumps({"day": closed, "after": after}))
            return StepReport(STEP, finished=False, counts=counts)
        counts["orgs"] += 1
        after = org_id
    await ctx.checkpoints.put(STEP, json.dumps({"day": closed, "done": True}))
    return StepReport(STEP, finished=True, counts=counts)


async def _roll_org(ctx: JobContext, org_id: str, closed: str, counts: dict[str, int]) -> bool:
    """Rolls the org's closed days up; False when the budget ran out first."""
    through = await ctx.store.rolled_through(org_id)
    if through is not None and through >= closed:
        return True
    start = None if through is None else (date.fromisoformat(through) + timedelta(1)).isoformat()
    while (day := await ctx.store.next_record_day(org_id, start)) is not None and day <= closed:
        if ctx.budget_left() < MIN_SECONDS:
            return False
        aggregates = aggregate_day(day, await ctx.store.day_records(org_id, day))
        await ctx.store.put_aggregates(org_id, aggregates)
        counts["aggregates"] += len(aggregates)
        try:
            movement = usage_daily_movement(org_id, day, aggregates[0].cost_usd)
            if await ctx.store.billing.apply(movement):
                counts["ledger_entries"] += 1
        except UnknownOrgForMovement:
            pass  # the organization is gone: no ledger to write to
        await ctx.store.mark_rolled(org_id, day)
        counts["days_rolled"] += 1
        start = (date.fromisoformat(day) + timedelta(1)).isoformat()
    await ctx.store.mark_rolled(org_id, closed)  # nothing more up to the closed day
    return True
