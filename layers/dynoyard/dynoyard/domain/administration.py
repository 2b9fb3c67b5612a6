"""The account rules, in one place: the operator's CLI and the console call these use
cases, so neither can bypass the other. Who may do what, a grant that is never zero and
says why it takes money back, the cache TTL's bounds, a key's expiry and limits."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, Protocol, get_args

from dynoyard.domain.accounts import Org, check_cache_ttl
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
    "read_audit",
    "grant_credits",
]
MAX_KEY_DAYS = 3650
# Who may do what. Credits are granted by the operator only; members of an organization
# top up through billing.
PERMISSIONS: dict[str, frozenset[Action]] = {
    "operator": frozenset(get_args(Action)),
    "owner": frozenset(
        {
            "read_org",
            "read_usage",
            "read_keys",
            "manage_keys",
            "change_settings",
            "manage_members",
            "read_audit",
        }
    ),
    "admin": frozenset(
        {
            "read_org",
            "read_usage",
            "read_keys",
            "manage_keys",
            "change_settings",
            "manage_members",
            "read_audit",
        }
    ),
    "member": frozenset({"read_org", "read_usage", "read_keys"}),
}


class NotAllowed(PermissionError):
    """The actor's role does not allow the action."""


class InvalidRequest(ValueError):
    """What was asked breaks an account rule; the message says which."""


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: the operator (the CLI), or a member of the organization with a role."""

    role: Literal["operator", "owner", "admin", "member"]
    user_id: str | None = None


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
    ) -> Org: ...

    async def create_key(
        self,
        org_id: str,
        name: str = "",
        models: frozenset[str] = frozenset(),
        expires_at: int | None = None,
        limits: KeyLimits | None = None,
    ) -> NewKey: ...


class Administration:
    """The use cases; each checks the actor's permission, then the rules, then acts."""

    def __init__(self, store: AccountStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    async def grant_credits(
        self, actor: Actor, org_id: str, amount: Decimal, reason: str = ""
    ) -> Org:
        require(actor, "grant_credits")
        return await self._store.grant_credits(org_id, amount, grant_rule(amount, reason))

    async def change_settings(
        self,
        actor: Actor,
        org_id: str,
        cache_enabled: bool | None = None,
        cache_ttl_seconds: int | None = None,
        rate_limit_rpm: int | None = None,
    ) -> Org:
        require(actor, "change_settings")
        if cache_ttl_seconds is not None:
            try:
                check_cache_ttl(cache_ttl_seconds)
            except ValueError as exc:
                raise InvalidRequest(str(exc)) from None
        if rate_limit_rpm is not None and not 0 <= rate_limit_rpm <= 10_000_000:
            raise InvalidRequest("an organization's rpm is 0 (no limit) to 10,000,000")
        return await self._store.update_org_settings(
            org_id, cache_enabled, cache_ttl_seconds, rate_limit_rpm
        )

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
        return await self._store.create_key(org_id, name, models, expires_at, limits)
