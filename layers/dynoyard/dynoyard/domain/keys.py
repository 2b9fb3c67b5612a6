"""API keys: random, high-entropy, recognizable, stored only as a SHA-256 hash.

A slow password hash is unnecessary: 256 bits of randomness can not be guessed, and a
fast hash keeps authentication to one lookup.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field

from dynoyard.domain.limits import KeyLimits

KEY_PREFIX = "sk-dy-"


@dataclass(frozen=True, slots=True)
class NewKey:
    key_id: str
    secret: str  # shown once, never stored
    key_hash: str
    hint: str


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    org_id: str
    name: str
    hint: str
    models: frozenset[str] = field(default_factory=frozenset)  # empty: every model
    expires_at: int | None = None  # epoch seconds
    revoked: bool = False
    key_hash: str = ""  # the key item's id
    limits: KeyLimits = field(default_factory=KeyLimits)
    # Where its limits' counters live: the first key of its rotations (a rotated key keeps
    # counting against the same caps); empty: its own item.
    counters_hash: str = ""
    last_used_hour: int | None = None  # epoch hours; the settle marks it once an hour

    def usable_at(self, now: float) -> bool:
        return not self.revoked and (self.expires_at is None or now < self.expires_at)

    def allows(self, model_id: str) -> bool:
        return not self.models or model_id in self.models


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_key() -> NewKey:
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    return NewKey(
        key_id="key_" + secrets.token_hex(8),
        secret=secret,
        key_hash=hash_key(secret),
        hint=f"{KEY_PREFIX}...{secret[-4:]}",
    )


def looks_like_key(candidate: str) -> bool:
    """Cheap shape check before any lookup: saves a round trip for garbage."""
    return candidate.startswith(KEY_PREFIX) and 40 <= len(candidate) <= 80


def new_org_id() -> str:
    return "org_" + secrets.token_hex(8)
