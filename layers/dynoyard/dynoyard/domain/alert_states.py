"""What one settled request does to an organization's alert state (rules in
domain/alerts.py). Apart from alerts.py so that the gateway's hot path imports only this,
not the senders, their emails and messages."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

# States after which no new alert of the kind is marked until a credit re-arms it.
HELD_STATES = frozenset({"due", "sent", "failed"})
REARMABLE_STATES = frozenset({"sent", "failed"})


def alert_change(
    balance: Decimal, threshold: Decimal | None, state: str | None
) -> Literal["due", "rearm"] | None:
    """What one settled request changes: "due" when the balance is below the threshold and
    the alert is armed; "rearm" when an alert already acted on finds the balance back at or
    above it (or no threshold any more); else nothing, which is almost every request."""
    if threshold is not None and balance < threshold:
        return "due" if state not in HELD_STATES else None
    return "rearm" if state in REARMABLE_STATES else None
