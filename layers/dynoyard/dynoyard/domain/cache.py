"""The opt-in, per-organization response cache: what is cached, under which key, and how a
stored answer is replayed.

The rules (README, "Response cache"):

- Off unless the organization turned it on; the hold says so (no extra round trip).
- Exact match. The key is the organization (the table's partition) and the SHA-256 of the
  canonical JSON (sorted keys, no spaces) of the endpoint and every body field except the
  ones that do not shape the answer: `stream`, `stream_options` (how it is delivered) and
  `user` (who asked). The model is the id the client sent. Never the API key: every key of
  the organization shares its entries.
- Never read nor written for a request that asks for variety (`n` or `best_of` above 1
  unless `temperature` is 0; absent, it is 1 upstream), that offers tools (`tools` or
  `functions`: a tool call is an action the model chose at that moment, replaying it later
  would hide what changed), or whose client said `x-dynoyard-cache: bypass` or
  `Cache-Control: no-cache` / `no-store`.
- Never written: anything but a complete 200 with the upstream's own usage (errors, streams
  cut short by the client, the upstream or an error event, estimated usage), a stream whose
  chunks can not be rebuilt into one answer, and answers over MAX_ENTRY_BYTES.
- One stored form: the buffered answer (chat.completion, text_completion or the embedding
  list). A streamed miss is assembled into it; a streaming client is served it as SSE.
- A hit costs nothing and counts no tokens: no upstream was called. Its usage record says
  `cached: true`, cost 0, tokens 0; the answer itself still carries the original usage.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from dynoyard.domain.accounts import MAX_CACHE_TTL_SECONDS, MIN_CACHE_TTL_SECONDS
from dynoyard.domain.ports import CacheEntry
from dynoyard.domain.requests import Endpoint, ParsedRequest
from dynoyard.domain.streaming import DONE, _data_of, _event_end  # the meter's SSE framing

CacheStatus = Literal["hit", "miss", "bypass"]
HEADER = "x-dynoyard-cache"
# Body fields that change how an answer is delivered or who asked, not what it says.
NOT_SHAPING = frozenset({"stream", "stream_options", "user"})
# Fields whose presence makes the answer an action taken at one moment.
TOOL_FIELDS = ("tools", "functions")
# DynamoDB's item limit is 400 KB (409,600 bytes) with the key and attribute names; larger
# answers are simply not cached.
MAX_ENTRY_BYTES = 400_000
# A stream is assembled only while it stays under this many bytes (the answer is smaller).
MAX_ASSEMBLED_STREAM_BYTES = 4 * MAX_ENTRY_BYTES
# Text of a chat delta, concatenated chunk after chunk.
DELTA_TEXT_FIELDS = ("content", "reasoning_content", "reasoning", "refusal")


class ResponseCache(Protocol):
    async def cached_answer(self, org_id: str, request_hash: str) -> bytes | None:
        """The stored answer, or None if there is none or it has expired (whether or not
        DynamoDB's TTL has removed it yet)."""


# -- what is cached, under which key ------------------------------------------------------


def client_allows(bypass_header: str | None, cache_control: str | None) -> bool:
    """False when the request says `x-dynoyard-cache: bypass` or `Cache-Control: no-cache`
    (or `no-store`): the cache is then neither read nor written."""
    if bypass_header is not None and bypass_header.strip().lower() == "bypass":
        return False
    for directive in (cache_control or "").split(","):
        if directive.split("=", 1)[0].strip().lower() in ("no-cache", "no-store"):
            return False
    return True


def never_cached(parsed: ParsedRequest) -> str | None:
    """Why this request is never served from nor stored in the cache, or None."""
    payload = parsed.payload
    if any(payload.get(name) for name in TOOL_FIELDS):
        return "tools"
    if parsed.choices > 1 and _temperature(payload) != 0:
        return "variety"
    return None


def request_hash(endpoint: Endpoint, payload: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of the endpoint and every shaping field."""
    shaping = {name: value for name, value in payload.items() if name not in NOT_SHAPING}
    canonical = json.dumps(
        {"endpoint": endpoint, "request": shaping}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def entry_for(
    org_id: str, key: str, answer: bytes, ttl_seconds: int, now: float
) -> CacheEntry | None:
    """The entry to store with the settle, or None when the answer is too large to."""
    if len(answer) > MAX_ENTRY_BYTES:
        return None
    ttl = min(max(ttl_seconds, MIN_CACHE_TTL_SECONDS), MAX_CACHE_TTL_SECONDS)
    return CacheEntry(org_id, key, answer, int(now) + ttl)


def storable(answer: dict[str, Any]) -> bool:
    """A buffered 200 worth keeping: an answer (choices or data), no error in it."""
    if "error" in answer:
        return False
    return isinstance(answer.get("choices"), list) or isinstance(answer.get("data"), list)


def decoded(stored: bytes) -> dict[str, Any] | None:
    """A stored answer's JSON object; None if it is not one (then it is treated as a miss)."""
    try:
        answer = json.loads(stored)
    except (ValueError, RecursionError):
        return None
    return answer if isinstance(answer, dict) and storable(answer) else None


def _temperature(payload: dict[str, Any]) -> float:
    value = payload.get("temperature", 1)  # the upstream's default when absent
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 1.0  # not a number: the upstream refuses it, nothing to cache
    return float(value)


# -- a stored answer replayed as a stream -------------------------------------------------


def replay_as_events(answer: dict[str, Any], endpoint: Endpoint, include_usage: bool) -> bytes:
    """The stored (buffered) answer as the server-sent events of a stream: per choice, one
    chunk with everything generated and one with its finish reason; the usage chunk if the
    client asked for it (`stream_options.include_usage`); then [DONE]."""
    chat = endpoint == "chat/completions"
    base: dict[str, Any] = {
        "id": answer.get("id"),
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": answer.get("created"),
        "model": answer.get("model"),
    }
    if answer.get("system_fingerprint") is not None:
        base["system_fingerprint"] = answer["system_fingerprint"]
    events: list[dict[str, Any]] = []
    for choice in answer.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        index = choice.get("index", 0)
        if chat:
            delta = _delta_of(choice.get("message"))
            first = {"index": index, "delta": delta, "logprobs": choice.get("logprobs")}
            last = {"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")}
            events.append({**base, "choices": [{**first, "finish_reason": None}]})
            events.append({**base, "choices": [last]})
        else:
            events.append({**base, "choices": [choice]})
    if include_usage and answer.get("usage") is not None:
        events.append({**base, "choices": [], "usage": answer["usage"]})
    body = b"".join(_sse(event) for event in events)
    return body + b"data: " + DONE + b"\n\n"


def _delta_of(message: object) -> dict[str, Any]:
    if not isinstance(message, dict):
        return {"role": "assistant"}
    delta = {name: value for name, value in message.items() if value is not None}
    calls = delta.get("tool_calls")
    if isinstance(calls, list):
        # A stream's tool calls say which call each piece belongs to.
        delta["tool_calls"] = [
            {"index": i, **call} if isinstance(call, dict) else call for i, call in enumerate(calls)
        ]
    return delta


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


# -- a stream assembled into the one stored form ------------------------------------------


@dataclass(slots=True)
class _Choice:
    index: int
    fields: dict[str, Any] = field(default_factory=dict)  # role, content, refusal, ...
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    function_call: dict[str, str] | None = None
    logprobs: dict[str, list[Any]] | None = None
    finish_reason: Any = None
    extra: dict[str, Any] = field(default_factory=dict)  # provider fields: the last value


@dataclass(slots=True)
class StreamAssembler:
    """Rebuilds the buffered answer a chat or legacy completions stream carried, from the
    upstream's events, to store it in the cache. It gives up (`answer()` is None) on
    anything it can not rebuild faithfully: a delta field it does not know, an event that is
    not JSON, logprobs of a legacy completion, or more bytes than an entry may hold."""

    endpoint: Endpoint
    failed: bool = False
    _buffer: bytearray = field(default_factory=bytearray)
    _seen: int = 0
    _top: dict[str, Any] = field(default_factory=dict)
    _choices: dict[int, _Choice] = field(default_factory=dict)
    _usage: Any = None

    def feed(self, chunk: bytes) -> None:
        if self.failed:
            return
        self._seen += len(chunk)
        if self._seen > MAX_ASSEMBLED_STREAM_BYTES:
            self._give_up()
            return
        self._buffer += chunk
        while not self.failed:
            end, separator = _event_end(self._buffer)
            if end < 0:
                return
            event = bytes(self._buffer[:end])
            del self._buffer[: end + separator]
            self._on_event(event)

    def answer(self) -> bytes | None:
        """The assembled answer as JSON bytes, or None if there is none to store."""
        if self.failed or not self._choices:
            return None
        chat = self.endpoint == "chat/completions"
        answer: dict[str, Any] = {
            **self._top,
            "object": "chat.completion" if chat else "text_completion",
            "choices": [
                self._chat_choice(c) if chat else self._text_choice(c)
                for _, c in sorted(self._choices.items())
            ],
        }
        if self._usage is not None:
            answer["usage"] = self._usage
        return json.dumps(answer, separators=(",", ":")).encode()

    def _give_up(self) -> None:
        self.failed = True
        self._buffer.clear()
        self._choices.clear()

    def _on_event(self, event: bytes) -> None:
        data = _data_of(event)
        if data is None or data == DONE:
            return  # comments and keep-alives; the end is the meter's to judge
        try:
            payload = json.loads(data)
        except (ValueError, RecursionError):
            self._give_up()
            return
        if not isinstance(payload, dict) or not self._merge(payload):
            self._give_up()

    def _merge(self, payload: dict[str, Any]) -> bool:
        for name, value in payload.items():
            if name in ("object", "choices", "usage") or value is None:
                continue
            if name in ("id", "created", "model"):
                self._top.setdefault(name, value)
            else:
                self._top[name] = value
        if payload.get("usage") is not None:
            self._usage = payload["usage"]
        choices = payload.get("choices")
        if choices is None:
            return True
        if not isinstance(choices, list):
            return False
        return all(self._merge_choice(choice) for choice in choices)

    def _merge_choice(self, choice: object) -> bool:
        if not isinstance(choice, dict):
            return False
        index = choice.get("index", 0)
        if not isinstance(index, int) or isinstance(index, bool):
            return False
        state = self._choices.setdefault(index, _Choice(index))
        for name, value in choice.items():
            if value is None or name == "index":
                continue
            if name == "finish_reason":
                state.finish_reason = value
            elif name == "delta" and self.endpoint == "chat/completions":
                if not isinstance(value, dict) or not _merge_delta(state, value):
                    return False
            elif name == "text" and self.endpoint == "completions":
                if not isinstance(value, str):
                    return False
                state.fields["text"] = state.fields.get("text", "") + value
            elif name == "logprobs":
                if self.endpoint != "chat/completions" or not _merge_logprobs(state, value):
                    return False
            else:
                state.extra[name] = value
        return True

    @staticmethod
    def _chat_choice(state: _Choice) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": None, **state.fields}
        if state.tool_calls:
            message["tool_calls"] = [
                {k: v for k, v in call.items() if k != "index"}
                for _, call in sorted(state.tool_calls.items())
            ]
        if state.function_call is not None:
            message["function_call"] = state.function_call
        return {
            "index": state.index,
            "message": message,
            "logprobs": state.logprobs,
            "finish_reason": state.finish_reason,
            **state.extra,
        }

    @staticmethod
    def _text_choice(state: _Choice) -> dict[str, Any]:
        return {
            "index": state.index,
            "text": state.fields.get("text", ""),
            "logprobs": None,
            "finish_reason": state.finish_reason,
            **state.extra,
        }


def _merge_delta(state: _Choice, delta: dict[str, Any]) -> bool:
    for name, value in delta.items():
        if value is None:
            continue
        if name == "role" and isinstance(value, str):
            state.fields["role"] = value
        elif name in DELTA_TEXT_FIELDS and isinstance(value, str):
            state.fields[name] = (state.fields.get(name) or "") + value
        elif name == "tool_calls" and isinstance(value, list):
            if not all(_merge_tool_call(state, call) for call in value):
                return False
        elif name == "function_call" and isinstance(value, dict):
            if state.function_call is None:
                state.function_call = {}
            if not _append_strings(state.function_call, value, ("name", "arguments")):
                return False
        else:
            return False  # audio, annotations, content parts...: not rebuilt, not cached
    return True


def _merge_tool_call(state: _Choice, piece: object) -> bool:
    if not isinstance(piece, dict):
        return False
    index = piece.get("index", 0)
    if not isinstance(index, int) or isinstance(index, bool):
        return False
    call = state.tool_calls.setdefault(index, {})
    for name in ("id", "type"):
        if isinstance(piece.get(name), str):
            call[name] = piece[name]
    function = piece.get("function")
    if function is None:
        return True
    if not isinstance(function, dict):
        return False
    return _append_strings(call.setdefault("function", {}), function, ("name", "arguments"))


def _append_strings(into: dict[str, str], piece: dict[str, Any], names: tuple[str, ...]) -> bool:
    for name, value in piece.items():
        if value is None:
            continue
        if name not in names or not isinstance(value, str):
            return False
        into[name] = into.get(name, "") + value
    return True


def _merge_logprobs(state: _Choice, logprobs: object) -> bool:
    """Chat logprobs come as lists per chunk (`content`, `refusal`): joined in order."""
    if not isinstance(logprobs, dict):
        return False
    if state.logprobs is None:
        state.logprobs = {}
    for name, value in logprobs.items():
        if value is None:
            continue
        if name not in ("content", "refusal") or not isinstance(value, list):
            return False
        state.logprobs.setdefault(name, []).extend(value)
    return True
