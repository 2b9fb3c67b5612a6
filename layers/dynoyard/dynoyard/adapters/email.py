"""Email delivery behind the `EmailSender` port (domain/email.py): a file outbox locally and
in tests, Resend over httpx when its key is set, SES (sesv2) on AWS. `email_sender` picks one.

Every sender refuses, before anything leaves, a message whose recipient is not exactly one
address or whose subject would break a header line. No sender's error ever carries the
message's body or a credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
import threading
import uuid
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid, parseaddr
from pathlib import Path
from typing import Any

import httpx

from dynoyard.domain.email import Email, EmailFailed, EmailSender

DEFAULT_FROM = "Dynoyard <no-reply@dynoyard.local>"
DEFAULT_OUTBOX = ".local/outbox"
RESEND_API_BASE = "https://api.resend.com"
# Explicit, and short: a console request waits for its email (a sign-in link) to be sent.
RESEND_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
SES_CONNECT_TIMEOUT = 5.0
SES_READ_TIMEOUT = 10.0
# RFC 5322's hard limit for a line; a text part within it is kept as plain 8-bit UTF-8.
MAX_LINE_BYTES = 998
# RFC 3696's longest address.
MAX_ADDRESS_CHARS = 320


def _checked(message: Email) -> None:
    """One recipient, and header values on one line: a comma or a CR/LF in an address
    (user input) must not add recipients or headers."""
    to = message.to
    if not to or len(to) > MAX_ADDRESS_CHARS or any(ch in to for ch in "\r\n\x00"):
        raise EmailFailed("the recipient is not one email address")
    pairs = getaddresses([to])
    if len(pairs) != 1 or "@" not in pairs[0][1]:
        raise EmailFailed("the recipient is not one email address")
    if any(ch in message.subject for ch in "\r\n\x00"):
        raise EmailFailed("the subject is not one line")
    for name, value in message.headers:
        if not _HEADER_NAME.fullmatch(name) or any(ch in value for ch in "\r\n\x00"):
            raise EmailFailed("a header is not one line")


_HEADER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,63}")


# -- outbox ------------------------------------------------------------------------------


def mime_message(message: Email, sender: str = DEFAULT_FROM) -> EmailMessage:
    """The message as RFC 5322 (MIME: text/plain, plus text/html as an alternative)."""
    _checked(message)
    mime = EmailMessage(policy=policy.SMTP)
    try:
        mime["From"] = sender
        mime["To"] = message.to
        mime["Subject"] = message.subject  # non-ASCII is RFC 2047-encoded by the policy
        mime["Date"] = format_datetime(datetime.now(UTC))
        # A domain of our own: without one, make_msgid asks DNS for this host's name.
        domain = parseaddr(sender)[1].rpartition("@")[2] or "dynoyard.local"
        mime["Message-ID"] = make_msgid(domain=domain)
        # RFC 3834: an automatic message, so auto-responders do not answer it.
        mime["Auto-Submitted"] = "auto-generated"
        for name, value in message.headers:
            mime[name] = value
        mime.set_content(message.text, cte=_transfer_encoding(message.text))
        if message.html is not None:
            mime.add_alternative(message.html, subtype="html", cte=_transfer_encoding(message.html))
    except (ValueError, TypeError) as exc:
        raise EmailFailed(f"the message can not be written as RFC 5322 ({exc})") from None
    return mime


def _transfer_encoding(text: str) -> str | None:
    """8bit keeps the .eml readable and a link on one line, copyable; a part with a line
    past RFC 5322's limit is left to the library (quoted-printable or base64)."""
    if all(len(line.encode()) <= MAX_LINE_BYTES for line in text.splitlines()):
        return "8bit"
    return None


