"""Email written to a directory, one RFC 5322 `.eml` file per message: what `make dev` and
the tests use when no email provider is configured (CONTRACT: DYNOYARD_OUTBOX_DIR).

A stand-in until adapters/email.py's senders are wired in: the console takes any
`EmailSender` (domain/email.py), and uses this one by default."""

from __future__ import annotations

import asyncio
import email.message
import secrets
import time
from pathlib import Path

from dynoyard.domain.email import Email


class DirectoryOutbox:
    def __init__(self, directory: Path, sender: str = "Dynoyard <no-reply@dynoyard.local>") -> None:
        self.directory = directory
        self.sender = sender

    async def send(self, message: Email) -> None:
        await asyncio.to_thread(self._write, message)

    def _write(self, message: Email) -> Path:
        mail = email.message.EmailMessage()
        mail["From"] = self.sender
        mail["To"] = message.to
        mail["Subject"] = message.subject
        mail.set_content(message.text)
        if message.html:
            mail.add_alternative(message.html, subtype="html")
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{time.time_ns()}-{secrets.token_hex(4)}.eml"
        path.write_bytes(bytes(mail))
        return path
