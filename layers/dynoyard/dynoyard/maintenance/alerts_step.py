"""The alerts step: the due low-balance alerts and auto-recharges (domain/alerts.py), each
once: what `dynoyard billing alerts` runs by hand."""

from __future__ import annotations

from dynoyard.adapters.dynamo.alerts_store import OrgManagers
from dynoyard.domain.alerts import Alerts
from dynoyard.maintenance.job import JobContext, StepReport


def alerts_of(ctx: JobContext) -> Alerts:
    """The one way the alerts' dependencies are put together (the CLI's `billing alerts`
    uses it too)."""
    managers = OrgManagers(ctx.console_store)
    return Alerts(ctx.store, managers, ctx.email, ctx.settings.public_url, ctx.payments)


async def alerts_step(ctx: JobContext) -> StepReport:
    alerts = alerts_of(ctx)
    sent = await alerts.send_due_alerts(ctx.now)
    recharges = await alerts.run_due_recharges(ctx.now)
    counts = {f"low_balance_{k}": v for k, v in sent.show().items()}
    counts |= {f"recharge_{k}": v for k, v in recharges.show().items()}
    return StepReport("alerts", finished=True, counts=counts)
