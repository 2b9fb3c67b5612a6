"""The low-balance alert and auto-recharge: when each is due, and the use cases that send
the due alerts and run the due recharges.

Each kind has a state on the organization's item (`low_balance_state`, `recharge_state`):
"armed" (or absent) -> "due" -> "sent" (or, for a recharge, "failed") -> "armed" again. The
gateway reads the state and the threshold in the answer of the hold it takes anyway; on the
request whose settle leaves the balance below a threshold while the state is armed, it
makes one conditional write (state "due" plus a marker item the senders find), so one
crossing is one alert however many requests race. A credit that lifts the balance back to
or above the threshold re-arms it (the credit's own path, or the next request's settle).
`send_due_alerts` and `run_due_recharges` (the CLI's `dynoyard billing alerts`, later the
scheduled cleanup) claim each due alert with a conditional "due" -> "sent" before acting,
so each is acted on once.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal, Protocol

from dynoyard.domain import messages
from dynoyard.domain.billing import MAX_TOPUP_USD, MIN_TOPUP_USD
from dynoyard.domain.email import Email, EmailSender, Language
from dynoyard.domain.money import format_usd

AlertKind = Literal["low_balance", "recharge"]
ALERT_KINDS: tuple[AlertKind, ...] = ("low_balance", "recharge")

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DueAlert:
    org_id: str
    mark_id: str  # which marking this marker is (a later one replaces it)


@dataclass(frozen=True, slots=True)
class AutoRecharge:
    """An organization's auto-recharge settings (`auto_recharge` on its item)."""

    enabled: bool
    threshold_usd: Decimal
    amount_usd: Decimal
    monthly_cap_usd: Decimal
    payment_method: str | None = None
    consent_at: str | None = None
    consent_by: str | None = None

    def show(self) -> dict[str, object]:
        return {
            "enabled": self.enabled,
            "threshold_usd": format_usd(self.threshold_usd),
            "amount_usd": format_usd(self.amount_usd),
            "monthly_cap_usd": format_usd(self.monthly_cap_usd),
            "consent_at": self.consent_at,
            "consent_by": self.consent_by,
        }


# Auto-recharge's amounts: plain decimal strings of whole cents. The amount is a top-up's
# (the checkout's bounds); the monthly cap at least one recharge, at most 100,000 USD.
MAX_RECHARGE_THRESHOLD_USD = Decimal(1_000_000)
MAX_MONTHLY_CAP_USD = Decimal(100_000)
_CENTS = re.compile(r"[0-9]{1,7}(\.[0-9]{1,2})?")


