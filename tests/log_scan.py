"""The session's log scan (issue 10: "The logs of a whole test run are scanned for bodies and
keys"): every log record of the test process and every log file the tests' subprocesses wrote
(the gateways under the session's temporary directory) is read at the end of the session; a
line holding a key, a secret, a token or a body canary fails the run.

What counts (`find_leaks`):
- a whole API key (`sk-dy-` and its 43 characters) or the fake provider's key;
- a Stripe secret key or signing secret (`sk_test_...`, `sk_live_...`, `whsec_...`);
- any token this process issued (`secrets.token_urlsafe`: session, sign-in link, invitation,
  unsubscribe, OAuth state), recorded as it is issued;
- a body: a prompt canary (`PROMPT-CANARY-`), a completion canary of the fake upstream
  (its prefix, or any 12-character run of one it generated).
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

RUN = 12  # characters: any run this long of a completion canary counts as a body
TOKEN_MIN = 20  # shorter random strings (ids, nonces) are not secrets to look for

SHAPES = {
    "api key": re.compile(r"sk-dy-[A-Za-z0-9_-]{20,}"),
    "stripe secret key": re.compile(r"sk_(?:test|live)_[A-Za-z0-9]{8,}"),
    "stripe signing secret": re.compile(r"whsec_[A-Za-z0-9]{8,}"),
    "provider key": re.compile(r"sk-upstream-SECRET-"),
    "prompt body": re.compile(r"PROMPT-CANARY-"),
    "completion body": re.compile(r"COMPLETION-CANARY-"),
}
URLSAFE_RUN = re.compile(rf"[A-Za-z0-9_-]{{{TOKEN_MIN},}}")
ALNUM_RUN = re.compile(rf"[A-Za-z0-9]{{{RUN},}}")


class Issued:
    """What this process handed out that must never be logged, recorded as it happens."""

    def __init__(self) -> None:
        self.tokens: set[str] = set()
        self.token_lengths: set[int] = set()
        self.canary_runs: set[str] = set()
        self.literals: dict[str, str] = {}  # secret -> what it is
        self._lock = threading.Lock()

    def token(self, value: str) -> None:
        if len(value) >= TOKEN_MIN:
            with self._lock:
                self.tokens.add(value)
                self.token_lengths.add(len(value))

    def canary(self, random_part: str) -> None:
        runs = {random_part[i : i + RUN] for i in range(len(random_part) - RUN + 1)}
        with self._lock:
            self.canary_runs |= runs


def find_leaks(text: str, issued: Issued) -> list[tuple[str, str]]:
    """(what, the line) for every line of `text` holding something of `issued` or a shape
    in SHAPES."""
    leaks = []
    for line in text.splitlines():
        what = _leak_in(line, issued)
        if what is not None:
            leaks.append((what, line[:300]))
    return leaks


def _leak_in(line: str, issued: Issued) -> str | None:
    for what, shape in SHAPES.items():
        if shape.search(line):
            return what
    for secret, what in issued.literals.items():
        if secret in line:
            return what
    for run in URLSAFE_RUN.findall(line):
        if _holds_token(run, issued):
            return "issued token"
    for run in ALNUM_RUN.findall(line):
        if any(run[i : i + RUN] in issued.canary_runs for i in range(len(run) - RUN + 1)):
            return "completion body"
    return None


def _holds_token(run: str, issued: Issued) -> bool:
    # A token is its own run or a piece of a longer one: every window of a token's length.
    for size in issued.token_lengths:
        if any(run[i : i + size] in issued.tokens for i in range(len(run) - size + 1)):
            return True
    return False


class EveryRecord(logging.Handler):
    """Keeps the text of every record: its message, its extra fields and its traceback.
    Powertools puts a filter on the root's handlers against duplicated lines; this handler
    must see those lines too, so it filters nothing."""

    def __init__(self) -> None:
        super().__init__(level=logging.NOTSET)
        self.lines: list[str] = []
        self._format = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.name} {record.getMessage()} {_extras(record)}"
            if record.exc_info:
                text += " " + self._format.formatException(record.exc_info)
            self.lines.append(text.replace("\n", " | "))
        except Exception:  # a record that cannot be formatted is still scanned raw
            self.lines.append(repr(record.__dict__).replace("\n", " | "))


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _extras(record: logging.LogRecord) -> str:
    return repr({k: v for k, v in vars(record).items() if k not in _STANDARD})


ISSUED = Issued()
RECORDS = EveryRecord()
_ORIGINAL_TOKEN_URLSAFE = secrets.token_urlsafe


def _recording_token_urlsafe(nbytes: int | None = None) -> str:
    value = _ORIGINAL_TOKEN_URLSAFE(nbytes)
    ISSUED.token(value)
    return value


def _recording(make: Callable[[], str], prefix: str) -> Callable[[], str]:
    def made() -> str:
        value = make()
        ISSUED.canary(value.removeprefix(prefix))
        return value

    return made


def start(secrets_to_watch: dict[str, str]) -> None:
    """Called at the session's start: the root handler, the token and canary recorders."""
    import tests.fakes.upstream as upstream

    ISSUED.literals.update(secrets_to_watch)
    secrets.token_urlsafe = _recording_token_urlsafe
    upstream.completion_canary = _recording(upstream.completion_canary, upstream.CANARY_PREFIX)
    root = logging.getLogger()
    root.addHandler(RECORDS)
    # Levels stay as they are: the service's loggers (`dynoyard` and its children) log at
    # Powertools' level, libraries at the root's WARNING, as on Lambda. (The tests' own
    # HTTP client logs its URLs at INFO: a sign-in link's token is in one by design.)


def log_files(session: pytest.Session) -> list[Path]:
    factory: Any = getattr(session.config, "_tmp_path_factory", None)
    if factory is None:
        return []
    try:
        base = factory.getbasetemp()
    except Exception:
        return []
    return sorted(base.rglob("*.log"))


def finish(session: pytest.Session) -> list[tuple[str, str, str]]:
    """Every leak: (where, what, line)."""
    logging.getLogger().removeHandler(RECORDS)
    secrets.token_urlsafe = _ORIGINAL_TOKEN_URLSAFE
    leaks = [
        ("log record", what, line) for what, line in find_leaks("\n".join(RECORDS.lines), ISSUED)
    ]
    for path in log_files(session):
        text = path.read_text(errors="replace")
        leaks += [(str(path), what, line) for what, line in find_leaks(text, ISSUED)]
    return leaks
