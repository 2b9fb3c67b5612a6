"""The audit log: who did what to which thing of an organization, when, and from where.

Every administrative action is one `AuditEntry`. What an entry may say beyond who, what,
which and when is a short list of plain metadata per action (`DETAIL_KEYS`): names, roles,
amounts, settings, never a secret. `audit_details` builds that list and refuses anything
else (an unknown key, a value that is not a short single-line string, a number or a flag,
a string shaped like an API key or a token), so an API key, a session token or an email
body can not get into the log, whoever calls it. Free text an operator or a user typed (a
grant's reason, a key's name) goes through `free_text` first, which keeps one short line
and replaces anything shaped like a secret with "[redacted]".

Retention: entries are kept `AUDIT_RETENTION_DAYS` (400 days, a year and a bit, so a whole
year can be looked back on), then deleted by the table's TTL; reads never show an entry
past its retention, even while the TTL has not deleted it yet.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, Protocol, get_args

AuditAction = Literal[
    "sign_in",
    "sign_out_everywhere",
    "key_created",
    "key_revoked",
    "key_rotated",
    "member_invited",
    "invitation_revoked",
    "member_joined",
    "member_removed",
    "member_left",
    "member_role_changed",
    "org_created",
    "settings_changed",
    "credits_granted",
    "export",
    "deletion_requested",
    "checkout_created",
    "auto_recharge_changed",
]
AUDIT_ACTIONS: tuple[AuditAction, ...] = get_args(AuditAction)

# The only details each action may carry.
DETAIL_KEYS: dict[AuditAction, frozenset[str]] = {
    "sign_in": frozenset({"method"}),
    "sign_out_everywhere": frozenset(),
    "key_created": frozenset(
        {"name", "models", "expires_at", "rpm", "tpm", "daily_usd", "monthly_usd"}
    ),
    "key_revoked": frozenset(),
    "key_rotated": frozenset({"new_key_id", "grace_seconds"}),
    # Invitations: the target is the invitation id, never the invited address (see
    # domain/team.py); member_joined ties the invitation to the user who took it.
    "member_invited": frozenset({"role", "replaces"}),
    "invitation_revoked": frozenset({"role"}),
    "member_joined": frozenset({"role", "invitation_id"}),
    "member_removed": frozenset({"role"}),
    "member_left": frozenset({"role"}),
    "member_role_changed": frozenset({"from_role", "to_role"}),
    "org_created": frozenset({"name"}),
    "settings_changed": frozenset(
        {"name", "cache_enabled", "cache_ttl_seconds", "rate_limit_rpm", "low_balance_usd"}
    ),
    "credits_granted": frozenset({"amount_usd", "reason", "balance_usd"}),
    # what: "usage" (the range and filters of a usage export) or the account's own export.
    "export": frozenset({"what", "format", "since", "until", "key_id", "model"}),
    "deletion_requested": frozenset({"what"}),
    # A Stripe Checkout Session started (credits come only from its paid webhook event).
    "checkout_created": frozenset({"amount_usd", "save_card"}),
    # The owner's consent (or its withdrawal): the actor and the time are the entry's own.
    "auto_recharge_changed": frozenset(
        {"enabled", "threshold_usd", "amount_usd", "monthly_cap_usd"}
    ),
}

AUDIT_RETENTION_DAYS = 400
AUDIT_RETENTION_SECONDS = AUDIT_RETENTION_DAYS * 86_400
MAX_TEXT = 200  # characters of one detail, of a target, of an actor
MAX_PAGE = 100  # entries per page
DEFAULT_PAGE = 50
OPERATOR_ACTOR = "operator"

DetailValue = str | int | bool
# Shapes of secrets: OpenAI-style and Stripe-style keys (sk-, sk_, rk_, pk_live...), webhook
# secrets, bearer headers, JWTs, PEM blocks, and any long unbroken run of token characters
# (32 random bytes are 43 in base64url, 64 in hex). Ids here (key_/org_/usr_ + 16 hex) are
# 20 characters.
_SECRET_SHAPES = re.compile(
    r"(?i)(\b(sk|rk|pk|whsec|ghp|xox[abp])[-_][A-Za-z0-9]"
    r"|bearer\s"
    r"|\beyJ[A-Za-z0-9_-]{8,}"
    r"|-----BEGIN"
    r"|[A-Za-z0-9+/=_\-]{32,})"
)
_WORD = re.compile(r"\S+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class UnsafeAuditDetail(ValueError):
    """What was offered for the audit log is not plain, short, allowed metadata."""


class InvalidAuditQuery(ValueError):
    """A page of the audit log was asked for with a bad cursor or limit; `param` names it."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def looks_secret(text: str) -> bool:
    return _SECRET_SHAPES.search(text) is not None


