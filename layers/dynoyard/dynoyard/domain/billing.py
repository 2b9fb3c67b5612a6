"""Billing with Stripe: money movements, the ledger and payments ports, and what each
verified Stripe event does to the money (docs/billing.md).

Every credit added or taken is a `Movement` with an id derived from Stripe's own ids, so
whatever the number, order or concurrency of deliveries, the ledger applies it once
(`LedgerStore.apply` is conditional on the movement not existing yet):

  topup:<checkout_session>            checkout.session.completed (paid) and
                                      checkout.session.async_payment_succeeded
  refund:<charge>:<cumulative_cents>  charge.refunded: the delta since the last refund seen
  dispute_hold:<dispute>              charge.dispute.created, and .closed (ensures it)
  dispute_release:<dispute>           charge.dispute.closed, won
  recharge:<payment_intent>           payment_intent.succeeded with metadata.kind
                                      "auto_recharge"

Nothing here talks to AWS or HTTP: the event is a verified Stripe event as a dict, and the
ledger and Stripe are reached through the ports below.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

from dynoyard.domain.money import format_usd

# A top-up through Checkout: at least 5 USD (below that Stripe's fee is most of it), at
# most 10,000 USD (a larger purchase goes through an operator grant against an invoice).
MIN_TOPUP_USD = Decimal(5)
MAX_TOPUP_USD = Decimal(10_000)
CURRENCY = "usd"

MovementKind = Literal[
    "grant", "topup", "refund", "dispute_hold", "dispute_release", "auto_recharge", "usage_daily"
]
MOVEMENT_KINDS: frozenset[str] = frozenset(MovementKind.__args__)  # type: ignore[attr-defined]


def cents_to_usd(cents: int) -> Decimal:
    """Stripe's integer cents as exact USD."""
    if isinstance(cents, bool) or not isinstance(cents, int):
        raise TypeError("cents must be an int")
    return Decimal(cents) / 100


class InvalidTopup(ValueError):
    """A top-up amount outside [MIN_TOPUP_USD, MAX_TOPUP_USD] or not whole cents."""


def topup_cents(amount_usd: Decimal) -> int:
    """The amount a Checkout Session charges, in cents, for a top-up of `amount_usd`."""
    if not amount_usd.is_finite() or not MIN_TOPUP_USD <= amount_usd <= MAX_TOPUP_USD:
        raise InvalidTopup(f"amount_usd must be between {MIN_TOPUP_USD} and {MAX_TOPUP_USD}")
    cents = amount_usd * 100
    if cents != cents.to_integral_value():
        raise InvalidTopup("amount_usd must be whole cents")
    return int(cents)


# -- what the ledger holds -------------------------------------------------------------


@dataclass(frozen=True)
class Charge:
    """A card payment as the ledger keeps it (the CHARGE#<charge_id> item): enough to take
    refunds back from the right organization. Card brand and last four only."""

    charge_id: str
    org_id: str
    amount_cents: int
    refunded_cents: int = 0
    card_brand: str | None = None
    card_last4: str | None = None
    payment_intent: str | None = None


@dataclass(frozen=True)
class RefundStep:
    """A refund moves the charge's `refunded_cents` from the value read to the event's
    cumulative amount; the write is conditional on the value read (None: no charge item)."""

    charge_id: str
    read_cents: int | None
    cumulative_cents: int


@dataclass(frozen=True)
class Entry:
    """One ledger entry (ORG#<org>/LEDGER#<at>#<movement_id>). `amount_usd` is signed:
    positive adds credits, negative takes them."""

    movement_id: str
    org_id: str
    kind: str
    amount_usd: Decimal
    at: str  # ISO 8601 UTC, milliseconds
    currency: str = CURRENCY
    stripe_event_id: str | None = None
    stripe_checkout_session: str | None = None
    stripe_payment_intent: str | None = None
    stripe_charge: str | None = None
    stripe_refund: str | None = None
    stripe_dispute: str | None = None
    card_brand: str | None = None
    card_last4: str | None = None
    reason: str | None = None
    date: str | None = None  # usage_daily: the UTC day

    def show(self) -> dict[str, str]:
        """The entry as printed and served: money as a decimal string, absent ids left out."""
        shown = {"movement_id": self.movement_id, "kind": self.kind, "at": self.at}
        shown |= {"amount_usd": format_usd(self.amount_usd), "currency": self.currency}
        for name in _ENTRY_DETAILS:
            detail = getattr(self, name)
            if detail is not None:
                shown[name] = detail
        return shown


