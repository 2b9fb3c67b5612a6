"""Email the service sends (sign-in links, invitations, low balance), through one port.
Adapters: a file outbox locally and in tests, Resend over httpx when its key is set, SES on
AWS (adapters/email.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

Language = Literal["en", "zh-CN"]


@dataclass(frozen=True, slots=True)
class Email:
    to: str
    subject: str
    text: str
    html: str | None = None
    # Extra header lines, e.g. List-Unsubscribe (RFC 2369) and List-Unsubscribe-Post (8058).
    headers: tuple[tuple[str, str], ...] = ()


class EmailSender(Protocol):
    async def send(self, message: Email) -> None:
        """Sends one message; raises EmailFailed when the provider refuses it."""


class EmailFailed(Exception):
    """The email provider did not accept the message (the text says why, never the body)."""
