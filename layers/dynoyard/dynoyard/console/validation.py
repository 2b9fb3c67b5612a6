"""What the console accepts as an email address, a name and a language.

No email-validation library is installed (and none is added): the check below is
deliberately small. It accepts what a mailbox can plausibly be and what the link can be
sent to; the emailed link itself proves the address. Accepted: at most 254 characters,
exactly one "@", a local part of 1..64 printable ASCII characters without spaces, quotes,
angle brackets, commas, semicolons or backslashes and without leading, trailing or double
dots, and a domain of at least two dot-separated labels of letters, digits and hyphens
(1..63 each, no leading or trailing hyphen; the last label alphabetic, 2+ letters).
Internationalized addresses are not accepted yet. The address is kept as given (trimmed);
accounts are found by its normalized form, all lowercase.
"""

from __future__ import annotations

import re

LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}")
DOMAIN_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
TOP_LABEL = re.compile(r"[A-Za-z]{2,63}")
MAX_EMAIL = 254
MAX_NAME = 100
LANGUAGES = ("en", "zh-CN")


def valid_email(candidate: str) -> str | None:
    """The address, trimmed, if it passes the check above; else None."""
    email = candidate.strip()
    if len(email) > MAX_EMAIL or email.count("@") != 1:
        return None
    local, domain = email.split("@")
    if not LOCAL_PART.fullmatch(local) or local.startswith(".") or local.endswith("."):
        return None
    if ".." in local:
        return None
    labels = domain.split(".")
    if len(labels) < 2 or not all(DOMAIN_LABEL.fullmatch(label) for label in labels):
        return None
    if not TOP_LABEL.fullmatch(labels[-1]):
        return None
    return email


def normalized_email(email: str) -> str:
    return email.strip().lower()


def clean_name(candidate: str) -> str | None:
    """A display name: trimmed, at most MAX_NAME characters, no control characters."""
    name = candidate.strip()
    if len(name) > MAX_NAME or any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in name):
        return None
    return name
