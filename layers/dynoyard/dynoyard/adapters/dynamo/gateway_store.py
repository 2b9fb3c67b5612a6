"""The gateway's store: the hot path (keys, holds, settles), the response cache and the
alert marks, over one client. Only what a request uses, so that the gateway's cold start
imports nothing of the console's, billing's or operations' stores (DynamoStore,
adapters/dynamo/store.py, is this and the rest)."""

from __future__ import annotations

import time
from collections.abc import Callable

from dynoyard.adapters.dynamo.alert_marks import AlertMarks
from dynoyard.adapters.dynamo.cache import CacheTable
from dynoyard.adapters.dynamo.client import DynamoClient
from dynoyard.adapters.dynamo.ledger import HotPath
from dynoyard.settings import GatewaySettings


class GatewayStore(HotPath, CacheTable, AlertMarks):
    """Every method is a coroutine."""

    def __init__(
        self,
        client: DynamoClient,
        accounts_table: str,
        usage_table: str,
        clock: Callable[[], float] = time.time,
        cache_table: str = "dynoyard-cache",
    ) -> None:
        self._db = client
        self.accounts_table = accounts_table
        self.usage_table = usage_table
        self.cache_table = cache_table
        self._clock = clock
        self._marked_hours = {}

    async def aclose(self) -> None:
        await self._db.aclose()


def gateway_store(settings: GatewaySettings) -> GatewayStore:
    client = DynamoClient(settings.dynamodb_endpoint, settings.aws_region)
    return GatewayStore(
        client, settings.accounts_table, settings.usage_table, cache_table=settings.cache_table
    )