class InvalidAutoRecharge(ValueError):
    """An auto-recharge setting out of range; `param` names it."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def _cents_usd(text: object, param: str, low: Decimal, high: Decimal) -> Decimal:
    if not isinstance(text, str) or not _CENTS.fullmatch(text):
        raise InvalidAutoRecharge(
            f'{param} must be a plain decimal string of USD in whole cents, such as "20.00"',
            param,
        )
    amount = Decimal(text)
    if not low <= amount <= high:
        raise InvalidAutoRecharge(f"{param} must be {low} to {high:,} USD, not {text}", param)
    return amount


def auto_recharge_settings(
    enabled: bool,
    threshold_usd: object,
    amount_usd: object,
    monthly_cap_usd: object,
    saved: AutoRecharge | None,
    card: str | None,
    user_id: str,
    now: float,
) -> AutoRecharge:
    """New settings from the owner's request: amounts checked, and the consent (who, when)
    recorded when it is turned on; it needs a card saved by an earlier checkout."""
    threshold = _cents_usd(threshold_usd, "threshold_usd", Decimal(0), MAX_RECHARGE_THRESHOLD_USD)
    amount = _cents_usd(amount_usd, "amount_usd", MIN_TOPUP_USD, MAX_TOPUP_USD)
    cap = _cents_usd(monthly_cap_usd, "monthly_cap_usd", Decimal(0), MAX_MONTHLY_CAP_USD)
    if cap < amount:
        raise InvalidAutoRecharge(
            "monthly_cap_usd must be at least amount_usd (one recharge)", "monthly_cap_usd"
        )
    if enabled and card is None:
        raise NoSavedCard("auto-recharge needs a card saved by a checkout with save_card")
    consent_at = saved.consent_at if saved is not None else None
    consent_by = saved.consent_by if saved is not None else None
    if enabled:
        consent_at = datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")
        consent_by = user_id
    return AutoRecharge(enabled, threshold, amount, cap, card, consent_at, consent_by)


class NoSavedCard(Exception):
    """Auto-recharge turned on without a card to charge."""


@dataclass(frozen=True, slots=True)
class AlertOrg:
    """What the senders read of an organization."""

    org_id: str
    name: str
    balance_usd: Decimal
    low_balance_usd: Decimal | None
    auto_recharge: AutoRecharge | None
    customer_id: str | None
    recharge_month: str | None  # "YYYY-MM" of `recharge_month_usd`
    recharge_month_usd: Decimal


@dataclass(frozen=True, slots=True)
class Recipient:
    email: str
    language: Language


class AlertStore(Protocol):
    async def due_alerts(self, kind: AlertKind) -> list[DueAlert]: ...

    async def alert_org(self, org_id: str) -> AlertOrg | None: ...

    async def claim_alert(self, org_id: str, kind: AlertKind) -> bool:
        """ "due" -> "sent", conditionally: True for the one sender that claimed it."""

    async def release_alert(self, org_id: str, kind: AlertKind) -> None:
        """ "sent" -> "due": its sending failed, the next run tries again."""

    async def fail_alert(self, org_id: str, kind: AlertKind) -> None:
        """ "sent" -> "failed": nothing more until a credit re-arms it."""

    async def rearm_alert(self, org_id: str, kind: str, also_due: bool = False) -> bool: ...

    async def finish_alert(self, alert: DueAlert, kind: AlertKind) -> None:
        """Deletes the marker, unless a later marking replaced it."""

    async def reserve_recharge(
        self, org_id: str, month: str, amount: Decimal, cap: Decimal
    ) -> bool:
        """Claims the due recharge and adds `amount` to the month's recharges if they stay
        within `cap`, in one conditional write; False: the cap (or another sender)."""

    async def unreserve_recharge(self, org_id: str, month: str, amount: Decimal) -> None:
        """Takes a failed recharge's amount back off the month's total."""


class Managers(Protocol):
    async def managers(self, org_id: str, roles: frozenset[str]) -> list[Recipient]:
        """The org's members of these roles, with the address and language to write in."""


class Recharger(Protocol):
    """What auto-recharge needs of domain/billing.py's PaymentsApi."""

    async def recharge(
        self,
        customer_id: str,
        payment_method: str,
        amount_cents: int,
        org_id: str,
        idempotency_key: str,
    ) -> str: ...


class RechargeDeclined(Exception):
    """The card was declined (or needs the customer): not worth trying again."""


OWNERS_AND_ADMINS = frozenset({"owner", "admin"})
OWNERS = frozenset({"owner"})


@dataclass(frozen=True, slots=True)
class AlertReport:
    sent: int = 0  # alerts emailed (one per organization, to each of its recipients)
    recharged: int = 0  # recharges charged
    failed: int = 0  # recharges that failed (declined or capped), owners emailed
    retry: int = 0  # left due for the next run (an email or the payment API failed)

    def show(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "recharged": self.recharged,
            "failed": self.failed,
            "retry": self.retry,
        }


