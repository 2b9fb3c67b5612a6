"""What a request may cost before it runs (the hold) and what it costs after (the charge).

The hold is an upper bound so that concurrent requests can never spend money an
organization does not have:
- prompt tokens <= bytes of the request body (a byte-level BPE token is at least one byte,
  and the JSON around each message outweighs the chat template's few tokens), plus a fixed
  allowance per image part, whose tokens do not show in its bytes;
- completion tokens <= max_tokens (or the model's `max_output_tokens`) times the choices
  (`n`, or `best_of` where larger); the gateway sends that limit upstream, and an upstream
  that ignores it is charged all the same, reported and alarmed (HoldExceeded);
- at least MIN_HOLD, so an organization with nothing left is never served.
The charge uses the upstream's own `usage`; only if the upstream never sends one is it
estimated from everything generated: content, reasoning, refusals and tool-call arguments
(and the usage record says so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from dynoyard.domain.catalog import Model, Price
from dynoyard.domain.money import MILLION

IMAGE_TOKEN_ALLOWANCE = 2_000  # per image, audio or file part
CHARS_PER_TOKEN_ESTIMATE = 4
MIN_HOLD = Decimal("0.000001")
# Fields of a message (or a stream's delta) whose text the model generated.
GENERATED_TEXT_FIELDS = ("content", "reasoning_content", "reasoning", "refusal")


@dataclass(frozen=True, slots=True)
class TokenCounts:
    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def cost_of(price: Price, tokens: TokenCounts) -> Decimal:
    return (
        tokens.prompt_tokens * price.input_per_mtok
        + tokens.completion_tokens * price.output_per_mtok
    ) / MILLION


def token_bound(
    body_bytes: int, image_parts: int, max_output_tokens: int, choices: int
) -> TokenCounts:
    """At most how many tokens a request can be charged for (see the module's text)."""
    if min(body_bytes, image_parts, max_output_tokens) < 0 or choices < 1:
        raise ValueError("a hold is computed from counts that are never negative")
    prompt_bound = body_bytes + image_parts * IMAGE_TOKEN_ALLOWANCE
    return TokenCounts(prompt_bound, max_output_tokens * choices)


def hold_for(
    model: Model, body_bytes: int, image_parts: int, max_output_tokens: int, choices: int
) -> Decimal:
    bound = token_bound(body_bytes, image_parts, max_output_tokens, choices)
    return max(cost_of(model.price, bound), MIN_HOLD)


def estimate_tokens(chars: int) -> int:
    """A rough count for text whose real count the upstream never told us."""
    return math.ceil(chars / CHARS_PER_TOKEN_ESTIMATE) if chars > 0 else 0


def usage_from(payload: object) -> TokenCounts | None:
    """TokenCounts from an OpenAI `usage` object, or None if it is missing or malformed."""
    if not isinstance(payload, dict):
        return None
    prompt = payload.get("prompt_tokens")
    completion = payload.get("completion_tokens", 0)
    if (
        not isinstance(prompt, int)
        or not isinstance(completion, int)
        or prompt < 0
        or completion < 0
    ):
        return None
    return TokenCounts(prompt, completion or 0)


def generated_chars(message: object) -> int:
    """Characters the model generated in one message or stream delta: content (text or
    parts), reasoning, refusal, and the arguments of tool and function calls."""
    if not isinstance(message, dict):
        return 0
    chars = 0
    for name in GENERATED_TEXT_FIELDS:
        value = message.get(name)
        if isinstance(value, str):
            chars += len(value)
        elif isinstance(value, list):
            chars += sum(
                len(part["text"])
                for part in value
                if isinstance(part, dict) and isinstance(part.get("text"), str)
            )
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        chars += _arguments_chars(call.get("function") if isinstance(call, dict) else None)
    return chars + _arguments_chars(message.get("function_call"))


def _arguments_chars(function: object) -> int:
    if isinstance(function, dict) and isinstance(function.get("arguments"), str):
        return len(function["arguments"])
    return 0