_ENTRY_DETAILS = (
    "stripe_event_id",
    "stripe_checkout_session",
    "stripe_payment_intent",
    "stripe_charge",
    "stripe_refund",
    "stripe_dispute",
    "card_brand",
    "card_last4",
    "reason",
    "date",
)


@dataclass(frozen=True)
class Movement(Entry):
    """A movement to apply: its entry, and for card payments the charge item to write
    (`charge`, top-ups and recharges) or move (`refund`)."""

    charge: Charge | None = None
    refund: RefundStep | None = None
    # A top-up made with save_card: the payment method auto-recharge may charge, set on the
    # org (`recharge_card`) in the movement's transaction; never in the ledger entry.
    keep_card: str | None = None

    def entry(self) -> Entry:
        fields = {k: v for k, v in vars(self).items() if k not in ("charge", "refund", "keep_card")}
        return Entry(**fields)


# The ledger's history, a page at a time (the console and `dynoyard billing history`).
DEFAULT_HISTORY_PAGE = 50
MAX_HISTORY_PAGE = 200


class InvalidLedgerQuery(ValueError):
    """A history query the ledger refuses: a limit out of range or a cursor it did not hand
    out. `param` names the field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def check_history_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise InvalidLedgerQuery("limit must be an integer", "limit")
    if not 1 <= limit <= MAX_HISTORY_PAGE:
        raise InvalidLedgerQuery(f"limit must be between 1 and {MAX_HISTORY_PAGE}", "limit")


class UnknownOrgForMovement(Exception):
    """The movement names an organization that does not exist: nothing was applied."""


class RefundRaced(Exception):
    """The charge's refunded amount changed between the read and the write (another
    refund event landed): nothing was applied; read again and retry."""


class LedgerStore(Protocol):
    async def apply(self, movement: Movement) -> bool:
        """True: applied now; False: it already was (its guard exists). Raises
        UnknownOrgForMovement, RefundRaced."""
        ...

    async def history(
        self, org_id: str, before: str | None, limit: int
    ) -> tuple[list[Entry], str | None]: ...

    def entries(self, org_id: str) -> AsyncIterator[Entry]: ...

    async def charge(self, charge_id: str) -> Charge | None: ...

    async def record_refund(
        self, charge_id: str, org_id: str, cumulative_cents: int, movement: Movement
    ) -> bool: ...

    async def set_customer(self, org_id: str, customer_id: str) -> str:
        """Sets the organization's Stripe customer once; returns the one that won."""
        ...

    async def customer(self, org_id: str) -> str | None:
        """The organization's Stripe customer, if it has one."""
        ...


# -- what Stripe is asked --------------------------------------------------------------


@dataclass(frozen=True)
class CardOnCharge:
    charge_id: str
    payment_intent: str | None
    org_id: str | None
    amount_cents: int
    currency: str
    brand: str | None
    last4: str | None
    payment_method: str | None


class PaymentsApi(Protocol):
    async def create_customer(self, org_id: str, email: str | None) -> str: ...

    async def create_checkout(
        self,
        customer_id: str,
        org_id: str,
        amount_cents: int,
        success_url: str,
        cancel_url: str,
        save_card: bool,
    ) -> tuple[str, str]: ...

    async def charge(self, charge_id: str) -> CardOnCharge: ...

    async def charge_of_payment_intent(self, payment_intent_id: str) -> CardOnCharge: ...

    async def recharge(
        self,
        customer_id: str,
        payment_method: str,
        amount_cents: int,
        org_id: str,
        idempotency_key: str,
    ) -> str: ...


# -- events ----------------------------------------------------------------------------


