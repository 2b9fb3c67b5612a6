"""The alerts' items in the accounts table (rules in domain/alerts.py).

  ORG#<org_id> / META   low_balance_state, recharge_state: "armed" (or absent), "due",
                        "sent", "failed" (recharge only); auto_recharge {enabled,
                        threshold_usd, amount_usd, monthly_cap_usd, consent_at,
                        consent_by}; recharge_card (the payment method a checkout with
                        save_card kept, set by the webhook's top-up movement);
                        recharge_month ("YYYY-MM") and recharge_month_usd (recharged
                        that UTC month)
  ALERT#<kind> / ORG#<org_id>   org_id, mark_id, due_at: a sparse marker, one per due
                        alert, so the senders query one small partition instead of
                        scanning organizations

Marking due is one transaction: the org's state (conditional on it being armed and the
balance below the threshold) and the marker. Every state change is a conditional
UpdateItem, so only one writer wins each step.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from dynoyard.adapters.dynamo.alert_marks import (
    AlertMarks,
    marker_key,
    state_update,
)
from dynoyard.adapters.dynamo.client import DynamoClient, DynamoError
from dynoyard.adapters.dynamo.codec import attribute, num, org_key, plain
from dynoyard.adapters.dynamo.console_store import ConsoleStore
from dynoyard.domain.alerts import (
    AlertKind,
    AlertOrg,
    AutoRecharge,
    DueAlert,
    Recipient,
)
from dynoyard.domain.messages import language_of


class AlertItems(AlertMarks):
    """Implements domain/alerts.py's AlertStore (and, through AlertMarks, the gateway's port)."""

    _db: DynamoClient
    _clock: Callable[[], float]
    accounts_table: str

    async def claim_alert(self, org_id: str, kind: AlertKind) -> bool:
        return await self._set_state(org_id, kind, "sent", "#state = :due", {})

    async def release_alert(self, org_id: str, kind: AlertKind) -> None:
        await self._set_state(org_id, kind, "due", "#state = :sent", {})

    async def fail_alert(self, org_id: str, kind: AlertKind) -> None:
        await self._set_state(org_id, kind, "failed", "#state = :sent", {})

    async def _set_state(
        self, org_id: str, kind: str, to: str, condition: str, values: dict[str, Any]
    ) -> bool:
        return await self._update_state(
            state_update(self.accounts_table, org_id, kind, to, condition, values)
        )

    async def due_alerts(self, kind: AlertKind) -> list[DueAlert]:
        alerts: list[DueAlert] = []
        start: dict[str, Any] | None = None
        while True:
            params: dict[str, Any] = {
                "TableName": self.accounts_table,
                "KeyConditionExpression": "pk = :pk",
                "ExpressionAttributeValues": {":pk": attribute(f"ALERT#{kind}")},
                "ConsistentRead": True,
            }
            if start:
                params["ExclusiveStartKey"] = start
            answer = await self._db.call("Query", params)
            for raw in answer.get("Items", []):
                item = plain(raw)
                alerts.append(DueAlert(str(item["org_id"]), str(item["mark_id"])))
            start = answer.get("LastEvaluatedKey")
            if not start:
                return alerts

    async def finish_alert(self, alert: DueAlert, kind: AlertKind) -> None:
        try:
            await self._db.call(
                "DeleteItem",
                {
                    "TableName": self.accounts_table,
                    "Key": marker_key(kind, alert.org_id),
                    "ConditionExpression": "mark_id = :mark",
                    "ExpressionAttributeValues": {":mark": attribute(alert.mark_id)},
                },
            )
        except DynamoError as error:
            if not error.condition_failed:
                raise  # else: gone already, or a later marking replaced it

    async def alert_org(self, org_id: str) -> AlertOrg | None:
        answer = await self._db.call(
            "GetItem",
            {"TableName": self.accounts_table, "Key": org_key(org_id), "ConsistentRead": True},
        )
        if not answer.get("Item"):
            return None
        item = plain(answer["Item"])
        return AlertOrg(
            org_id=org_id,
            name=str(item.get("name", "")),
            balance_usd=item.get("balance_usd", Decimal(0)),
            low_balance_usd=item.get("low_balance_usd"),
            auto_recharge=auto_recharge_of(item),
            customer_id=item.get("stripe_customer_id"),
            recharge_month=item.get("recharge_month"),
            recharge_month_usd=item.get("recharge_month_usd", Decimal(0)),
        )

    async def reserve_recharge(
        self, org_id: str, month: str, amount: Decimal, cap: Decimal
    ) -> bool:
        if amount > cap:
            return False
        same_month: dict[str, Any] = {
            "UpdateExpression": "SET recharge_state = :sent ADD recharge_month_usd :amount",
            "ConditionExpression": (
                "recharge_state = :due AND recharge_month = :month AND recharge_month_usd <= :room"
            ),
            "ExpressionAttributeValues": {":room": num(cap - amount)},
        }
        new_month: dict[str, Any] = {
            "UpdateExpression": (
                "SET recharge_state = :sent, recharge_month = :month, recharge_month_usd = :amount"
            ),
            "ConditionExpression": (
                "recharge_state = :due"
                " AND (attribute_not_exists(recharge_month) OR recharge_month <> :month)"
            ),
            "ExpressionAttributeValues": {},
        }
        for update in (same_month, new_month):
            values = {
                ":sent": attribute("sent"),
                ":due": attribute("due"),
                ":month": attribute(month),
                ":amount": num(amount),
                **update.pop("ExpressionAttributeValues"),
            }
            if ":amount" not in update["UpdateExpression"]:
                values.pop(":amount")
            try:
                await self._db.call(
                    "UpdateItem",
                    {
                        "TableName": self.accounts_table,
                        "Key": org_key(org_id),
                        **update,
                        "ExpressionAttributeValues": values,
                    },
                    idempotent=False,
                )
                return True
            except DynamoError as error:
                if not error.condition_failed:
                    raise
        return False

    async def unreserve_recharge(self, org_id: str, month: str, amount: Decimal) -> None:
        try:
            await self._db.call(
                "UpdateItem",
                {
                    "TableName": self.accounts_table,
                    "Key": org_key(org_id),
                    "UpdateExpression": "ADD recharge_month_usd :back",
                    "ConditionExpression": "recharge_month = :month",
                    "ExpressionAttributeValues": {
                        ":back": num(-amount),
                        ":month": attribute(month),
                    },
                },
                idempotent=False,
            )
        except DynamoError as error:
            if not error.condition_failed:
                raise  # else: a new month began meanwhile, its total is its own

    # -- the auto-recharge settings -------------------------------------------------------

    async def auto_recharge(self, org_id: str) -> AutoRecharge | None:
        org = await self.alert_org(org_id)
        return org.auto_recharge if org is not None else None

    async def saved_card(self, org_id: str) -> str | None:
        """The payment method a checkout saved for auto-recharge, if any."""
        answer = await self._db.call(
            "GetItem",
            {
                "TableName": self.accounts_table,
                "Key": org_key(org_id),
                "ConsistentRead": True,
                "ProjectionExpression": "recharge_card",
            },
        )
        card = plain(answer.get("Item") or {}).get("recharge_card")
        return str(card) if card else None

    async def set_auto_recharge(self, org_id: str, settings: AutoRecharge) -> None:
        """Replaces the settings (the saved card is the webhook's to set); re-arms the
        recharge so new settings are acted on from the next request."""
        fields = {
            "enabled": settings.enabled,
            "threshold_usd": settings.threshold_usd,
            "amount_usd": settings.amount_usd,
            "monthly_cap_usd": settings.monthly_cap_usd,
            "consent_at": settings.consent_at,
            "consent_by": settings.consent_by,
        }
        names = {f"#f{i}": name for i, name in enumerate(fields)}
        values: dict[str, Any] = {
            f":v{i}": attribute(v) if v is not None else {"NULL": True}
            for i, v in enumerate(fields.values())
        }
        sets = ", ".join(f"auto_recharge.#f{i} = :v{i}" for i in range(len(fields)))
        await self._ensure_recharge_map(org_id)
        await self._db.call(
            "UpdateItem",
            {
                "TableName": self.accounts_table,
                "Key": org_key(org_id),
                "UpdateExpression": f"SET {sets}, recharge_state = :armed",
                "ConditionExpression": "attribute_exists(pk)",
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values | {":armed": attribute("armed")},
            },
        )

    async def save_recharge_card(self, org_id: str, payment_method: str) -> None:
        """Another card for off-session recharges (the webhook sets it with a top-up's
        movement; this is the operator's and the tests' way)."""
        await self._db.call(
            "UpdateItem",
            {
                "TableName": self.accounts_table,
                "Key": org_key(org_id),
                "UpdateExpression": "SET recharge_card = :pm",
                "ConditionExpression": "attribute_exists(pk)",
                "ExpressionAttributeValues": {":pm": attribute(payment_method)},
            },
        )

    async def _ensure_recharge_map(self, org_id: str) -> None:
        """A map must exist before its fields are set one by one."""
        try:
            await self._db.call(
                "UpdateItem",
                {
                    "TableName": self.accounts_table,
                    "Key": org_key(org_id),
                    "UpdateExpression": "SET auto_recharge = :empty",
                    "ConditionExpression": "attribute_exists(pk) AND attribute_not_exists("
                    "auto_recharge)",
                    "ExpressionAttributeValues": {":empty": {"M": {}}},
                },
            )
        except DynamoError as error:
            if not error.condition_failed:
                raise


def auto_recharge_of(item: dict[str, Any]) -> AutoRecharge | None:
    settings = item.get("auto_recharge") or {}
    if "amount_usd" not in settings:
        return None  # never configured (maybe only a card saved)
    return AutoRecharge(
        enabled=bool(settings.get("enabled")),
        threshold_usd=settings["threshold_usd"],
        amount_usd=settings["amount_usd"],
        monthly_cap_usd=settings["monthly_cap_usd"],
        payment_method=item.get("recharge_card"),
        consent_at=settings.get("consent_at"),
        consent_by=settings.get("consent_by"),
    )


class OrgManagers:
    """domain/alerts.py's Managers: members of an org by role, from the console's items."""

    def __init__(self, console_store: ConsoleStore) -> None:
        self._store = console_store

    async def managers(self, org_id: str, roles: frozenset[str]) -> list[Recipient]:
        recipients = []
        for member in await self._store.org_members(org_id):
            if member.role not in roles:
                continue
            user = await self._store.get_user(member.user_id)
            if user is not None and user.verified:
                recipients.append(Recipient(user.email, language_of(user.language)))
        return recipients
