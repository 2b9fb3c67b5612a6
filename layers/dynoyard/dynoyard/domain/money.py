"""Exact money: USD as `Decimal`, never float.

DynamoDB numbers hold 38 significant digits, so a balance and every cost can be stored
and added exactly; only display rounds nothing away either.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

MILLION = Decimal(1_000_000)
MAX_GRANT_USD = Decimal(1_000_000)  # one grant, either way
ZERO = Decimal(0)


def parse_usd(text: str | int | Decimal) -> Decimal:
    """A decimal amount from a string (never a float); raises ValueError on anything else."""
    if isinstance(text, (float, bool)):
        raise ValueError("money must be given as a decimal string, not a float")
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation as exc:
        raise ValueError(f"not a decimal amount: {text!r}") from exc
    if not value.is_finite():
        raise ValueError(f"not a finite amount: {text!r}")
    return value


def format_usd(value: Decimal) -> str:
    """Plain decimal string with at least six decimals and no exponent: '12.345678'."""
    text = format(value.normalize(), "f")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(6, '0')}"
