"""The demo organization `make dev` creates once and reuses afterwards."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from dynoyard.adapters.dynamo.store import BlockingStore
from dynoyard.domain.accounts import UnknownOrg

DEMO_CREDITS = Decimal("10.00")


@dataclass(frozen=True)
class DemoAccount:
    org_id: str
    api_key: str | None  # only when just created: the key is never stored


def ensure_demo_org(store: BlockingStore, marker: Path) -> DemoAccount:
    if marker.exists():
        org_id = marker.read_text().strip()
        try:
            store.get_org(org_id)
            return DemoAccount(org_id, None)
        except UnknownOrg:
            pass  # the tables were reset: seed again
    org_id = store.create_org("Demo", "demo@localhost")
    store.grant_credits(org_id, DEMO_CREDITS, "make dev demo credits")
    key = store.create_key(org_id, name="demo")
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(org_id + "\n")
    return DemoAccount(org_id, key.secret)
