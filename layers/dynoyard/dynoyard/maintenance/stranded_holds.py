"""The stranded-holds step: holds whose settle never came go back to the balance, once.

Every hold the gateway takes is recorded on its org item as `hold_<request id>` with an
expiry (its request's deadline + `STRANDED_AFTER_DEADLINE_SECONDS`, domain/gateway.py); the
settle removes it. The step looks at the organizations with money held (`held_usd` > 0, a
filtered Scan) and returns each recorded hold past its expiry with one conditional write
(adapters/dynamo/ledger.py `return_hold`): the settle and every run race for the same
attribute, so a hold is returned once, and a settle arriving later charges the cost only.
Nothing to resume from: what a stopped run returned is gone from the items, so the next run
starts over and finds only what is left.
"""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit

from dynoyard.domain.money import format_usd
from dynoyard.maintenance.job import JobContext, StepReport
from dynoyard.observability import metrics

STEP = "stranded_holds"


async def stranded_holds_step(ctx: JobContext) -> StepReport:
    orgs = returned = 0
    async for org_id in ctx.store.org_ids(holding=True):
        if ctx.budget_left() <= 0:
            return _report(False, orgs, returned)
        orgs += 1
        for hold in await ctx.store.stranded_holds(org_id, ctx.now):
            if not await ctx.store.return_hold(hold):
                continue  # settled, or returned by another run, since the read
            returned += 1
            ctx.log.warning(
                "stranded hold returned",
                extra={
                    "org_id": hold.org_id,
                    "request_id": hold.request_id,
                    "amount_usd": format_usd(hold.amount),
                },
            )
    return _report(True, orgs, returned)


def _report(finished: bool, orgs: int, returned: int) -> StepReport:
    if returned:
        metrics.add_metric(name="StrandedHoldsReturned", unit=MetricUnit.Count, value=returned)
        metrics.flush_metrics()
    return StepReport(STEP, finished=finished, counts={"orgs": orgs, "holds_returned": returned})
