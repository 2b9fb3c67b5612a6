"""What a running gateway holds: settings, catalog, clients. Built once per process and
lazily, so importing a handler does no work that can wait for the first request."""

from __future__ import annotations

from functools import cached_property

from dynoyard.adapters.catalog_file import load_catalog
from dynoyard.adapters.dynamo.gateway_store import GatewayStore, gateway_store
from dynoyard.adapters.secrets import ProviderKeys
from dynoyard.adapters.upstream import AiohttpUpstream
from dynoyard.domain.catalog import Catalog
from dynoyard.domain.gateway import Gateway
from dynoyard.domain.ip_guard import IpGuard
from dynoyard.domain.resilience import Resilience, RetryPolicy
from dynoyard.observability import PowertoolsObserver
from dynoyard.settings import GatewaySettings


class Runtime:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings

    @cached_property
    def provider_keys(self) -> ProviderKeys:
        return ProviderKeys(self.settings.provider_keys_secret)

    @cached_property
    def catalog(self) -> Catalog:
        return load_catalog(self.settings.models_file, self.provider_keys.available)

    @cached_property
    def store(self) -> GatewayStore:
        return gateway_store(self.settings)

    @cached_property
    def ip_guard(self) -> IpGuard:
        return IpGuard(
            self.store,
            requests_per_minute=self.settings.ip_requests_per_minute,
            failures_per_minute=self.settings.ip_failed_keys_per_minute,
        )

    @cached_property
    def gateway(self) -> Gateway:
        store = self.store
        return Gateway(
            self.catalog,
            keys=store,
            ledger=store,
            cache=store,
            alerts=store,
            upstream=AiohttpUpstream(
                self.provider_keys,
                connect_timeout=self.settings.upstream_connect_timeout,
                read_timeout=self.settings.upstream_read_timeout,
            ),
            observer=PowertoolsObserver(metrics_enabled=not self.settings.metrics_disabled),
            key_cache_seconds=self.settings.key_cache_seconds,
            max_response_bytes=self.settings.max_response_bytes,
            deadline_seconds=self.settings.request_deadline_seconds,
            resilience=Resilience(
                RetryPolicy(retries=self.settings.upstream_retries),
                breaker_failures=self.settings.breaker_failures,
                breaker_open_seconds=self.settings.breaker_open_seconds,
            ),
        )