class EventFailure(Exception):
    """A verified event the ledger cannot apply (yet): answered 500 so Stripe retries, and
    recorded for retry. `code` says why; never a credit."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def malformed(message: str) -> EventFailure:
    return EventFailure("malformed_event", message)


@dataclass(frozen=True)
class Outcome:
    """What an event did: the movements applied now, those already applied, and a note
    for the log (no-op events say why)."""

    event_id: str
    event_type: str
    applied: tuple[str, ...] = ()
    already: tuple[str, ...] = ()
    note: str = ""


def _text(obj: Mapping[str, Any], name: str) -> str:
    raw = obj.get(name)
    if not isinstance(raw, str) or not raw or len(raw) > 255:
        raise malformed(f"{name} must be a non-empty string")
    return raw


def _cents(obj: Mapping[str, Any], name: str) -> int:
    raw = obj.get(name)
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw < 10**12:
        raise malformed(f"{name} must be a non-negative integer")
    return raw


def _id_of(raw: Any) -> str | None:
    """An id given as a string or as the expanded object."""
    if isinstance(raw, Mapping):
        raw = raw.get("id")
    return raw if isinstance(raw, str) and raw else None


def _usd(obj: Mapping[str, Any]) -> None:
    currency = obj.get("currency")
    if currency != CURRENCY:
        raise EventFailure("unsupported_currency", f"currency {currency!r} is not usd")


def _org_named(obj: Mapping[str, Any]) -> str | None:
    """The organization the object names: client_reference_id, else metadata.org_id."""
    named = obj.get("client_reference_id")
    metadata = obj.get("metadata")
    if not named and isinstance(metadata, Mapping):
        named = metadata.get("org_id")
    if named is None or named == "":
        return None
    if not isinstance(named, str) or len(named) > 64:
        raise EventFailure("unknown_org", "the organization named is not an id")
    return named


def card_of_charge(charge: Mapping[str, Any]) -> CardOnCharge:
    """The brand and last four (nothing else) of an expanded Stripe charge object."""
    charge_id = _text(charge, "id")
    details = charge.get("payment_method_details")
    card = details.get("card") if isinstance(details, Mapping) else None
    card = card if isinstance(card, Mapping) else {}
    brand, last4 = card.get("brand"), card.get("last4")
    metadata = charge.get("metadata")
    org = metadata.get("org_id") if isinstance(metadata, Mapping) else None
    return CardOnCharge(
        charge_id=charge_id,
        payment_intent=_id_of(charge.get("payment_intent")),
        org_id=org if isinstance(org, str) and org else None,
        amount_cents=_cents(charge, "amount"),
        currency=str(charge.get("currency")),
        brand=brand[:32] if isinstance(brand, str) and brand else None,
        last4=last4 if isinstance(last4, str) and len(last4) == 4 and last4.isdigit() else None,
        payment_method=_id_of(charge.get("payment_method")),
    )


def embedded_charge(payment_intent: Any) -> CardOnCharge | None:
    """The card of a payment intent's latest charge, when the event carries it expanded."""
    if not isinstance(payment_intent, Mapping):
        return None
    latest = payment_intent.get("latest_charge")
    return card_of_charge(latest) if isinstance(latest, Mapping) else None


def topup_movement(
    event_id: str, session: Mapping[str, Any], card: CardOnCharge, at: str
) -> Movement:
    """A paid Checkout Session: its amount as credits, and the charge item with the card."""
    session_id = _text(session, "id")
    org = _org_named(session)
    if org is None:
        raise EventFailure("unknown_org", "the session names no organization")
    _usd(session)
    cents = _cents(session, "amount_total")
    metadata = session.get("metadata")
    save_card = isinstance(metadata, Mapping) and metadata.get("save_card") == "true"
    return _card_credit(
        f"topup:{session_id}",
        "topup",
        org,
        cents,
        card,
        event_id,
        at,
        payment_intent=card.payment_intent,
        stripe_checkout_session=session_id,
        keep_card=card.payment_method if save_card else None,
    )


def recharge_movement(
    event_id: str, intent: Mapping[str, Any], card: CardOnCharge, at: str
) -> Movement:
    """An auto-recharge payment intent that succeeded: its amount received as credits."""
    intent_id = _text(intent, "id")
    org = _org_named(intent)
    if org is None:
        raise EventFailure("unknown_org", "the payment intent names no organization")
    _usd(intent)
    cents = _cents(intent, "amount_received")
    return _card_credit(
        f"recharge:{intent_id}", "auto_recharge", org, cents, card, event_id, at, intent_id
    )