class OutboxSender:
    """One `.eml` file per message in a directory: what `make dev` and the tests read.

    The file name is a timestamp and a random id, never anything from the message, so no
    address can steer where it is written. The file appears whole (written aside, then
    renamed) and readable only by its owner: it holds sign-in links."""

    def __init__(self, directory: str | os.PathLike[str], sender: str = DEFAULT_FROM) -> None:
        self.directory = Path(directory)
        self.sender = sender

    async def send(self, message: Email) -> None:
        # File I/O blocks; it runs off the event loop like any other I/O.
        await asyncio.to_thread(self.write, message)

    def write(self, message: Email) -> Path:
        data = bytes(mime_message(message, self.sender))
        name = f"{datetime.now(UTC):%Y%m%dT%H%M%S.%fZ}-{uuid.uuid4().hex}.eml"
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(data)
                path = self.directory / name
                os.replace(temp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
        except OSError as exc:
            raise EmailFailed(
                f"could not write to the outbox {self.directory}: {exc.strerror}"
            ) from None
        return path


# -- Resend ------------------------------------------------------------------------------

_ERROR_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


class ResendSender:
    """Resend's REST API (POST /emails). One httpx client, its connections reused across
    messages and, on Lambda, across a warm instance's invocations."""

    def __init__(
        self,
        api_key: str,
        sender: str,
        base_url: str = RESEND_API_BASE,
        *,
        timeout: httpx.Timeout = RESEND_TIMEOUT,
    ) -> None:
        self._api_key = api_key
        self.sender = sender
        self.url = base_url.rstrip("/") + "/emails"
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:  # never the key
        return f"ResendSender(sender={self.sender!r}, url={self.url!r})"

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        # A pooled connection belongs to the loop that opened it: a new loop (tests, the
        # CLI) gets a new client; within one loop the client is reused.
        if self._client is None or self._client.is_closed or self._loop is not loop:
            self._client = httpx.AsyncClient(
                timeout=self._timeout,
                headers={"Authorization": f"Bearer {self._api_key}"},
                follow_redirects=False,
            )
            self._loop = loop
        return self._client

    async def send(self, message: Email) -> None:
        _checked(message)
        payload: dict[str, Any] = {
            "from": self.sender,
            "to": [message.to],
            "subject": message.subject,
            "text": message.text,
        }
        if message.html is not None:
            payload["html"] = message.html
        if message.headers:
            payload["headers"] = dict(message.headers)
        try:
            response = await self._http().post(self.url, json=payload)
        except httpx.TimeoutException:
            raise EmailFailed("Resend did not answer in time") from None
        except httpx.HTTPError as exc:
            raise EmailFailed(f"Resend unreachable ({type(exc).__name__})") from None
        if not response.is_success:
            # The status and Resend's error name only: its message may quote what was sent.
            name = _resend_error_name(response)
            raise EmailFailed(
                f"Resend refused the message: HTTP {response.status_code}"
                + (f" {name}" if name else "")
            )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _resend_error_name(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    name = body.get("name") if isinstance(body, dict) else None
    return name if isinstance(name, str) and _ERROR_NAME.fullmatch(name) else ""


# -- SES ---------------------------------------------------------------------------------


class SesSender:
    """Amazon SES (sesv2 SendEmail, simple content in UTF-8). boto3 is imported and its
    client made on the first message, then reused: a function that never emails pays
    nothing for it."""

    def __init__(self, sender: str, region: str) -> None:
        self.sender = sender
        self.region = region
        self._client: Any = None
        # Creating a client from boto3's default session is not thread-safe; using one is.
        self._lock = threading.Lock()

    def _ses(self) -> Any:
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                self._client = boto3.client(
                    "sesv2",
                    region_name=self.region,
                    config=Config(
                        connect_timeout=SES_CONNECT_TIMEOUT,
                        read_timeout=SES_READ_TIMEOUT,
                        retries={"mode": "standard", "max_attempts": 3},
                    ),
                )
            return self._client

    async def send(self, message: Email) -> None:
        _checked(message)
        # boto3 blocks; a worker thread keeps the event loop serving other requests.
        await asyncio.to_thread(self._send_blocking, message)

    def _send_blocking(self, message: Email) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        body: dict[str, Any] = {"Text": {"Data": message.text, "Charset": "UTF-8"}}
        if message.html is not None:
            body["Html"] = {"Data": message.html, "Charset": "UTF-8"}
        simple: dict[str, Any] = {
            "Subject": {"Data": message.subject, "Charset": "UTF-8"},
            "Body": body,
        }
        if message.headers:
            simple["Headers"] = [{"Name": n, "Value": v} for n, v in message.headers]
        try:
            self._ses().send_email(
                FromEmailAddress=self.sender,
                Destination={"ToAddresses": [message.to]},
                Content={"Simple": simple},
            )
        except ClientError as exc:
            # The error code only: SES's message names the addresses.
            code = exc.response.get("Error", {}).get("Code") or "unknown error"
            raise EmailFailed(f"SES refused the message: {code}") from None
        except BotoCoreError as exc:
            raise EmailFailed(f"SES unreachable ({type(exc).__name__})") from None


# -- which one ---------------------------------------------------------------------------


def email_sender(
    *,
    outbox_dir: str | os.PathLike[str] = DEFAULT_OUTBOX,
    resend_api_key: str | None = None,
    resend_api_base: str | None = None,
    email_from: str | None = None,
    on_aws: bool = False,
    aws_region: str | None = None,
) -> EmailSender:
    """Resend when its key is given; else SES when running on AWS with a sender configured
    (`email_from`, None when the operator set none: SES only sends from a verified identity,
    never from the placeholder); else the outbox."""
    if resend_api_key:
        return ResendSender(
            resend_api_key, email_from or DEFAULT_FROM, resend_api_base or RESEND_API_BASE
        )
    if on_aws and email_from:
        return SesSender(email_from, aws_region or "us-east-1")
    return OutboxSender(outbox_dir, email_from or DEFAULT_FROM)
