"""The account rules, in one place: the operator's CLI and the console call these use
cases, so neither can bypass the other. Who may do what, a grant that is never zero and
says why it takes money back, the cache TTL's bounds, a key's expiry and limits. Given an
audit log (domain/audit.py), each change is recorded there once it has succeeded: who
(the actor's user id, or "operator"), what, which, when, and from which IP."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, Protocol, get_args

from dynoyard.domain.accounts import (
    UNCHANGED,
    InvalidSetting,
    Org,
    Unchanged,
    UnknownKey,
    check_cache_ttl,
    check_low_balance,
)
from dynoyard.domain.audit import (
    DEFAULT_PAGE,
    OPERATOR_ACTOR,
    AuditAction,
    AuditEntry,
    AuditLog,
    check_limit,
    free_text,
    new_entry,
)
from dynoyard.domain.keys import NewKey
from dynoyard.domain.limits import KeyLimits
from dynoyard.domain.money import MAX_GRANT_USD

Role = Literal["owner", "admin", "member"]
Action = Literal[
    "read_org",
    "read_usage",
    "read_keys",
    "manage_keys",
    "change_settings",
    "manage_members",
    "manage_owners",
    "leave_org",
    "read_audit",
    "grant_credits",
    "read_billing",
    "manage_billing",
    "consent_auto_recharge",
]
MAX_KEY_DAYS = 3650
MAX_GRACE_SECONDS = 86_400  # how long a rotated key may keep working: at most a day
KEY_ID = re.compile(r"key_[0-9a-f]{16}")
# Who may do what. Credits are granted by the operator only; members of an organization
# top up through billing.
# Owners and admins manage the organization alike; only owners make, demote or remove an
# owner (`manage_owners`); every member may leave. The team's rules (domain/team.py) add
# the last owner's.
_MANAGERS: frozenset[Action] = frozenset(
    {
        "read_org",
        "read_usage",
        "read_keys",
        "manage_keys",
        "change_settings",
        "manage_members",
        "read_audit",
        "leave_org",
        # The ledger (card brands, last fours, Stripe ids) and top-ups: managers only.
        "read_billing",
        "manage_billing",
    }
)
PERMISSIONS: dict[str, frozenset[Action]] = {
    "operator": frozenset(get_args(Action)),
    # Auto-recharge charges the saved card unattended: only an owner consents to it.
    "owner": _MANAGERS | {"manage_owners", "consent_auto_recharge"},
    "admin": _MANAGERS,
    "member": frozenset({"read_org", "read_usage", "read_keys", "leave_org"}),
}


class NotAllowed(PermissionError):
    """The actor's role does not allow the action."""


class InvalidRequest(ValueError):
    """What was asked breaks an account rule; the message says which, `param` (where
    known) which field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class KeyNotActive(ValueError):
    """The key is revoked, expired or already rotated: there is nothing left to rotate."""


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A key as rotation reads it: what the new key copies, and whether it is still live."""

    key_id: str
    org_id: str
    key_hash: str
    counters_hash: str  # where its limits count (the first key of its rotations)
    name: str
    models: frozenset[str]
    limits: KeyLimits
    created_at: float  # epoch seconds
    expires_at: int | None
    revoked: bool
    revoke_at: int | None  # a rotation's grace period ends then


@dataclass(frozen=True, slots=True)
class RotatedKey:
    new: NewKey
    old: StoredKey
    expires_at: int | None  # the new key's
    grace_ends_at: int | None  # None: the old key was revoked at once


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: the operator (the CLI), or a member of the organization with a role;
    `ip`, where the action came over the network, is what the audit log records."""

    role: Literal["operator", "owner", "admin", "member"]
    user_id: str | None = None
    ip: str | None = None

    @property
    def audit_name(self) -> str:
        """Who the audit log says acted: the user's id, or "operator"."""
        return self.user_id or OPERATOR_ACTOR


OPERATOR = Actor("operator")


def can(actor: Actor, action: Action) -> bool:
    return action in PERMISSIONS.get(actor.role, frozenset())


def require(actor: Actor, action: Action) -> None:
    if not can(actor, action):
        raise NotAllowed(f"a {actor.role} may not {action.replace('_', ' ')}")