def _card_credit(
    movement_id: str,
    kind: str,
    org: str,
    cents: int,
    card: CardOnCharge,
    event_id: str,
    at: str,
    payment_intent: str | None,
    **extra: Any,
) -> Movement:
    """Credits paid by card: the movement, and the charge item refunds and disputes will
    find (brand and last four only)."""
    return Movement(
        movement_id=movement_id,
        org_id=org,
        kind=kind,
        amount_usd=cents_to_usd(cents),
        at=at,
        stripe_event_id=event_id,
        stripe_payment_intent=payment_intent,
        stripe_charge=card.charge_id,
        card_brand=card.brand,
        card_last4=card.last4,
        charge=Charge(
            charge_id=card.charge_id,
            org_id=org,
            amount_cents=cents,
            card_brand=card.brand,
            card_last4=card.last4,
            payment_intent=payment_intent,
        ),
        **extra,
    )


def refund_movement(
    event_id: str, refunded: Mapping[str, Any], known: Charge | None, at: str
) -> Movement | None:
    """The refund since the last one seen: the charge's cumulative `amount_refunded` less
    what the charge item says was refunded. None when nothing is new (a replay, or an
    older cumulative arriving after a newer one)."""
    charge_id = _text(refunded, "id")
    _usd(refunded)
    cumulative = _cents(refunded, "amount_refunded")
    read = known.refunded_cents if known is not None else None
    delta = cumulative - (read or 0)
    if delta <= 0:
        return None
    org = known.org_id if known is not None else _org_named(refunded)
    if org is None:
        raise EventFailure("unknown_org", "no charge item and no organization on the charge")
    card = card_of_charge(refunded)
    refunds = refunded.get("refunds")
    latest = refunds.get("data") if isinstance(refunds, Mapping) else None
    refund_id = _id_of(latest[0]) if isinstance(latest, list) and latest else None
    return Movement(
        movement_id=f"refund:{charge_id}:{cumulative}",
        org_id=org,
        kind="refund",
        amount_usd=-cents_to_usd(delta),
        at=at,
        stripe_event_id=event_id,
        stripe_payment_intent=card.payment_intent,
        stripe_charge=charge_id,
        stripe_refund=refund_id,
        card_brand=card.brand or (known.card_brand if known else None),
        card_last4=card.last4 or (known.card_last4 if known else None),
        refund=RefundStep(charge_id=charge_id, read_cents=read, cumulative_cents=cumulative),
    )


def dispute_movements(
    event_id: str, dispute: Mapping[str, Any], org_id: str, closed: bool, at: str
) -> list[Movement]:
    """The hold of a dispute's amount, and when the dispute is closed won (or was only an
    inquiry, `warning_closed`), its release; closed lost keeps the hold."""
    dispute_id = _text(dispute, "id")
    _usd(dispute)
    amount = cents_to_usd(_cents(dispute, "amount"))
    hold = Movement(
        movement_id=f"dispute_hold:{dispute_id}",
        org_id=org_id,
        kind="dispute_hold",
        amount_usd=-amount,
        at=at,
        stripe_event_id=event_id,
        stripe_charge=_id_of(dispute.get("charge")),
        stripe_payment_intent=_id_of(dispute.get("payment_intent")),
        stripe_dispute=dispute_id,
    )
    if not closed:
        return [hold]
    status = dispute.get("status")
    if status in ("won", "warning_closed"):
        release = replace(hold, movement_id=f"dispute_release:{dispute_id}", kind="dispute_release")
        return [hold, replace(release, amount_usd=amount)]
    if status == "lost":
        return [hold]
    raise malformed(f"a closed dispute's status is {status!r}")


# -- the use case: a verified event applied to the ledger --------------------------------


def iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


HANDLED_EVENTS = frozenset(
    {
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
        "charge.refunded",
        "charge.dispute.created",
        "charge.dispute.closed",
        "payment_intent.succeeded",
    }
)


