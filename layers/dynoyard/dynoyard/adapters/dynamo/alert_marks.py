"""The alert marks the gateway's settle writes (rules in domain/alert_states.py): an
organization's alert state moved to "due" with its `ALERT#<kind>` marker in one
transaction, or back to "armed". Apart from alerts_store.py (the senders' side) so that the
hot path imports only this. Item layout: alerts_store.py."""

from __future__ import annotations

import secrets
from typing import Any

from dynoyard.adapters.dynamo.client import DynamoClient, DynamoError
from dynoyard.adapters.dynamo.codec import attribute, now_iso, org_key

# Where each kind's threshold is on the org's item.
_THRESHOLD = {"low_balance": "low_balance_usd", "recharge": "auto_recharge.threshold_usd"}
_ARMED_OR_NEW = "(attribute_not_exists(#state) OR #state = :armed)"


def marker_key(kind: str, org_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"ALERT#{kind}"}, "sk": {"S": f"ORG#{org_id}"}}


def _state_name(kind: str) -> str:
    if kind not in _THRESHOLD:
        raise ValueError(f"unknown alert kind {kind!r}")
    return f"{kind}_state"


class AlertMarks:
    """The gateway's AlertMarks port (domain/ports.py)."""

    _db: DynamoClient
    accounts_table: str

    async def mark_alert_due(self, org_id: str, kind: str) -> bool:
        condition = f"{_ARMED_OR_NEW} AND balance_usd < {_THRESHOLD[kind]}"
        if kind == "recharge":
            condition += " AND auto_recharge.enabled = :true AND attribute_exists(recharge_card)"
        values = {":armed": attribute("armed"), ":due": attribute("due")}
        if kind == "recharge":
            values[":true"] = attribute(True)
        mark_id = secrets.token_hex(8)
        marker = {
            **marker_key(kind, org_id),
            "org_id": attribute(org_id),
            "mark_id": attribute(mark_id),
            "due_at": attribute(now_iso()),
        }
        try:
            await self._db.call(
                "TransactWriteItems",
                {
                    "TransactItems": [
                        {
                            "Update": {
                                "TableName": self.accounts_table,
                                "Key": org_key(org_id),
                                "UpdateExpression": "SET #state = :due",
                                "ConditionExpression": condition,
                                "ExpressionAttributeNames": {"#state": _state_name(kind)},
                                "ExpressionAttributeValues": values,
                            }
                        },
                        {"Put": {"TableName": self.accounts_table, "Item": marker}},
                    ]
                },
                idempotent=False,
            )
        except DynamoError as error:
            if error.condition_failed:
                return False  # another request marked it, or the balance is back above
            raise
        return True

    async def rearm_alert(self, org_id: str, kind: str, also_due: bool = False) -> bool:
        return await self._update_state(rearm_update(self.accounts_table, org_id, kind, also_due))

    async def _update_state(self, update: dict[str, Any]) -> bool:
        try:
            await self._db.call("UpdateItem", update, idempotent=False)
        except DynamoError as error:
            if error.condition_failed:
                return False
            raise
        return True


def state_update(
    table: str, org_id: str, kind: str, to: str, condition: str, values: dict[str, Any]
) -> dict[str, Any]:
    """The conditional UpdateItem moving an alert's state to `to`."""
    values = {":to": attribute(to), **values}
    for name in ("due", "sent"):
        if f":{name}" in condition:
            values[f":{name}"] = attribute(name)
    return {
        "TableName": table,
        "Key": org_key(org_id),
        "UpdateExpression": "SET #state = :to",
        "ConditionExpression": f"attribute_exists(pk) AND {condition}",
        "ExpressionAttributeNames": {"#state": _state_name(kind)},
        "ExpressionAttributeValues": values,
    }


def rearm_update(table: str, org_id: str, kind: str, also_due: bool = False) -> dict[str, Any]:
    """Back to "armed" if the alert was acted on ("sent", "failed"; "due" too for a sender
    that finds it topped up) and the balance is at or above the threshold, or there is no
    threshold any more. Also what a credit sends after its movement (billing_store.py)."""
    states = ["sent", "failed"] + (["due"] if also_due else [])
    values = {f":s{i}": attribute(s) for i, s in enumerate(states)}
    threshold = _THRESHOLD[kind]
    above = f"(attribute_not_exists({threshold}) OR balance_usd >= {threshold})"
    if kind == "recharge":
        # Auto-recharge turned off counts as "no threshold".
        above = f"(attribute_not_exists(auto_recharge) OR {above})"
    condition = f"#state IN ({', '.join(values)}) AND {above}"
    return state_update(table, org_id, kind, "armed", condition, values)
