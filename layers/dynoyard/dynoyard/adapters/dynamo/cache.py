"""The opt-in response cache of an organization: CACHE_TABLE, one item per answer,
pk = ORG#<org_id>, sk = <request hash>, expiring by DynamoDB TTL (`expires_at`)."""

from __future__ import annotations

from typing import Any

from dynoyard.domain.ports import CacheEntry


def cache_item(entry: CacheEntry) -> dict[str, Any]:
    return {
        "pk": {"S": f"ORG#{entry.org_id}"},
        "sk": {"S": entry.request_hash},
        "answer": {"B": _b64(entry.answer)},
        "expires_at": {"N": str(entry.expires_at)},
    }


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()
