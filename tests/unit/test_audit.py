"""The audit log's rules (domain/audit.py): the action names, and details that can only
ever be plain metadata, whatever a caller hands in."""

from __future__ import annotations

from decimal import Decimal

import pytest

from dynoyard.domain.audit import (
    AUDIT_ACTIONS,
    AUDIT_RETENTION_DAYS,
    DETAIL_KEYS,
    InvalidAuditQuery,
    UnsafeAuditDetail,
    audit_details,
    check_limit,
    free_text,
    new_entry,
)
from dynoyard.domain.keys import KEY_PREFIX

API_KEY = KEY_PREFIX + "V-ExNVT683LAY1z4uwI8TiH47U39Xw0XSz0_syP1rIc"  # as generate_key makes
SESSION_TOKEN = "Zk3v9Qx_7mN2pL8rT4wY1bC6dF0gH5jK3sA9eU2iO7q"  # 32 random bytes, base64url
EMAIL_BODY = (
    "Hello,\n\nClick this link to sign in: https://dynoyard.app/api/auth/email-link/"
    "callback?token=Zk3v9Qx_7mN2pL8rT4wY1bC6dF0gH5jK3sA9eU2iO7q\n\nDynoyard"
)
HOSTILE_VALUES = [
    API_KEY,
    f"my key is {API_KEY}",
    SESSION_TOKEN,
    "Bearer abc.def",
    "sk_live_51HxYzAbCdEf",
    "whsec_abcdefgh",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
    "-----BEGIN PRIVATE KEY-----",
    "a" * 64,  # a SHA-256 in hex is as long
    EMAIL_BODY,
    "two\nlines",
    "nul\x00byte",
    "x" * 201,
]


def test_given_the_issue_when_the_actions_are_listed_then_exactly_these_names():
    assert set(AUDIT_ACTIONS) == {
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
    }
    assert set(DETAIL_KEYS) == set(AUDIT_ACTIONS)
    assert AUDIT_RETENTION_DAYS == 400


@pytest.mark.parametrize("hostile", HOSTILE_VALUES)
def test_given_a_secret_or_a_body_when_offered_as_a_detail_then_refused(hostile):
    with pytest.raises(UnsafeAuditDetail):
        audit_details("credits_granted", reason=hostile)


@pytest.mark.parametrize(
    "key", ["api_key", "secret", "token", "body", "email_body", "password", "key", "__class__"]
)
def test_given_a_key_the_action_does_not_list_when_offered_then_refused(key):
    with pytest.raises(UnsafeAuditDetail, match="do not record"):
        audit_details("key_created", **{key: "x"})


@pytest.mark.parametrize(
    "value", [{"nested": API_KEY}, [API_KEY], b"bytes", 1.5, object(), 10**15, Decimal("NaN")]
)
def test_given_a_value_that_is_not_plain_when_offered_then_refused(value):
    with pytest.raises(UnsafeAuditDetail):
        audit_details("settings_changed", cache_ttl_seconds=value)


def test_given_an_unknown_action_when_details_are_built_then_refused():
    with pytest.raises(UnsafeAuditDetail, match="unknown audit action"):
        audit_details("key_stolen")


def test_given_plain_metadata_when_built_then_kept_with_money_as_a_string_and_none_left_out():
    details = audit_details(
        "credits_granted", amount_usd=Decimal("25.00"), reason="invoice 42", balance_usd=None
    )
    assert details == {"amount_usd": "25.00", "reason": "invoice 42"}
    assert audit_details("settings_changed", cache_enabled=False, rate_limit_rpm=0) == {
        "cache_enabled": False,
        "rate_limit_rpm": 0,
    }
    assert audit_details("key_created", name="ci", models="gpt-4o-mini,dynoyard-demo") == {
        "name": "ci",
        "models": "gpt-4o-mini,dynoyard-demo",
    }


@pytest.mark.parametrize("hostile", HOSTILE_VALUES)
def test_given_typed_text_with_a_secret_when_made_free_text_then_it_passes_and_holds_none(
    hostile,
):
    text = free_text(hostile)
    assert audit_details("credits_granted", reason=text) == {"reason": text}
    assert API_KEY not in text and SESSION_TOKEN not in text
    assert "\n" not in text and len(text) <= 100


def test_given_a_reason_with_a_key_in_it_when_made_free_text_then_only_the_key_is_redacted():
    assert free_text(f"refund  for\tinvoice 42, key {API_KEY}") == (
        "refund for invoice 42, key [redacted]"
    )
    assert free_text("x " * 80).endswith("…") and len(free_text("x " * 80)) == 100


def test_given_an_entry_when_made_then_ids_ip_and_time_are_checked():
    entry = new_entry(
        "org_0123456789abcdef", "usr_0123456789abcdef", "key_revoked", "key_1", 0, "::1"
    )
    assert entry.at == "1970-01-01T00:00:00.000+00:00"
    assert entry.show() == {
        "org_id": "org_0123456789abcdef",
        "at": "1970-01-01T00:00:00.000+00:00",
        "actor": "usr_0123456789abcdef",
        "action": "key_revoked",
        "target": "key_1",
        "ip": "::1",
        "details": {},
    }
    with pytest.raises(UnsafeAuditDetail, match="IP"):
        new_entry("org_1", "operator", "key_revoked", "key_1", 0, "not-an-ip; DROP")
    with pytest.raises(UnsafeAuditDetail):
        new_entry("org_1", "operator", "key_revoked", API_KEY, 0)  # a key as the target
    with pytest.raises(UnsafeAuditDetail):
        new_entry("org_1", "operator", "key_created", "key_1", 0, details={"api_key": "x"})


@pytest.mark.parametrize("limit", [0, -1, 101, True, "10", 1.0])
def test_given_a_bad_page_size_when_checked_then_refused_naming_limit(limit):
    with pytest.raises(InvalidAuditQuery) as raised:
        check_limit(limit)
    assert raised.value.param == "limit"