class BillingEvents:
    """Applies verified Stripe events to the ledger. Lookups through Stripe happen only when
    the event does not carry the card (`payments` None: such an event fails, for retry)."""

    def __init__(
        self,
        ledger: LedgerStore,
        payments: PaymentsApi | None = None,
        clock: Callable[[], str] = iso_now,
    ) -> None:
        self.ledger = ledger
        self.payments = payments
        self._clock = clock

    async def handle(self, event: Mapping[str, Any]) -> Outcome:
        event_id = _text(event, "id")
        event_type = event.get("type")
        if not isinstance(event_type, str):
            raise malformed("type must be a string")
        data = event.get("data")
        obj = data.get("object") if isinstance(data, Mapping) else None
        if not isinstance(obj, Mapping):
            raise malformed("data.object must be an object")
        _text(obj, "id")
        done = Outcome(event_id, event_type)
        at = self._clock()
        if event_type in (
            "checkout.session.completed",
            "checkout.session.async_payment_succeeded",
        ):
            if obj.get("payment_status") != "paid":
                return replace(done, note=f"no-op: payment_status {obj.get('payment_status')}")
            _usd(obj)
            card = await self._card(obj.get("payment_intent"))
            return await self._apply(done, [topup_movement(event_id, obj, card, at)])
        if event_type == "checkout.session.async_payment_failed":
            return replace(done, note="no-op: the payment failed, nothing was credited")
        if event_type == "payment_intent.succeeded":
            metadata = obj.get("metadata")
            if not isinstance(metadata, Mapping) or metadata.get("kind") != "auto_recharge":
                return replace(done, note="no-op: not an auto-recharge")
            _usd(obj)
            card = await self._card(obj)
            return await self._apply(done, [recharge_movement(event_id, obj, card, at)])
        if event_type == "charge.refunded":
            return await self._refund(done, obj, at)
        if event_type in ("charge.dispute.created", "charge.dispute.closed"):
            _usd(obj)
            org = await self._org_of_charge(obj)
            closed = event_type == "charge.dispute.closed"
            return await self._apply(done, dispute_movements(event_id, obj, org, closed, at))
        return replace(done, note="no-op: an event type billing does not handle")

    async def _apply(self, done: Outcome, movements: list[Movement]) -> Outcome:
        applied: list[str] = []
        already: list[str] = []
        for movement in movements:  # in order: a release only after its hold
            try:
                now = await self.ledger.apply(movement)
            except UnknownOrgForMovement:
                raise EventFailure("unknown_org", "no such organization") from None
            (applied if now else already).append(movement.movement_id)
        return replace(done, applied=tuple(applied), already=tuple(already))

    async def _refund(self, done: Outcome, obj: Mapping[str, Any], at: str) -> Outcome:
        charge_id = _text(obj, "id")
        for _ in range(5):  # another refund of the charge may land between read and write
            known = await self.ledger.charge(charge_id)
            movement = refund_movement(done.event_id, obj, known, at)
            if movement is None:
                return replace(done, note="no-op: no refund beyond what was taken back")
            try:
                return await self._apply(done, [movement])
            except RefundRaced:
                continue
        raise EventFailure("refund_raced", "the charge's refunds kept changing")

    async def _org_of_charge(self, obj: Mapping[str, Any]) -> str:
        org = _org_named(obj)
        if org is not None:
            return org
        charge_id = _id_of(obj.get("charge"))
        known = await self.ledger.charge(charge_id) if charge_id else None
        if known is not None:
            return known.org_id
        if charge_id and self.payments is not None:
            card = await self.payments.charge(charge_id)
            if card.org_id:
                return card.org_id
        raise EventFailure("unknown_org", "the dispute's charge names no organization")

    async def _card(self, payment_intent: Any) -> CardOnCharge:
        """The charge of a payment intent: from the event when expanded, else from Stripe."""
        card = embedded_charge(payment_intent)
        if card is not None:
            return card
        intent_id = _id_of(payment_intent)
        if intent_id is None:
            raise malformed("no payment intent to find the charge of")
        if self.payments is None:
            raise EventFailure("charge_lookup", "no Stripe client to look the charge up")
        return await self.payments.charge_of_payment_intent(intent_id)


class FailedEvents(Protocol):
    """Where an event that failed is recorded for retry: its id, type and the error's
    class or code, never the payload."""

    async def record(self, event_id: str, event_type: str, error: str) -> None: ...