def grant_rule(amount: Decimal, reason: str) -> str:
    """The reason to record: a grant is never zero, within bounds, and a negative one
    (taking credits back) says why."""
    if amount == 0:
        raise InvalidRequest("a grant must not be zero")
    if abs(amount) > MAX_GRANT_USD:
        raise InvalidRequest(f"a grant can be at most {MAX_GRANT_USD} USD either way")
    if amount < 0 and not reason.strip():
        raise InvalidRequest("taking credits back (a negative amount) needs a reason")
    return reason.strip() or "granted by operator"


def key_expiry(days: int | None, now: float) -> int | None:
    """Epoch seconds a key expires at: whole days, 1 to MAX_KEY_DAYS, or never (None)."""
    if days is None:
        return None
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_KEY_DAYS:
        raise InvalidRequest(f"a key's expiry is 1 to {MAX_KEY_DAYS} days")
    return int(now) + days * 86_400


class AccountStore(Protocol):
    async def get_org(self, org_id: str) -> Org: ...

    async def grant_credits(self, org_id: str, amount: Decimal, reason: str) -> Org: ...

    async def update_org_settings(
        self,
        org_id: str,
        cache_enabled: bool | None = None,
        cache_ttl_seconds: int | None = None,
        rate_limit_rpm: int | None = None,
        low_balance_usd: Decimal | Unchanged | None = UNCHANGED,
        name: str | None = None,
    ) -> Org: ...

    async def create_key(
        self,
        org_id: str,
        name: str = "",
        models: frozenset[str] = frozenset(),
        expires_at: int | None = None,
        limits: KeyLimits | None = None,
    ) -> NewKey: ...

    async def key_org_id(self, key_id: str) -> str | None: ...

    async def revoke_key(self, key_id: str) -> None: ...

    async def stored_key(self, key_id: str) -> StoredKey | None: ...

    async def rotate_key(
        self, old: StoredKey, expires_at: int | None, grace_ends_at: int | None
    ) -> NewKey: ...


