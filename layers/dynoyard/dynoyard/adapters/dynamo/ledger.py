"""The hot path: the key item authentication reads, the hold and the settle.

The hot path makes at most three round trips: GetItem on the key (usually cached in
process), one conditional UpdateItem for the hold, one TransactWriteItems for the settle.
A key's "last used" hour rides on the settle: once an hour per key and warm instance, the
settle's transaction also SETs the key item's `last_used_hour`, never an extra round trip.

Holds in flight are on the org item too: the hold's write ADDs its amount to `held_usd`, and
the settle's transaction takes it off again (with the unused part returned to the balance),
so `balance_usd + held_usd` moves only by what requests cost and `dynoyard billing
reconcile` can balance the ledger while requests are in flight. The settle is conditioned on
its usage record not existing yet, so a settle sent twice releases the hold once.

A hold whose settle never comes (its answer lost, its process killed) must not stay in
`held_usd` forever. So the hold's write also SETs `hold_<request id>` = {amount, expires_at}
on the org item, and the settle REMOVEs it on condition that it is still there. The cleanup
job (dynoyard/maintenance/stranded_holds.py, `return_hold`) returns a hold past its expiry
with one conditional write that removes the same attribute: whichever of the two comes
first wins, so a hold is returned once. A settle arriving after the return charges the
request's cost only (`_charge_only`). Each hold in flight adds about 80 bytes to the org
item, whose limit is 400 KB: thousands of one org's requests may be in flight at once (and
each hold's answer, the whole item, carries the others' attributes too).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Literal

from dynoyard.adapters.dynamo.cache import cache_item
from dynoyard.adapters.dynamo.client import DynamoClient, DynamoError
from dynoyard.adapters.dynamo.codec import num, org_key, plain
from dynoyard.adapters.dynamo.usage import usage_item
from dynoyard.domain.accounts import DEFAULT_CACHE_TTL_SECONDS
from dynoyard.domain.keys import ApiKey
from dynoyard.domain.limits import (
    REFUNDED_KINDS,
    Counter,
    KeyLimits,
    LimitKind,
    counters_for,
    window_of,
)
from dynoyard.domain.ports import (
    CacheEntry,
    Hold,
    InsufficientBalance,
    KeyCharge,
    LimitState,
    OrgClosed,
    RateLimited,
    SpendCapReached,
    StoreUnavailable,
)
from dynoyard.domain.usage import UsageRecord

# Tries of the hold when requests race to open a new minute's window.
HOLD_WINDOW_ATTEMPTS = 3
MARKED_KEYS = 10_000  # keys an instance remembers having marked used this hour
HOLD_PREFIX = "hold_"  # + the request id: one top-level attribute per hold in flight
# Request ids are the gateway's `req_<24 hex>`; anything else is never made a name.
SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class HotPath:
    """Implements the KeyStore and Ledger ports."""

    _db: DynamoClient
    _clock: Callable[[], float]  # epoch seconds; tests pass a fake clock
    _marked_hours: dict[str, int]  # key item -> the hour this instance last marked it used
    accounts_table: str
    usage_table: str
    cache_table: str

    async def find_key(self, key_hash: str) -> ApiKey | None:
        answer = await self._db.call(
            "GetItem",
            {
                "TableName": self.accounts_table,
                "Key": {"pk": {"S": f"KEY#{key_hash}"}, "sk": {"S": "KEY"}},
            },
        )
        item = answer.get("Item")
        return _api_key(plain(item)) if item else None

    async def hold(
        self,
        org_id: str,
        amount: Decimal,
        key: ApiKey | None = None,
        tokens: int = 0,
        request_id: str | None = None,
        returnable_after: float = 0.0,
    ) -> Hold:
        """Takes the hold from the org's balance, counting the request against the org's
        and the key's limits. A key without limits costs one write; a key with limits one
        more, on its own item, first (see `_count_against_key`). With a request id, the
        write also records the hold, returnable once `returnable_after` seconds passed."""
        if amount <= 0:
            raise ValueError("a hold is always positive")
        if request_id is not None and not SAFE_REQUEST_ID.fullmatch(request_id):
            raise ValueError("a request id of letters, digits, '_' and '-' only")
        now = self._clock()
        record = _HoldRecord(request_id, amount, int(now + returnable_after) + 1)
        if key is None:
            return await self._hold_org(org_id, amount, now, record)
        counters = counters_for(key.limits, now, tokens, amount)
        mark = self._mark_due(key, now)
        # A rotated key counts against the counters of the first key it was rotated from.
        home = key.counters_hash or key.key_hash
        charge = KeyCharge(home, now, amount, tokens, frozenset(c.kind for c in counters), mark)
        if not counters:
            taken = await self._hold_org(org_id, amount, now, record)
            return replace(taken, key_charge=charge) if mark is not None else taken
        key_states = await self._count_against_key(home, counters, now)
        try:
            taken = await self._hold_org(org_id, amount, now, record)
        except BaseException:
            # The org refused (or the write failed): what the key's counters took goes back.
            await self._give_back(home, [(c, c.amount) for c in counters])
            raise
        return replace(taken, limits=_tightest(taken.limits + key_states), key_charge=charge)

    def _mark_due(self, key: ApiKey, now: float) -> str | None:
        """The key item to mark used this hour in the settle; None when its item (as read,
        maybe cached) says this hour already, or this instance marked it this hour."""
        hour = int(now // 3600)
        if key.last_used_hour is not None and key.last_used_hour >= hour:
            return None
        if self._marked_hours.get(key.key_hash) == hour:
            return None
        return key.key_hash

    async def _hold_org(
        self, org_id: str, amount: Decimal, now: float, record: _HoldRecord
    ) -> Hold:
        """One conditional write takes the hold and counts the request in the current
        minute's window, refused past the org's `rate_limit_rpm`: the rate limit costs no
        extra round trip, except for the first request of a new minute of a limited org,
        which opens the window with a second write. The window is two attributes,
        `rpm_minute` and `rpm_count`, so the item never grows with the org's age. The write
        answers with the org's item, so its settings (the cache) cost no read either."""
        minute = int(now // 60)
        for _ in range(HOLD_WINDOW_ATTEMPTS):
            taken, item = await self._hold_once(org_id, record, minute, in_window=True)
            if taken:
                return _hold_from(item, amount, now, record)
            if "closed_at" in item:
                raise OrgClosed(org_id)
            limit, balance = item.get("rate_limit_rpm"), item.get("balance_usd")
            if balance is None or balance < amount or limit is None:
                raise InsufficientBalance(org_id)
            if item.get("rpm_minute") == minute:
                reset = 60 - int(now % 60)
                raise RateLimited(reset, LimitState("requests", int(limit), 0, reset))
            # The window is an earlier minute's: open this minute's, unless another request
            # just did (then the first write is tried again).
            taken, item = await self._hold_once(org_id, record, minute, in_window=False)
            if taken:
                return _hold_from(item, amount, now, record)
        raise StoreUnavailable("the rate-limit window kept moving")

    async def _count_against_key(
        self, key_hash: str, counters: list[Counter], now: float
    ) -> tuple[LimitState, ...]:
        """One conditional write on the key's item takes each counter's amount from what is
        left of its limit in the current window. Each limit keeps two slots (by the window's
        parity) of two attributes, so the item keeps its size; a slot holding an earlier
        window is reset by a second write, once per window."""
        for counter in counters:
            if counter.amount > counter.limit:
                raise _refusal(counter, "This request alone is larger than the key's")
        stale: set[LimitKind] = set()
        for _ in range(HOLD_WINDOW_ATTEMPTS):
            taken, item = await self._key_write(key_hash, counters, stale)
            if taken:
                return tuple(_state(c, item) for c in counters if c.kind in ("rpm", "tpm"))
            if not item:
                raise StoreUnavailable("the key's item is gone")  # deleted since authenticated
            stale = set()
            for counter in counters:
                window_name, left_name = _slot(counter.kind, counter.window)
                if item.get(window_name) != counter.window:
                    stale.add(counter.kind)
                elif item.get(left_name, Decimal(0)) < counter.amount:
                    raise _refusal(counter, "The key has reached its")
        raise StoreUnavailable("the key's limit windows kept moving")

    async def _key_write(
        self, key_hash: str, counters: list[Counter], stale: set[LimitKind]
    ) -> tuple[bool, dict[str, Any]]:
        sets, conditions = [], ["attribute_exists(pk)"]
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        for i, counter in enumerate(counters):
            names[f"#w{i}"], names[f"#l{i}"] = _slot(counter.kind, counter.window)
            values[f":w{i}"] = num(counter.window)
            if counter.kind in stale:
                values[f":r{i}"] = num(counter.limit - counter.amount)
                sets.append(f"#w{i} = :w{i}, #l{i} = :r{i}")
                conditions.append(f"(attribute_not_exists(#w{i}) OR #w{i} < :w{i})")
            else:
                values[f":a{i}"] = num(counter.amount)
                sets.append(f"#l{i} = #l{i} - :a{i}")
                conditions.append(f"#w{i} = :w{i} AND #l{i} >= :a{i}")
        return await self._update_if(
            {
                "TableName": self.accounts_table,
                "Key": _key_item_key(key_hash),
                "UpdateExpression": "SET " + ", ".join(sets),
                "ConditionExpression": " AND ".join(conditions),
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        )

    async def _give_back(self, key_hash: str, amounts: list[tuple[Counter, Decimal]]) -> None:
        """Returns amounts to the counters' slots (an org that refused the hold)."""
        update = _give_back_update(self.accounts_table, key_hash, amounts)
        if update is not None:
            await self._db.call("UpdateItem", update, idempotent=False)

    async def count_failure(self, ip: str, now: float) -> int:
        """The IpGuard's counter: failed key attempts from `ip` this minute, on an item
        of its own (`IP#<ip>`, expiring after an hour). Only failures write."""
        minute = int(now // 60)
        for in_window in (True, False, True):  # the window, a new window, the window again
            if in_window:
                update = "ADD fails :one SET expires_at = :expires"
                condition = "fails_minute = :minute"
            else:
                update = "SET fails_minute = :minute, fails = :one, expires_at = :expires"
                condition = "attribute_not_exists(fails_minute) OR fails_minute < :minute"
            counted, item = await self._update_if(
                {
                    "TableName": self.accounts_table,
                    "Key": {"pk": {"S": f"IP#{ip}"}, "sk": {"S": "FAILS"}},
                    "UpdateExpression": update,
                    "ConditionExpression": condition,
                    "ExpressionAttributeValues": {
                        ":one": num(1),
                        ":minute": num(minute),
                        ":expires": num(int(now) + 3600),
                    },
                }
            )
            if counted:
                return int(item.get("fails", 1))
        raise StoreUnavailable("the failure window kept moving")

    async def _hold_once(
        self, org_id: str, record: _HoldRecord, minute: int, in_window: bool
    ) -> tuple[bool, dict[str, Any]]:
        """(True, the item after the write) if the hold was taken; else (False, the item as
        it was), to tell why not. The amount moves from `balance_usd` to `held_usd`; a closed
        organization (account deletion's `closed_at`) takes none. A hold with a request id
        is recorded in the same write (`hold_<request id>`)."""
        if in_window:
            update = "SET balance_usd = balance_usd - :amount ADD rpm_count :one, held_usd :amount"
            condition = (
                "attribute_not_exists(closed_at) AND balance_usd >= :amount"
                " AND (attribute_not_exists(rate_limit_rpm)"
                " OR (rpm_minute = :minute AND rpm_count < rate_limit_rpm))"
            )
        else:
            update = (
                "SET balance_usd = balance_usd - :amount, rpm_minute = :minute, rpm_count = :one"
                " ADD held_usd :amount"
            )
            condition = (
                "attribute_not_exists(closed_at) AND balance_usd >= :amount"
                " AND (attribute_not_exists(rpm_minute) OR rpm_minute < :minute)"
            )
        params: dict[str, Any] = {
            "TableName": self.accounts_table,
            "Key": org_key(org_id),
            "UpdateExpression": update,
            "ConditionExpression": condition,
            "ExpressionAttributeValues": {
                ":amount": num(record.amount),
                ":one": num(1),
                ":minute": num(minute),
            },
        }
        if record.request_id is not None:
            params["UpdateExpression"] = update.replace("SET ", "SET #hold = :hold, ", 1)
            params["ExpressionAttributeNames"] = {"#hold": HOLD_PREFIX + record.request_id}
            params["ExpressionAttributeValues"][":hold"] = {
                "M": {"amount": num(record.amount), "expires_at": num(record.expires_at)}
            }
        return await self._update_if(params)

    async def _update_if(self, params: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        """A conditional UpdateItem that is never sent twice (a lost answer must not take
        or count anything twice): (True, the item after it) or (False, the item as it was,
        to tell why not)."""
        try:
            answer = await self._db.call(
                "UpdateItem",
                {
                    **params,
                    "ReturnValues": "ALL_NEW",
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                },
                idempotent=False,
            )
        except DynamoError as error:
            if not error.condition_failed:
                raise
            return False, plain(error.body.get("Item") or {})
        return True, plain(answer.get("Attributes") or {})

    async def settle(
        self,
        record: UsageRecord,
        held: Decimal,
        key_charge: KeyCharge | None = None,
        cache_entry: CacheEntry | None = None,
        recorded: bool = False,
    ) -> None:
        put = {
            "TableName": self.usage_table,
            "Item": usage_item(record),
            # The request id is in the sort key: a second settle of it changes nothing.
            "ConditionExpression": "attribute_not_exists(pk)",
        }
        keys: list[dict[str, Any]] = []
        if key_charge is not None:
            keys = [{"Update": u} for u in _key_updates(self.accounts_table, key_charge, record)]
        org_update = _release(self.accounts_table, record, held, recorded)
        others = [{"Update": org_update}] if org_update is not None else []
        if cache_entry is not None:
            others.append({"Put": {"TableName": self.cache_table, "Item": cache_item(cache_entry)}})
        try:
            await self._write_settle(put, others + keys)
        except DynamoError as error:
            if not error.condition_failed:
                raise
            # The record exists: already settled by an earlier attempt whose answer was
            # lost. Else the recorded hold is gone: returned as stranded, the cost is due.
            if recorded and not _first_refused(error):
                await self._charge_only(put, record, keys)
        if key_charge is not None and key_charge.mark_used is not None:
            if len(self._marked_hours) >= MARKED_KEYS:
                self._marked_hours.clear()
            self._marked_hours[key_charge.mark_used] = int(key_charge.taken_at // 3600)

    async def _write_settle(self, put: dict[str, Any], others: list[dict[str, Any]]) -> None:
        """The usage record alone, or in one transaction with the other writes (first)."""
        if not others:
            await self._db.call("PutItem", put)
        else:
            items = [{"Put": put}, *others]
            await self._db.call("TransactWriteItems", {"TransactItems": items})

    async def _charge_only(
        self, put: dict[str, Any], record: UsageRecord, keys: list[dict[str, Any]]
    ) -> None:
        """A late settle of a hold already returned to the balance: the record and the
        request's whole cost, still only if the record is not there yet (a replay of the
        late settle changes nothing); the key's counters get back what they held unused."""
        charge: list[dict[str, Any]] = []
        if record.cost_usd:
            charge = [
                {
                    "Update": {
                        "TableName": self.accounts_table,
                        "Key": org_key(record.org_id),
                        "UpdateExpression": "ADD balance_usd :cost",
                        "ExpressionAttributeValues": {":cost": num(-record.cost_usd)},
                    }
                }
            ]
        try:
            await self._write_settle(put, charge + keys)
        except DynamoError as error:
            if not error.condition_failed:
                raise

    async def stranded_holds(self, org_id: str, now: float) -> list[StrandedHold]:
        """The org's recorded holds whose expiry has passed (a strongly consistent read)."""
        answer = await self._db.call(
            "GetItem",
            {"TableName": self.accounts_table, "Key": org_key(org_id), "ConsistentRead": True},
        )
        found: list[StrandedHold] = []
        for name, value in plain(answer.get("Item") or {}).items():
            if not name.startswith(HOLD_PREFIX) or not isinstance(value, dict):
                continue
            hold = StrandedHold(
                org_id,
                name.removeprefix(HOLD_PREFIX),
                Decimal(value["amount"]),
                int(value["expires_at"]),
            )
            if hold.expires_at <= now:
                found.append(hold)
        return found

    async def return_hold(self, hold: StrandedHold) -> bool:
        """Gives a stranded hold back to the balance: True for the one write that did it,
        False when its settle (or another run) removed it first."""
        returned, _ = await self._update_if(
            {
                "TableName": self.accounts_table,
                "Key": org_key(hold.org_id),
                "UpdateExpression": "REMOVE #hold ADD balance_usd :amount, held_usd :minus",
                "ConditionExpression": "#hold.amount = :amount",
                "ExpressionAttributeNames": {"#hold": HOLD_PREFIX + hold.request_id},
                "ExpressionAttributeValues": {
                    ":amount": num(hold.amount),
                    ":minus": num(-hold.amount),
                },
            }
        )
        return returned


@dataclass(frozen=True, slots=True)
class _HoldRecord:
    """What the hold's write records (nothing without a request id)."""

    request_id: str | None
    amount: Decimal
    expires_at: int  # epoch seconds


@dataclass(frozen=True, slots=True)
class StrandedHold:
    """A recorded hold past its expiry, with no settle yet."""

    org_id: str
    request_id: str
    amount: Decimal
    expires_at: int  # epoch seconds


def _first_refused(error: DynamoError) -> bool:
    """The settle's first write (the usage record's Put) failed its condition."""
    reasons = error.body.get("CancellationReasons") or [{"Code": error.code}]
    return bool(reasons) and (reasons[0] or {}).get("Code") in (
        "ConditionalCheckFailed",
        "ConditionalCheckFailedException",
    )


def _release(
    table: str, record: UsageRecord, held: Decimal, recorded: bool
) -> dict[str, Any] | None:
    """The settle's write on the org item: the hold leaves `held_usd`, and what the request
    did not use goes back to the balance (negative when the upstream charged past the
    hold). None when there was no hold and nothing was charged (a request refused early).
    A recorded hold is removed too, only if it is still there (not returned as stranded)."""
    moves = {"balance_usd": held - record.cost_usd, "held_usd": -held}
    moves = {name: amount for name, amount in moves.items() if amount}
    if not moves:
        return None
    update: dict[str, Any] = {
        "TableName": table,
        "Key": org_key(record.org_id),
        "UpdateExpression": "ADD " + ", ".join(f"{name} :{name}" for name in moves),
        "ExpressionAttributeValues": {f":{name}": num(amount) for name, amount in moves.items()},
    }
    if recorded:
        update["UpdateExpression"] += " REMOVE #hold"
        update["ConditionExpression"] = "attribute_exists(#hold)"
        update["ExpressionAttributeNames"] = {"#hold": HOLD_PREFIX + record.request_id}
    return update


def _api_key(item: dict[str, Any]) -> ApiKey | None:
    if "key_id" not in item:
        return None  # only a late settle's counters are left of this key
    expires = item.get("key_expires_at")
    if item.get("revoke_at") is not None:
        # A rotated key's grace period: it stops working then, as at an expiry.
        ends = int(item["revoke_at"])
        expires = min(int(expires), ends) if expires is not None else ends
    return ApiKey(
        key_id=str(item["key_id"]),
        org_id=str(item["org_id"]),
        name=str(item.get("name", "")),
        hint=str(item.get("hint", "")),
        models=frozenset(item.get("models") or ()),
        expires_at=int(expires) if expires is not None else None,
        revoked=bool(item.get("revoked", False)),
        key_hash=str(item["pk"]).removeprefix("KEY#"),
        limits=KeyLimits(
            rpm=_whole(item.get("limit_rpm")),
            tpm=_whole(item.get("limit_tpm")),
            daily_usd=item.get("limit_daily_usd"),
            monthly_usd=item.get("limit_monthly_usd"),
        ),
        counters_hash=str(item.get("counters_hash") or ""),
        last_used_hour=_whole(item.get("last_used_hour")),
    )


def _whole(value: Decimal | None) -> int | None:
    return int(value) if value is not None else None


def _hold_from(org: dict[str, Any], amount: Decimal, now: float, record: _HoldRecord) -> Hold:
    """The hold, with the org's settings as its item said after the write."""
    limits: tuple[LimitState, ...] = ()
    limit = org.get("rate_limit_rpm")
    if limit is not None:
        used = int(org.get("rpm_count", 0))
        limits = (
            LimitState("requests", int(limit), max(int(limit) - used, 0), 60 - int(now % 60)),
        )
    cache_on = bool(org.get("cache_enabled", False))
    ttl = int(org.get("cache_ttl_seconds", DEFAULT_CACHE_TTL_SECONDS))
    recharge = org.get("auto_recharge") or {}
    recharge_on = bool(recharge.get("enabled")) and bool(org.get("recharge_card"))
    return Hold(
        amount=amount,
        cache_ttl_seconds=ttl if cache_on else None,
        limits=limits,
        balance_after=org.get("balance_usd"),
        low_balance_usd=org.get("low_balance_usd"),
        low_balance_state=org.get("low_balance_state"),
        recharge_usd=recharge.get("threshold_usd") if recharge_on else None,
        recharge_state=org.get("recharge_state"),
        recorded=record.request_id is not None,
    )


def _key_item_key(key_hash: str) -> dict[str, Any]:
    return {"pk": {"S": f"KEY#{key_hash}"}, "sk": {"S": "KEY"}}


def _slot(kind: LimitKind, window: int) -> tuple[str, str]:
    """The attributes of one limit's slot: which window it counts, and what is left."""
    parity = window % 2
    return f"lim_{kind}_w{parity}", f"lim_{kind}_left{parity}"


def _state(counter: Counter, item: dict[str, Any]) -> LimitState:
    left = item.get(_slot(counter.kind, counter.window)[1], Decimal(0))
    kind: Literal["requests", "tokens"] = "requests" if counter.kind == "rpm" else "tokens"
    return LimitState(kind, int(counter.limit), max(int(left), 0), counter.reset_seconds)


def _tightest(states: tuple[LimitState, ...]) -> tuple[LimitState, ...]:
    """One state per kind, the one with the least left (OpenAI's headers have one each)."""
    tightest: dict[str, LimitState] = {}
    for state in states:
        known = tightest.get(state.kind)
        if known is None or state.remaining < known.remaining:
            tightest[state.kind] = state
    return tuple(tightest.values())


def _refusal(counter: Counter, why: str) -> Exception:
    if counter.kind in ("daily_usd", "monthly_usd"):
        return SpendCapReached(counter.kind, counter.reset_seconds)
    kind: Literal["requests", "tokens"] = "requests" if counter.kind == "rpm" else "tokens"
    state = LimitState(kind, int(counter.limit), 0, counter.reset_seconds)
    what = "requests per minute" if kind == "requests" else "tokens per minute"
    return RateLimited(counter.reset_seconds, state, f"{why} limit of {counter.limit} {what}.")


def _unused(charge: KeyCharge, record: UsageRecord) -> list[tuple[Counter, Decimal]]:
    """What the settle gives back to each refunded counter: held minus used (negative when
    the upstream charged past the hold, so the cap still counts every cent)."""
    back: list[tuple[Counter, Decimal]] = []
    for kind in charge.kinds & REFUNDED_KINDS:
        held = Decimal(charge.tokens) if kind == "tpm" else charge.amount
        used = Decimal(record.total_tokens) if kind == "tpm" else record.cost_usd
        window = window_of(kind, charge.taken_at)
        if held != used:
            back.append((Counter(kind, window, held, held, 0), held - used))
    return back


def _give_back_update(
    table: str, key_hash: str, amounts: list[tuple[Counter, Decimal]]
) -> dict[str, Any] | None:
    """ADDs each amount to its counter's slot. A slot reset for a later window meanwhile
    (a request longer than a window) gets the amount too: bounded by one request's hold."""
    if not amounts:
        return None
    names = {f"#l{i}": _slot(c.kind, c.window)[1] for i, (c, _) in enumerate(amounts)}
    values = {f":b{i}": num(back) for i, (_, back) in enumerate(amounts)}
    return {
        "TableName": table,
        "Key": _key_item_key(key_hash),
        "UpdateExpression": "ADD " + ", ".join(f"#l{i} :b{i}" for i in range(len(amounts))),
        # Unconditional: in the settle's transaction a failed condition would cancel the
        # usage record with it.
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }


def _key_updates(table: str, charge: KeyCharge, record: UsageRecord) -> list[dict[str, Any]]:
    """The settle's writes on key items: what goes back to the limits' counters, and the
    hour the key was used; one update where both are the same item (a transaction may
    write an item only once)."""
    give_back = _give_back_update(table, charge.key_hash, _unused(charge, record))
    if charge.mark_used is None:
        return [give_back] if give_back is not None else []
    hour = {":hour": num(int(charge.taken_at // 3600))}
    if give_back is not None and charge.mark_used == charge.key_hash:
        give_back["UpdateExpression"] += " SET last_used_hour = :hour"
        give_back["ExpressionAttributeValues"] |= hour
        return [give_back]
    mark = {
        "TableName": table,
        "Key": _key_item_key(charge.mark_used),
        "UpdateExpression": "SET last_used_hour = :hour",
        "ExpressionAttributeValues": hour,
    }
    return [give_back, mark] if give_back is not None else [mark]