class Alerts:
    """The use cases; `payments` None: recharges are left due (no Stripe configured)."""

    def __init__(
        self,
        store: AlertStore,
        managers: Managers,
        email: EmailSender,
        public_url: str,
        payments: Recharger | None = None,
    ) -> None:
        self._store = store
        self._managers = managers
        self._email = email
        self._public_url = public_url.rstrip("/")
        self._payments = payments

    def billing_link(self, org_id: str) -> str:
        return f"{self._public_url}/console/orgs/{org_id}/billing"

    async def send_due_alerts(self, now: float) -> AlertReport:
        """Emails each due low-balance alert once to the org's owners and admins."""
        sent = retry = 0
        for alert in await self._store.due_alerts("low_balance"):
            org = await self._store.alert_org(alert.org_id)
            threshold = org.low_balance_usd if org is not None else None
            if org is None or threshold is None or org.balance_usd >= threshold:
                # Topped up (or the threshold removed) before the alert went out.
                await self._store.rearm_alert(alert.org_id, "low_balance", also_due=True)
                await self._store.finish_alert(alert, "low_balance")
                continue
            if not await self._store.claim_alert(alert.org_id, "low_balance"):
                continue  # another run claimed it (and removes the marker)
            letters = [
                messages.low_balance(
                    to.email,
                    org.name,
                    format_usd(org.balance_usd),
                    format_usd(threshold),
                    self.billing_link(org.org_id),
                    to.language,
                )
                for to in await self._managers.managers(org.org_id, OWNERS_AND_ADMINS)
            ]
            if await self._send_all(letters):
                await self._store.finish_alert(alert, "low_balance")
                sent += 1
            else:
                await self._store.release_alert(alert.org_id, "low_balance")
                retry += 1
        return AlertReport(sent=sent, retry=retry)

    async def run_due_recharges(self, now: float) -> AlertReport:
        """Charges each due auto-recharge once, off-session, within the monthly cap; the
        credit arrives by the webhook. A decline or the cap: the owners are emailed."""
        recharged = failed = retry = 0
        month = datetime.fromtimestamp(now, UTC).strftime("%Y-%m")
        for alert in await self._store.due_alerts("recharge"):
            org = await self._store.alert_org(alert.org_id)
            settings = org.auto_recharge if org is not None else None
            if (
                org is None
                or settings is None
                or not settings.enabled
                or settings.payment_method is None
                or org.customer_id is None
                or org.balance_usd >= settings.threshold_usd
            ):
                await self._store.rearm_alert(alert.org_id, "recharge", also_due=True)
                await self._store.finish_alert(alert, "recharge")
                continue
            if self._payments is None:
                retry += 1
                continue
            amount = settings.amount_usd
            if not await self._store.reserve_recharge(
                org.org_id, month, amount, settings.monthly_cap_usd
            ):
                if await self._store.claim_alert(org.org_id, "recharge"):
                    await self._store.fail_alert(org.org_id, "recharge")
                    await self._tell_owners(org, "cap")
                    failed += 1
                await self._store.finish_alert(alert, "recharge")
                continue
            try:
                await self._payments.recharge(
                    org.customer_id,
                    settings.payment_method,
                    int(amount * 100),
                    org.org_id,
                    f"recharge:{org.org_id}:{alert.mark_id}",
                )
            except RechargeDeclined:
                await self._store.unreserve_recharge(org.org_id, month, amount)
                await self._store.fail_alert(org.org_id, "recharge")
                await self._store.finish_alert(alert, "recharge")
                await self._tell_owners(org, "declined")
                failed += 1
                continue
            except Exception as exc:  # the API did not answer: the same key next run
                log.warning("auto-recharge of %s left due: %s", org.org_id, type(exc).__name__)
                await self._store.unreserve_recharge(org.org_id, month, amount)
                await self._store.release_alert(org.org_id, "recharge")
                retry += 1
                continue
            await self._store.finish_alert(alert, "recharge")
            recharged += 1
        return AlertReport(recharged=recharged, failed=failed, retry=retry)

    async def _tell_owners(self, org: AlertOrg, why: Literal["cap", "declined"]) -> None:
        settings = org.auto_recharge
        assert settings is not None
        letters = [
            messages.recharge_failed(
                to.email,
                org.name,
                why,
                format_usd(settings.amount_usd),
                format_usd(settings.monthly_cap_usd),
                self.billing_link(org.org_id),
                to.language,
            )
            for to in await self._managers.managers(org.org_id, OWNERS)
        ]
        await self._send_all(letters)

    async def _send_all(self, letters: list[Email]) -> bool:
        ok = True
        for letter in letters:
            try:
                await self._email.send(letter)
            except Exception as exc:  # one address failing does not stop the others
                log.warning("alert email not sent: %s", type(exc).__name__)
                ok = False
        return ok
