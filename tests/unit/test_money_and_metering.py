from decimal import Decimal

import pytest

from dynoyard.domain.catalog import parse_catalog
from dynoyard.domain.metering import (
    TokenCounts,
    cost_of,
    estimate_tokens,
    generated_chars,
    hold_for,
    usage_from,
)
from dynoyard.domain.money import format_usd, parse_usd

CATALOG = {
    "providers": {"p": {"base_url": "http://127.0.0.1:1/v1"}},
    "models": [
        {
            "id": "m",
            "provider": "p",
            "upstream": "u",
            "price": {"input_per_mtok": "0.15", "output_per_mtok": "0.60"},
            "max_output_tokens": 100,
        }
    ],
}


def model():
    found = parse_catalog(CATALOG, environ={}).get("m")
    assert found is not None
    return found


def test_given_a_float_when_parsed_as_money_then_it_is_refused():
    with pytest.raises(ValueError, match="float"):
        parse_usd(0.1)  # type: ignore[arg-type]


def test_given_decimal_strings_when_added_then_the_sum_is_exact():
    total = sum((parse_usd("0.1") for _ in range(3)), Decimal(0))
    assert total == Decimal("0.3")
    assert format_usd(total) == "0.300000"


def test_given_tiny_and_large_amounts_when_formatted_then_no_digit_is_lost_or_exponent_shown():
    assert format_usd(Decimal("0.00000105")) == "0.00000105"
    assert format_usd(Decimal("12.345678")) == "12.345678"
    assert format_usd(Decimal("1E+2")) == "100.000000"
    assert format_usd(Decimal("-0.5")) == "-0.500000"


def test_given_token_counts_when_costed_then_price_per_million_is_applied_exactly():
    cost = cost_of(model().price, TokenCounts(prompt_tokens=7, completion_tokens=3))
    assert cost == Decimal("0.00000285")  # 7 * 0.15e-6 + 3 * 0.60e-6


def test_given_a_request_when_held_then_the_hold_bounds_every_possible_charge():
    m = model()
    hold = hold_for(m, body_bytes=200, image_parts=1, max_output_tokens=50, choices=2)
    expected = (Decimal(200 + 2000) * Decimal("0.15") + Decimal(100) * Decimal("0.60")) / 10**6
    assert hold == expected
    worst = cost_of(m.price, TokenCounts(200, 100))
    assert worst <= hold


def test_given_usage_objects_when_read_then_malformed_ones_are_rejected():
    assert usage_from({"prompt_tokens": 3, "completion_tokens": 4}) == TokenCounts(3, 4)
    assert usage_from({"prompt_tokens": 3}) == TokenCounts(3, 0)
    assert usage_from({"prompt_tokens": "3"}) is None
    assert usage_from({"prompt_tokens": -1, "completion_tokens": 1}) is None
    assert usage_from(None) is None


def test_given_text_when_estimated_then_four_chars_make_a_token_rounded_up():
    assert estimate_tokens(0) == 0
    assert estimate_tokens(1) == 1
    assert estimate_tokens(8) == 2
    assert estimate_tokens(9) == 3


def test_given_a_message_when_its_generated_text_is_measured_then_every_part_counts():
    message = {
        "content": [{"type": "text", "text": "abc"}, {"type": "image_url"}],
        "reasoning_content": "12345",
        "refusal": None,
        "tool_calls": [{"function": {"arguments": "{}"}}, "junk"],
        "function_call": {"arguments": "xy"},
    }
    assert generated_chars(message) == 3 + 5 + 2 + 2
    assert generated_chars("not a message") == 0