def free_text(text: str, limit: int = 100) -> str:
    """Typed text made fit for the log: one line, secret-shaped words replaced by
    "[redacted]", at most `limit` characters. Its result always passes `audit_details`."""
    line = " ".join(_CONTROL.sub(" ", text).split())
    line = _WORD.sub(lambda word: "[redacted]" if looks_secret(word[0]) else word[0], line)
    if len(line) > limit:
        line = line[: limit - 1].rstrip() + "…"
    return "[redacted]" if looks_secret(line) else line


def _plain_text(text: str, what: str) -> str:
    if len(text) > MAX_TEXT:
        raise UnsafeAuditDetail(f"{what} is longer than {MAX_TEXT} characters")
    if _CONTROL.search(text):
        raise UnsafeAuditDetail(f"{what} holds a control character or a line break")
    if looks_secret(text):
        raise UnsafeAuditDetail(f"{what} looks like a secret")
    return text


def _plain_value(key: str, raw: object) -> DetailValue:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int):
        if abs(raw) >= 10**15:
            raise UnsafeAuditDetail(f"detail {key!r} is too large a number")
        return raw
    if isinstance(raw, Decimal):  # money: kept as its decimal string, never a float
        if not raw.is_finite():
            raise UnsafeAuditDetail(f"detail {key!r} is not a finite number")
        return _plain_text(str(raw), f"detail {key!r}")
    if isinstance(raw, str):
        return _plain_text(raw, f"detail {key!r}")
    raise UnsafeAuditDetail(
        f"detail {key!r} must be a short string, a whole number or a flag, not {type(raw).__name__}"
    )


def audit_details(action: str, **fields: object) -> dict[str, DetailValue]:
    """The details of an entry of `action`: only its listed keys, each a short single-line
    string without anything shaped like a secret, a whole number, a decimal (kept as its
    string) or a flag. A field given as None is left out. Anything else is refused."""
    if action not in DETAIL_KEYS:
        raise UnsafeAuditDetail(f"unknown audit action {action!r}")
    allowed = DETAIL_KEYS[action]
    details: dict[str, DetailValue] = {}
    for key, raw in fields.items():
        if key not in allowed:
            raise UnsafeAuditDetail(f"{action} entries do not record {key[:40]!r}")
        if raw is not None:
            details[key] = _plain_value(key, raw)
    return details


def check_ip(ip: str | None) -> str | None:
    if ip is None:
        return None
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        raise UnsafeAuditDetail("the ip is not an IP address") from None


def iso_at(epoch_seconds: float) -> str:
    """An instant as the log writes it: UTC ISO 8601, milliseconds (sorts as text)."""
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One administrative action. `actor` is a user id or "operator"; `target` the id of
    what was acted on (a key, a user, the organization); `at` UTC ISO 8601; `ip` the
    caller's address where there is one (never for the operator's CLI)."""

    org_id: str
    actor: str
    action: str
    target: str
    at: str
    ip: str | None = None
    details: dict[str, DetailValue] = field(default_factory=dict)

    def show(self) -> dict[str, Any]:
        return {
            "org_id": self.org_id,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "ip": self.ip,
            "details": dict(self.details),
        }


def new_entry(
    org_id: str,
    actor: str,
    action: AuditAction,
    target: str,
    at: float,
    ip: str | None = None,
    details: dict[str, object] | None = None,
) -> AuditEntry:
    """An entry, checked: a known action, plain ids, a real IP, safe details."""
    if action not in AUDIT_ACTIONS:
        raise UnsafeAuditDetail(f"unknown audit action {action!r}")
    return AuditEntry(
        org_id=_plain_text(org_id, "the organization"),
        actor=_plain_text(actor, "the actor"),
        action=action,
        target=_plain_text(target, "the target"),
        at=iso_at(at),
        ip=check_ip(ip),
        details=audit_details(action, **(details or {})),
    )


def check_entry(entry: AuditEntry) -> None:
    """Refuses an entry that `new_entry` would not have made (the store's last check)."""
    new_entry(
        entry.org_id,
        entry.actor,
        entry.action,  # type: ignore[arg-type]
        entry.target,
        0,
        entry.ip,
        dict(entry.details),
    )
    try:
        datetime.fromisoformat(entry.at)
    except ValueError:
        raise UnsafeAuditDetail("the entry's time is not ISO 8601") from None


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidAuditQuery(f"limit is 1 to {MAX_PAGE} entries", "limit")
    return limit


class AuditLog(Protocol):
    """Where entries are kept. `entries` answers the organization's entries newest first,
    at most `limit`, older than the opaque cursor `before` (from an earlier page), and the
    cursor of the next page (None on the last). A cursor that is not one of its own raises
    InvalidAuditQuery; entries past their retention are never answered."""

    async def record(self, entry: AuditEntry) -> None: ...

    async def entries(
        self, org_id: str, before: str | None = None, limit: int = DEFAULT_PAGE
    ) -> tuple[list[AuditEntry], str | None]: ...
