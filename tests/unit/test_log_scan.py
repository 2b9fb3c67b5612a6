"""The session's log scan (tests/log_scan.py) finds what it must and passes what it may."""

from __future__ import annotations

import logging
import secrets

from tests import log_scan
from tests.fakes.upstream import CANARY_PREFIX, completion_canary, random_text


def issued() -> log_scan.Issued:
    found = log_scan.Issued()
    found.literals["sk-upstream-SECRET-abc123"] = "provider key"
    return found


def test_given_keys_secrets_and_bodies_when_scanned_then_each_line_is_found() -> None:
    seen = issued()
    token = secrets.token_urlsafe(32)
    seen.token(token)
    canary = random_text()
    seen.canary(canary)
    lines = {
        "api key": "key=sk-dy-" + secrets.token_urlsafe(32),
        "stripe secret key": "STRIPE_SECRET_KEY=sk_test_51Habcdefgh",
        "stripe signing secret": "secret whsec_abcdef123456",
        "provider key": "Authorization: Bearer sk-upstream-SECRET-abc123",
        "prompt body": "content PROMPT-CANARY-x-abc",
        "issued token": f"https://x/callback?token={token}&next=/",
        "completion body": f"answer was ...{canary[5:20]}...",
    }
    for what, line in lines.items():
        assert log_scan.find_leaks(f"ok line\n{line}\nok", seen) == [(what, line)], what
    assert log_scan.find_leaks(CANARY_PREFIX + "x", seen)[0][0] == "completion body"


def test_given_metadata_lines_when_scanned_then_nothing_is_found() -> None:
    seen = issued()
    seen.token(secrets.token_urlsafe(32))
    seen.canary(random_text())
    text = "\n".join(
        [
            '{"message": "request finished", "request_id": "req_0123456789abcdef0123",'
            ' "org_id": "org_3f2a9c", "key_id": "key_ab12cd34", "status": 200}',
            "sha256 " + "ab" * 32,
            "masked sk-dy-ab****x9YzQw",
            "uuid " + "0123456789abcdef0123456789abcdef",
        ]
    )
    assert log_scan.find_leaks(text, seen) == []


def test_given_the_session_when_started_then_tokens_canaries_and_records_are_recorded() -> None:
    # The plugin is on for this session (tests/conftest.py): what happens now is recorded.
    token = secrets.token_urlsafe(32)
    assert token in log_scan.ISSUED.tokens
    canary = completion_canary()
    assert canary.removeprefix(CANARY_PREFIX)[:12] in log_scan.ISSUED.canary_runs
    logging.getLogger("dynoyard.scan-probe").info("probe %s", "value-ok")
    assert any("probe value-ok" in line for line in log_scan.RECORDS.lines)
