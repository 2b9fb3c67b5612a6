"""The ledger of money movements (domain/billing.py `LedgerStore`) in the accounts table:

  ORG#<org_id>      / LEDGER#<at>#<movement_id>  movement_id, kind, amount_usd (signed),
                                                 currency, at, the Stripe ids, card_brand,
                                                 card_last4, reason (grants), date (usage)
  MOVEMENT#<id>     / MOVEMENT                   org_id, at: the guard that makes a
                                                 movement count once
  CHARGE#<charge>   / CHARGE                     org_id, amount_cents, refunded_cents,
                                                 card_brand, card_last4, payment_intent
  ORG#<org_id>      / META                       balance_usd, stripe_customer_id

`apply` is one TransactWriteItems: the guard (attribute_not_exists), the entry, the balance
(ADD, conditional on the organization existing; a `usage_daily` entry only checks that the
organization exists: its spending already left the balance) and, for card payments, the
charge item.
A transaction cancelled by the guard means the movement was already applied. History pages
are newest first, with the audit log's opaque cursors (audit_store.py), confined to the
asking organization's partition.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import fields, replace
from decimal import Decimal
from typing import Any

from dynoyard.adapters.dynamo.alert_marks import rearm_update
from dynoyard.adapters.dynamo.audit_store import cursor_sort_key, encode_cursor
from dynoyard.adapters.dynamo.client import CANCELLED, DynamoClient, DynamoError
from dynoyard.adapters.dynamo.codec import num, org_key, plain, typed
from dynoyard.domain.accounts import UnknownOrg
from dynoyard.domain.alerts import ALERT_KINDS
from dynoyard.domain.billing import (
    Charge,
    Entry,
    EventFailure,
    InvalidLedgerQuery,
    Movement,
    RefundRaced,
    RefundStep,
    UnknownOrgForMovement,
    cents_to_usd,
    check_history_limit,
)

_MOVEMENT_ID = r"[A-Za-z0-9_:.\-]{1,200}"
_SORT_KEY = re.compile(rf"LEDGER#(\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}\+00:00)#{_MOVEMENT_ID}")
_MAX_CURSOR = 400
_ENTRY_FIELDS = [f.name for f in fields(Entry)]
# The order of apply's transaction, which its cancellation reasons follow.
_GUARD, _ENTRY, _BALANCE, _CHARGE = range(4)


def ledger_sort_key(at: str, movement_id: str) -> str:
    return f"LEDGER#{at}#{movement_id}"


class BillingStore:
    def __init__(self, client: DynamoClient, accounts_table: str) -> None:
        self._db = client
        self.table = accounts_table

    async def apply(self, movement: Movement) -> bool:
        if not re.fullmatch(_MOVEMENT_ID, movement.movement_id):
            raise ValueError("a movement id of unexpected characters")
        guard = {
            "pk": f"MOVEMENT#{movement.movement_id}",
            "sk": "MOVEMENT",
            "org_id": movement.org_id,
            "at": movement.at,
        }
        entry = {
            "pk": f"ORG#{movement.org_id}",
            "sk": ledger_sort_key(movement.at, movement.movement_id),
            **{name: getattr(movement, name) for name in _ENTRY_FIELDS if name != "org_id"},
        }
        items: list[dict[str, Any]] = [
            {"Put": self._new(guard)},
            {"Put": self._new(entry)},
            {
                "Update": {
                    "TableName": self.table,
                    "Key": org_key(movement.org_id),
                    "UpdateExpression": "ADD balance_usd :amount",
                    "ConditionExpression": "attribute_exists(pk)",
                    "ExpressionAttributeValues": {":amount": num(movement.amount_usd)},
                }
            },
        ]
        if movement.kind == "usage_daily":
            # A rolled-up day: the hot path already took its spending from the balance, so
            # the entry only records it (reconcile counts it instead of the day's records).
            items[_BALANCE] = {
                "ConditionCheck": {
                    "TableName": self.table,
                    "Key": org_key(movement.org_id),
                    "ConditionExpression": "attribute_exists(pk)",
                }
            }
        if movement.keep_card is not None:  # for auto-recharge (adapters/dynamo/alerts_store.py)
            balance = items[2]["Update"]
            balance["UpdateExpression"] += " SET recharge_card = :card"
            balance["ExpressionAttributeValues"][":card"] = {"S": movement.keep_card}
        if movement.charge is not None:
            items.append({"Update": self._charge_paid(movement.charge)})
        elif movement.refund is not None:
            items.append({"Update": self._charge_refunded(movement.refund, movement.org_id)})
        try:
            await self._db.call("TransactWriteItems", {"TransactItems": items})
        except DynamoError as error:
            if error.code != CANCELLED:
                raise
            failed = _failed_conditions(error.body)
            if _GUARD in failed:
                return False
            if _BALANCE in failed:
                raise UnknownOrgForMovement(movement.org_id) from None
            if _CHARGE in failed and movement.refund is not None:
                raise RefundRaced(movement.refund.charge_id) from None
            if _CHARGE in failed:
                raise EventFailure("charge_conflict", "the charge belongs to another org") from None
            raise
        if movement.amount_usd > 0:
            await self._rearm_alerts(movement.org_id)
        return True

    async def _rearm_alerts(self, org_id: str) -> None:
        """A credit that lifted the balance back above an alert's threshold re-arms it (the
        low-balance alert, auto-recharge): one conditional UpdateItem each, after the
        movement; one that does not apply changes nothing. A failure never fails the
        movement, which is done: the org's next request re-arms it (domain/gateway.py)."""
        for kind in ALERT_KINDS:
            with contextlib.suppress(DynamoError):
                await self._db.call(
                    "UpdateItem", rearm_update(self.table, org_id, kind), idempotent=False
                )

    def _new(self, item: dict[str, Any]) -> dict[str, Any]:
        return {
            "TableName": self.table,
            "Item": typed(item),
            "ConditionExpression": "attribute_not_exists(pk)",
        }

    def _charge_paid(self, charge: Charge) -> dict[str, Any]:
        """The charge of a top-up or recharge; a refund that arrived first already set
        `refunded_cents` (and the org), which stays."""
        values: dict[str, Any] = {
            ":org": {"S": charge.org_id},
            ":amount": num(charge.amount_cents),
            ":zero": num(0),
        }
        sets = ["org_id = :org", "amount_cents = :amount"]
        for name, value in (
            ("card_brand", charge.card_brand),
            ("card_last4", charge.card_last4),
            ("payment_intent", charge.payment_intent),
        ):
            if value is not None:
                sets.append(f"{name} = :{name}")
                values[f":{name}"] = {"S": value}
        sets.append("refunded_cents = if_not_exists(refunded_cents, :zero)")
        return {
            "TableName": self.table,
            "Key": _charge_key(charge.charge_id),
            "UpdateExpression": "SET " + ", ".join(sets),
            "ConditionExpression": "attribute_not_exists(org_id) OR org_id = :org",
            "ExpressionAttributeValues": values,
        }

    def _charge_refunded(self, step: RefundStep, org_id: str) -> dict[str, Any]:
        """Moves `refunded_cents` from the value read to the cumulative amount, only if it
        still is the value read (another refund event may have moved it since)."""
        values: dict[str, Any] = {":cumulative": num(step.cumulative_cents), ":org": {"S": org_id}}
        if step.read_cents is None:
            condition = "attribute_not_exists(refunded_cents)"
        else:
            condition = "refunded_cents = :read"
            values[":read"] = num(step.read_cents)
        return {
            "TableName": self.table,
            "Key": _charge_key(step.charge_id),
            "UpdateExpression": "SET refunded_cents = :cumulative,"
            " org_id = if_not_exists(org_id, :org)",
            "ConditionExpression": condition,
            "ExpressionAttributeValues": values,
        }

    async def charge(self, charge_id: str) -> Charge | None:
        answer = await self._db.call(
            "GetItem",
            {"TableName": self.table, "Key": _charge_key(charge_id), "ConsistentRead": True},
        )
        item = plain(answer.get("Item") or {})
        if "org_id" not in item:
            return None
        return Charge(
            charge_id=charge_id,
            org_id=str(item["org_id"]),
            amount_cents=int(item.get("amount_cents", 0)),
            refunded_cents=int(item.get("refunded_cents", 0)),
            card_brand=_text_or_none(item.get("card_brand")),
            card_last4=_text_or_none(item.get("card_last4")),
            payment_intent=_text_or_none(item.get("payment_intent")),
        )

    async def record_refund(
        self, charge_id: str, org_id: str, cumulative_cents: int, movement: Movement
    ) -> bool:
        """Applies a refund of the charge up to `cumulative_cents`: the movement, for the
        amount beyond what the charge item says was refunded (False: nothing beyond)."""
        known = await self.charge(charge_id)
        read = known.refunded_cents if known else None
        delta = cumulative_cents - (read or 0)
        if delta <= 0:
            return False
        step = RefundStep(charge_id, read, cumulative_cents)
        return await self.apply(
            replace(
                movement, org_id=org_id, amount_usd=-cents_to_usd(delta), refund=step, charge=None
            )
        )

    async def set_customer(self, org_id: str, customer_id: str) -> str:
        try:
            await self._db.call(
                "UpdateItem",
                {
                    "TableName": self.table,
                    "Key": org_key(org_id),
                    "UpdateExpression": "SET stripe_customer_id = :customer",
                    "ConditionExpression": "attribute_exists(pk)"
                    " AND attribute_not_exists(stripe_customer_id)",
                    "ExpressionAttributeValues": {":customer": {"S": customer_id}},
                },
            )
        except DynamoError as error:
            if not error.condition_failed:
                raise
            winner = await self.customer(org_id)
            if winner is None:
                raise UnknownOrg(org_id) from None
            return winner
        return customer_id

    async def customer(self, org_id: str) -> str | None:
        answer = await self._db.call(
            "GetItem",
            {
                "TableName": self.table,
                "Key": org_key(org_id),
                "ConsistentRead": True,
                "ProjectionExpression": "stripe_customer_id",
            },
        )
        return _text_or_none(plain(answer.get("Item") or {}).get("stripe_customer_id"))

    async def history(
        self, org_id: str, before: str | None, limit: int
    ) -> tuple[list[Entry], str | None]:
        check_history_limit(limit)
        query = self._ledger_query(org_id, newest_first=True)
        if before is not None:
            start = decode_ledger_cursor(before)
            query["ExclusiveStartKey"] = {"pk": {"S": f"ORG#{org_id}"}, "sk": {"S": start}}
        found: list[dict[str, Any]] = []
        while len(found) <= limit:  # one more than the page: is there a next one?
            query["Limit"] = limit + 1 - len(found)
            answer = await self._db.call("Query", query)
            found.extend(plain(item) for item in answer.get("Items", []))
            if "LastEvaluatedKey" not in answer:
                break
            query["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
        page = found[:limit]
        more = len(found) > limit
        cursor = encode_cursor(str(page[-1]["sk"])) if more else None
        return [_entry(org_id, item) for item in page], cursor

    async def entries(self, org_id: str) -> AsyncIterator[Entry]:
        """Every ledger entry of the organization, oldest first."""
        query = self._ledger_query(org_id, newest_first=False)
        while True:
            answer = await self._db.call("Query", query)
            for item in answer.get("Items", []):
                yield _entry(org_id, plain(item))
            if "LastEvaluatedKey" not in answer:
                return
            query["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

    def _ledger_query(self, org_id: str, newest_first: bool) -> dict[str, Any]:
        return {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :ledger)",
            "ExpressionAttributeValues": {
                ":pk": {"S": f"ORG#{org_id}"},
                ":ledger": {"S": "LEDGER#"},
            },
            "ScanIndexForward": not newest_first,
            "ConsistentRead": True,
        }


def decode_ledger_cursor(cursor: str) -> str:
    """The sort key a history cursor holds; anything else is InvalidLedgerQuery."""
    sort_key = cursor_sort_key(cursor, _MAX_CURSOR)
    if sort_key is None or _SORT_KEY.fullmatch(sort_key) is None:
        raise InvalidLedgerQuery("before is not a cursor this ledger handed out", "before")
    return sort_key


def _failed_conditions(body: dict[str, Any]) -> set[int]:
    reasons = body.get("CancellationReasons") or ()
    return {
        index
        for index, reason in enumerate(reasons)
        if isinstance(reason, dict) and reason.get("Code") == "ConditionalCheckFailed"
    }


def _charge_key(charge_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"CHARGE#{charge_id}"}, "sk": {"S": "CHARGE"}}


def _text_or_none(value: Any) -> str | None:
    return str(value) if value is not None else None


def _entry(org_id: str, item: dict[str, Any]) -> Entry:
    """An entry as stored; grants from before the billing work carry only kind, amount and
    reason (their id and time come from the sort key)."""
    _, at, movement_id = str(item["sk"]).split("#", 2)
    values: dict[str, Any] = {
        name: _text_or_none(item.get(name))
        for name in _ENTRY_FIELDS
        if name not in ("org_id", "amount_usd")
    }
    values["movement_id"] = values["movement_id"] or movement_id
    values["at"] = values["at"] or at
    values["kind"] = values["kind"] or "grant"
    values["currency"] = values["currency"] or "usd"
    return Entry(org_id=org_id, amount_usd=Decimal(item.get("amount_usd", 0)), **values)