class Administration:
    """The use cases; each checks the actor's permission, then the rules, then acts, then
    (given an audit log) records what it did. A change whose entry can not be written
    still happened: the error is raised to the caller all the same, never swallowed."""

    def __init__(
        self,
        store: AccountStore,
        clock: Callable[[], float] = time.time,
        audit: AuditLog | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._audit = audit

    async def record(
        self,
        actor: Actor,
        org_id: str,
        action: AuditAction,
        target: str,
        **details: object,
    ) -> AuditEntry | None:
        """Writes one audit entry (nothing without an audit log): for the use cases here,
        and for what other parts do (the console's sign-in, sign-out everywhere, export,
        deletion). Details are plain metadata only (domain/audit.py refuses the rest)."""
        if self._audit is None:
            return None
        entry = new_entry(
            org_id, actor.audit_name, action, target, self._clock(), actor.ip, details
        )
        await self._audit.record(entry)
        return entry

    async def audit_entries(
        self, actor: Actor, org_id: str, before: str | None = None, limit: int = DEFAULT_PAGE
    ) -> tuple[list[AuditEntry], str | None]:
        """A page of the organization's audit log, newest first, and the next page's cursor
        (None on the last)."""
        require(actor, "read_audit")
        check_limit(limit)
        if self._audit is None:
            raise RuntimeError("no audit log configured")
        return await self._audit.entries(org_id, before, limit)

    async def grant_credits(
        self, actor: Actor, org_id: str, amount: Decimal, reason: str = ""
    ) -> Org:
        require(actor, "grant_credits")
        recorded_reason = grant_rule(amount, reason)
        org = await self._store.grant_credits(org_id, amount, recorded_reason)
        await self.record(
            actor,
            org_id,
            "credits_granted",
            org_id,
            amount_usd=amount,
            reason=free_text(recorded_reason),
            balance_usd=org.balance_usd,
        )
        return org

    async def change_settings(
        self,
        actor: Actor,
        org_id: str,
        cache_enabled: bool | None = None,
        cache_ttl_seconds: int | None = None,
        rate_limit_rpm: int | None = None,
        low_balance_usd: Decimal | Unchanged | None = UNCHANGED,
        name: str | None = None,
    ) -> Org:
        """Changes what is given (None: unchanged), except `low_balance_usd`, where None
        removes the threshold (no alert) and UNCHANGED leaves it. `name`: the caller has
        cleaned it (console/validation.py clean_name)."""
        require(actor, "change_settings")
        if cache_ttl_seconds is not None:
            try:
                check_cache_ttl(cache_ttl_seconds)
            except ValueError as exc:
                raise InvalidRequest(str(exc), "cache_ttl_seconds") from None
        if rate_limit_rpm is not None and not 0 <= rate_limit_rpm <= 10_000_000:
            raise InvalidRequest(
                "an organization's rpm is 0 (no limit) to 10,000,000", "rate_limit_rpm"
            )
        if isinstance(low_balance_usd, Decimal):
            try:
                check_low_balance(low_balance_usd)
            except InvalidSetting as exc:
                raise InvalidRequest(str(exc), "low_balance_usd") from None
        org = await self._store.update_org_settings(
            org_id, cache_enabled, cache_ttl_seconds, rate_limit_rpm, low_balance_usd, name
        )
        await self.record(
            actor,
            org_id,
            "settings_changed",
            org_id,
            name=free_text(name) if name is not None else None,
            cache_enabled=cache_enabled,
            cache_ttl_seconds=cache_ttl_seconds,
            rate_limit_rpm=rate_limit_rpm,
            # A removed threshold is recorded as "off"; one left unchanged not at all.
            low_balance_usd=(
                None
                if low_balance_usd is UNCHANGED
                else "off"
                if low_balance_usd is None
                else low_balance_usd
            ),
        )
        return org

    async def create_key(
        self,
        actor: Actor,
        org_id: str,
        name: str = "",
        models: frozenset[str] = frozenset(),
        expires_in_days: int | None = None,
        limits: KeyLimits | None = None,
    ) -> NewKey:
        require(actor, "manage_keys")
        if len(name) > 100:
            raise InvalidRequest("a key's name is at most 100 characters")
        expires_at = key_expiry(expires_in_days, self._clock())
        new = await self._store.create_key(org_id, name, models, expires_at, limits)
        shown = limits or KeyLimits()
        await self.record(
            actor,
            org_id,
            "key_created",
            new.key_id,
            name=free_text(name),
            models=free_text(",".join(free_text(m) for m in sorted(models)), 200) or None,
            expires_at=expires_at,
            rpm=shown.rpm,
            tpm=shown.tpm,
            daily_usd=shown.daily_usd,
            monthly_usd=shown.monthly_usd,
        )
        return new

    async def revoke_key(self, actor: Actor, org_id: str, key_id: str) -> None:
        """Revokes one of the organization's keys; a key id of another organization (or of
        none) is UnknownKey, the same either way."""
        require(actor, "manage_keys")
        if not KEY_ID.fullmatch(key_id) or await self._store.key_org_id(key_id) != org_id:
            raise UnknownKey(key_id)
        await self._store.revoke_key(key_id)
        await self.record(actor, org_id, "key_revoked", key_id)

    async def rotate_key(
        self, actor: Actor, org_id: str, key_id: str, grace_seconds: int = 0
    ) -> RotatedKey:
        """A new key in place of a live one: the same name, models, limits and lifetime (an
        expiring key's new one lives as long from now), counting against the same spend and
        rate counters, so rotating never resets a cap. The old key is revoked at once, or
        after `grace_seconds` (0..MAX_GRACE_SECONDS) for clients to move over. A key of
        another organization (or of none) is UnknownKey; a revoked, expired or already
        rotated one is KeyNotActive (so a replayed rotation makes no second key)."""
        require(actor, "manage_keys")
        if (
            isinstance(grace_seconds, bool)
            or not isinstance(grace_seconds, int)
            or not 0 <= grace_seconds <= MAX_GRACE_SECONDS
        ):
            raise InvalidRequest(
                f"the grace period is 0 to {MAX_GRACE_SECONDS} seconds", "grace_seconds"
            )
        old = await self._store.stored_key(key_id) if KEY_ID.fullmatch(key_id) else None
        if old is None or old.org_id != org_id:
            raise UnknownKey(key_id)
        now = self._clock()
        expired = old.expires_at is not None and old.expires_at <= now
        if old.revoked or old.revoke_at is not None or expired:
            raise KeyNotActive(key_id)
        expires_at = None
        if old.expires_at is not None:
            expires_at = int(now) + max(old.expires_at - int(old.created_at), 1)
        grace_ends_at = int(now) + grace_seconds if grace_seconds else None
        new = await self._store.rotate_key(old, expires_at, grace_ends_at)
        await self.record(
            actor, org_id, "key_rotated", key_id, new_key_id=new.key_id, grace_seconds=grace_seconds
        )
        return RotatedKey(new, old, expires_at, grace_ends_at)
