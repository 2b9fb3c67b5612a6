"""DynamoStore: every job's DynamoDB methods (the gateway's, the operator's administration,
usage, roll-ups, alerts, reconciliation, the audit log, the ledger) over one client and the
table names. The console, the CLI, the webhook and the cleanup use it; the gateway uses
only GatewayStore (gateway_store.py)."""

from __future__ import annotations

import asyncio
import inspect
from functools import cached_property
from typing import Any

from dynoyard.adapters.dynamo.admin import AccountsAdmin
from dynoyard.adapters.dynamo.alerts_store import AlertItems
from dynoyard.adapters.dynamo.audit_store import DynamoAuditLog
from dynoyard.adapters.dynamo.billing_store import BillingStore
from dynoyard.adapters.dynamo.client import DynamoClient
from dynoyard.adapters.dynamo.gateway_store import GatewayStore
from dynoyard.adapters.dynamo.reconcile import ReconcileItems
from dynoyard.adapters.dynamo.rollup_store import RollupItems
from dynoyard.adapters.dynamo.usage import UsageRecords
from dynoyard.settings import GatewaySettings


class DynamoStore(
    GatewayStore, AccountsAdmin, RollupItems, UsageRecords, AlertItems, ReconcileItems
):
    """Every job's methods over one client (the gateway's and the rest). Every method is a
    coroutine; `BlockingStore` runs them for synchronous callers."""

    @cached_property
    def audit_log(self) -> DynamoAuditLog:
        """The audit log (adapters/dynamo/audit_store.py), on the same client and clock."""
        return DynamoAuditLog(self._db, self.accounts_table, clock=self._clock)

    @cached_property
    def billing(self) -> BillingStore:
        """The ledger of money movements (adapters/dynamo/billing_store.py)."""
        return BillingStore(self._db, self.accounts_table)


class BlockingStore:
    """A DynamoStore for synchronous callers (the CLI, `make dev`'s seeding, tests): each
    call runs to completion on its own event loop."""

    def __init__(self, store: DynamoStore) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.store, name)
        if not inspect.iscoroutinefunction(method):
            return method

        async def call_then_close(*args: Any, **kwargs: Any) -> Any:
            try:
                return await method(*args, **kwargs)
            finally:
                await self.store.aclose()  # its connections die with this loop

        def run(*args: Any, **kwargs: Any) -> Any:
            return asyncio.run(call_then_close(*args, **kwargs))

        return run


def dynamo_store(settings: GatewaySettings) -> DynamoStore:
    client = DynamoClient(settings.dynamodb_endpoint, settings.aws_region)
    return DynamoStore(
        client, settings.accounts_table, settings.usage_table, cache_table=settings.cache_table
    )


def blocking_store(settings: GatewaySettings) -> BlockingStore:
    return BlockingStore(dynamo_store(settings))
