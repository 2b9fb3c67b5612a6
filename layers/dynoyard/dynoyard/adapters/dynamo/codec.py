"""DynamoDB's attribute-value JSON and the few Python types these items use."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any


def org_key(org_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"ORG#{org_id}"}, "sk": {"S": "META"}}


def num(amount: Decimal | int) -> dict[str, str]:
    return {"N": str(amount)}


def attribute(value: Any) -> dict[str, Any]:
    """A Python value as a DynamoDB attribute value (the few types these items use)."""
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, int | Decimal):
        return {"N": str(value)}
    if isinstance(value, list | tuple):
        return {"L": [attribute(v) for v in value]}
    raise TypeError(f"no DynamoDB type for {type(value).__name__}")


def value(typed_value: dict[str, Any]) -> Any:
    ((kind, raw),) = typed_value.items()
    if kind == "N":
        return Decimal(raw)
    if kind == "L":
        return [value(v) for v in raw]
    if kind == "M":
        return {k: value(v) for k, v in raw.items()}
    if kind == "NULL":
        return None
    return raw  # S, BOOL, SS


def plain(item: dict[str, Any]) -> dict[str, Any]:
    return {k: value(v) for k, v in item.items()}


def typed(item: dict[str, Any]) -> dict[str, Any]:
    return {k: attribute(v) for k, v in item.items() if v is not None}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
