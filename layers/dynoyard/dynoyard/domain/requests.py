"""Validation of the request fields the gateway acts on; every other field passes through
to the upstream untouched (response_format, seed, logprobs, ...).

Every number the hold is computed from is validated here, on every endpoint, whatever the
endpoint's own schema: `max_tokens`, `max_completion_tokens`, `n` and `best_of`. A value
the gateway would multiply into the hold must be a positive integer below a documented
bound, so the hold is always positive and always fits DynamoDB's number type.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from dynoyard.domain.errors import GatewayError, bad_request
from dynoyard.domain.metering import CHARS_PER_TOKEN_ESTIMATE

Endpoint = Literal["chat/completions", "completions", "embeddings"]

# Explicit limits (README, "Limits").
MAX_OUTPUT_TOKENS = 1_000_000  # per choice; a model's own `max_output_tokens` is lower
MAX_CHOICES = 128  # OpenAI's bound on `n`
MAX_BEST_OF = 20  # OpenAI's bound on `best_of`
MAX_JSON_DEPTH = 64  # deeper bodies are refused before anything walks them

OutputTokens = Annotated[StrictInt, Field(ge=1, le=MAX_OUTPUT_TOKENS)]
# Parts of a message whose tokens do not show in their characters: the hold allows a fixed
# number of tokens for each.
MEDIA_PART_TYPES = frozenset(
    {"image_url", "input_image", "image", "input_audio", "audio", "file", "input_file"}
)
# Fields whose text reaches the model as prompt (for the estimate when no usage comes), and
# the keys inside them whose strings are structure or media, not text.
PROMPT_FIELDS = (
    "messages",
    "tools",
    "functions",
    "tool_choice",
    "response_format",
    "prompt",
    "input",
)
NOT_PROMPT_TEXT = frozenset({"role", "type", "url", "data", "detail", "format"})


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: StrictStr = Field(min_length=1)
    stream: StrictBool | None = False
    stream_options: dict[str, Any] | None = None
    n: Annotated[StrictInt, Field(ge=1, le=MAX_CHOICES)] | None = 1
    max_tokens: OutputTokens | None = None
    max_completion_tokens: OutputTokens | None = None


class _Chat(_Common):
    messages: list[dict[str, Any]] = Field(min_length=1)


class _Completion(_Common):
    prompt: str | list[str] | list[int] | list[list[int]]
    best_of: Annotated[StrictInt, Field(ge=1, le=MAX_BEST_OF)] | None = None


class _Embedding(_Common):
    input: str | list[str] | list[int] | list[list[int]]


_SCHEMAS: dict[str, type[_Common]] = {
    "chat/completions": _Chat,
    "completions": _Completion,
    "embeddings": _Embedding,
}


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    endpoint: Endpoint
    payload: dict[str, Any]  # the decoded body, forwarded with the model name replaced
    model_id: str
    stream: bool
    client_wants_usage: bool
    # The larger of max_tokens and max_completion_tokens, or None: the model's cap applies.
    max_output_tokens: int | None
    choices: int  # completions generated: n, or best_of where larger
    prompt_chars: int
    image_parts: int


def parse_request(endpoint: Endpoint, body: bytes) -> ParsedRequest:
    try:
        payload = json.loads(body)
    except RecursionError:
        raise _too_deep() from None
    except (ValueError, UnicodeDecodeError):
        raise bad_request(
            "We could not parse the JSON body of your request. The body must be valid JSON."
        ) from None
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.")
    if "model" not in payload:
        raise bad_request("You must provide a model parameter.", param="model")
    chars, media = _walk(payload)
    try:
        parsed = _SCHEMAS[endpoint].model_validate(payload)
    except ValidationError as exc:
        raise _first_error(exc) from None

    stream = bool(parsed.stream) and endpoint != "embeddings"
    options = parsed.stream_options or {}
    limits = [v for v in (parsed.max_tokens, parsed.max_completion_tokens) if v is not None]
    best_of = parsed.best_of if isinstance(parsed, _Completion) else None
    choices = max(parsed.n or 1, best_of or 1)
    if endpoint == "embeddings":
        limits, choices = [0], 1
    return ParsedRequest(
        endpoint=endpoint,
        payload=payload,
        model_id=parsed.model,
        stream=stream,
        client_wants_usage=stream and options.get("include_usage") is True,
        max_output_tokens=max(limits) if limits else None,
        choices=choices,
        prompt_chars=chars,
        image_parts=media,
    )


def _first_error(exc: ValidationError) -> GatewayError:
    first = exc.errors()[0]
    loc = [str(part) for part in first["loc"]]
    param = loc[0] if loc else None
    where = ".".join(loc)
    if first["type"] == "missing":
        return bad_request(f"Missing required parameter: '{where}'.", param=param)
    return bad_request(f"Invalid value for '{where}': {first['msg']}.", param=param)


def _too_deep() -> GatewayError:
    return bad_request(f"The request body is nested too deeply (at most {MAX_JSON_DEPTH} levels).")


def _walk(payload: dict[str, Any]) -> tuple[int, int]:
    """One pass over the body, without recursion: refuses nesting deeper than
    MAX_JSON_DEPTH, and counts the characters of every prompt string (messages, tools,
    structured content, the prompt or input) and the media parts (images, audio, files)."""
    chars = media = 0
    stack: list[tuple[Any, int, bool]] = [(payload, 1, False)]
    while stack:
        node, depth, is_prompt = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise _too_deep()
        if isinstance(node, dict):
            part_type = node.get("type")
            if is_prompt and isinstance(part_type, str) and part_type in MEDIA_PART_TYPES:
                media += 1
            for key, child in node.items():
                if depth == 1:
                    stack.append((child, 2, key in PROMPT_FIELDS))
                elif isinstance(child, dict | list):
                    stack.append((child, depth + 1, is_prompt))
                elif is_prompt and isinstance(child, str) and key not in NOT_PROMPT_TEXT:
                    chars += len(child)
        elif isinstance(node, list):
            for child in node:
                if isinstance(child, dict | list):
                    stack.append((child, depth + 1, is_prompt))
                elif is_prompt:
                    # A number in a prompt list is a token id.
                    chars += len(child) if isinstance(child, str) else CHARS_PER_TOKEN_ESTIMATE
        elif is_prompt and isinstance(node, str):
            chars += len(node)
    return chars, media
