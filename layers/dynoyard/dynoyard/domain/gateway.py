"""One request through the gateway: authenticate, hold, call the upstream, settle.

Lambda may freeze a function as soon as it has answered, so the settle always happens
before the answer is complete: before a buffered response is returned, and before a
stream's last byte (or, if the client left, while the stream is being closed).

Once a hold is taken, every way out settles it: refusals, upstream failures, an answer the
gateway can not read, the client leaving, the deadline, and any unexpected exception
(`abandon`). Each request has a total deadline across fallbacks, below its function's
timeout, so it is settled by the gateway rather than killed by Lambda mid-way.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import anyio

from dynoyard.domain import errors
from dynoyard.domain.alert_states import alert_change
from dynoyard.domain.cache import (
    CacheStatus,
    ResponseCache,
    StreamAssembler,
    decoded,
    entry_for,
    never_cached,
    replay_as_events,
    request_hash,
    storable,
)
from dynoyard.domain.catalog import Catalog, Model
from dynoyard.domain.errors import GatewayError
from dynoyard.domain.keys import ApiKey, hash_key, looks_like_key
from dynoyard.domain.metering import (
    TokenCounts,
    cost_of,
    estimate_tokens,
    generated_chars,
    hold_for,
    token_bound,
    usage_from,
)
from dynoyard.domain.ports import (
    AlertMarks,
    CacheEntry,
    Hold,
    InsufficientBalance,
    KeyStore,
    Ledger,
    Observer,
    OrgClosed,
    RateLimited,
    SpendCapReached,
    StoreUnavailable,
    Upstream,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from dynoyard.domain.requests import Endpoint, ParsedRequest, parse_request
from dynoyard.domain.resilience import Resilience, Verdict, verdict_for
from dynoyard.domain.streaming import StreamMeter, error_event
from dynoyard.domain.usage import CLIENT_CLOSED, UsageRecord, error_head, utcnow

# Enough of an upstream error body to read its message; only ERROR_HEAD_BYTES are kept.
ERROR_READ_BYTES = 64 * 1024
SETTLE_ATTEMPTS = 4
SETTLE_BACKOFF_SECONDS = 0.05  # doubled per attempt, jittered
# A hold with no settle this long after its request's deadline is stranded (its process
# died, or every settle failed) and the cleanup job returns it: past the Lambda timeout
# (at most 30 s after the deadline), and the settle's retries (well under a second).
STRANDED_AFTER_DEADLINE_SECONDS = 60.0
MAX_MODEL_NAME = 128
KEY_CACHE_ENTRIES = 10_000


@dataclass(slots=True)
class Call:
    """The state of one request between its hold and its settle."""

    record: UsageRecord
    started: float
    parsed: ParsedRequest | None = None
    route: list[Model] = field(default_factory=list)
    served: Model | None = None
    response: UpstreamResponse | None = None  # the answer being relayed, once one is open
    hold: Hold | None = None
    cache_entry: CacheEntry | None = None  # an answer to keep, written with the settle
    cache_key: str | None = None  # the request's hash, once the cache is consulted
    cache_status: CacheStatus = "bypass"  # what the cache did (x-dynoyard-cache)
    cached: bytes | None = None  # the stored answer of a hit
    upstream_seconds: float = 0.0
    settled: bool = False
    deadline: float = float("inf")  # time.monotonic() by which the upstream work must end

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    @property
    def held(self) -> Decimal:
        return self.hold.amount if self.hold is not None else Decimal(0)

    def timing(self) -> tuple[float, float]:
        """(gateway ms, upstream ms) so far."""
        total = (time.perf_counter() - self.started) * 1000
        upstream = self.upstream_seconds * 1000
        return max(total - upstream, 0.0), upstream


class Gateway:
    def __init__(
        self,
        catalog: Catalog,
        keys: KeyStore,
        ledger: Ledger,
        upstream: Upstream,
        observer: Observer,
        *,
        cache: ResponseCache | None = None,
        key_cache_seconds: float = 5.0,
        max_response_bytes: int = 6 * 1024 * 1024,
        deadline_seconds: float = 25.0,
        resilience: Resilience | None = None,
        alerts: AlertMarks | None = None,
    ) -> None:
        self.catalog = catalog
        self._keys = keys
        self._ledger = ledger
        self._upstream = upstream
        self._observer = observer
        self._cache = cache  # organizations' opt-in response caches; None: no cache at all
        self._key_cache_seconds = key_cache_seconds
        self._key_cache: dict[str, tuple[ApiKey | None, float]] = {}
        self._max_response_bytes = max_response_bytes
        self._deadline_seconds = deadline_seconds
        # Retries and circuit breakers: in memory, per warm instance.
        self._resilience = resilience or Resilience()
        self._alerts = alerts  # the low-balance alert and auto-recharge; None: neither

    # -- authentication and models -------------------------------------------------

    async def authenticate(self, authorization: str | None) -> ApiKey:
        if not authorization or not authorization.startswith("Bearer "):
            raise errors.invalid_api_key(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
            )
        secret = authorization[7:].strip()
        if not looks_like_key(secret):
            raise errors.invalid_api_key()
        key = await self._lookup(hash_key(secret))
        if key is None or not key.usable_at(time.time()):
            raise errors.invalid_api_key()
        return key

    async def _lookup(self, key_hash: str) -> ApiKey | None:
        # Revocation is felt within key_cache_seconds: the bound the README documents.
        now = time.monotonic()
        cached = self._key_cache.get(key_hash)
        if cached is not None and now - cached[1] < self._key_cache_seconds:
            return cached[0]
        try:
            key = await self._keys.find_key(key_hash)
        except StoreUnavailable:
            raise errors.store_unavailable() from None
        if self._key_cache_seconds > 0:
            if len(self._key_cache) >= KEY_CACHE_ENTRIES:
                self._key_cache.clear()
            self._key_cache[key_hash] = (key, now)
        return key

    def models_for(self, key: ApiKey) -> list[Model]:
        return [m for m in self.catalog.offered() if key.allows(m.id)]

    def model_for(self, key: ApiKey, model_id: str) -> Model:
        model = self.catalog.get(model_id)
        if model is None:
            raise errors.model_not_found(model_id)
        if not key.allows(model_id):
            raise errors.model_not_allowed(model_id)
        return model

    # -- one metered call -------------------------------------------------------------

    async def start(
        self,
        key: ApiKey,
        endpoint: Endpoint,
        body: bytes,
        client_ip: str,
        request_id: str,
        use_cache: bool = True,
    ) -> Call:
        """Validate, choose the route, place the hold and, for an organization whose cache
        is on, look the answer up (`use_cache` False: the client asked to bypass it). Any
        refusal is recorded, then raised."""
        call = _new_call(key, endpoint, client_ip, request_id)
        call.deadline = time.monotonic() + self._deadline_seconds
        record = call.record
        try:
            parsed = parse_request(endpoint, body)
            record.model = parsed.model_id[:MAX_MODEL_NAME]
            record.stream = parsed.stream
            model = self.model_for(key, parsed.model_id)
            _check_fits(model, parsed)
            call.parsed = parsed
            call.route = self.catalog.route(model, key.allows)
            amount = max(
                hold_for(m, len(body), parsed.image_parts, _output_limit(parsed, m), parsed.choices)
                for m in call.route
            )
            tokens = max(
                token_bound(
                    len(body), parsed.image_parts, _output_limit(parsed, m), parsed.choices
                ).total_tokens
                for m in call.route
            )
            try:
                call.hold = await self._ledger.hold(
                    key.org_id,
                    amount,
                    key,
                    tokens,
                    request_id=request_id,
                    returnable_after=self._deadline_seconds + STRANDED_AFTER_DEADLINE_SECONDS,
                )
            except InsufficientBalance:
                raise errors.insufficient_quota() from None
            except OrgClosed:
                # Its owner deleted the account: its keys are as good as revoked.
                raise errors.invalid_api_key() from None
            except RateLimited as limited:
                raise errors.rate_limited(limited) from None
            except SpendCapReached as reached:
                raise errors.spend_cap_reached(reached.cap, reached.retry_after_seconds) from None
            except StoreUnavailable:
                raise errors.store_unavailable() from None
        except GatewayError as error:
            await self.fail(call, error)
            raise
        await self._consult_cache(call, use_cache)
        return call

    async def _consult_cache(self, call: Call, use_cache: bool) -> None:
        """After the hold, which said whether the organization's cache is on (an org whose
        cache is off pays no round trip and no hashing): a hit keeps the stored answer on
        the call; a miss keeps the key its answer may be stored under (domain/cache.py)."""
        parsed, hold = call.parsed, call.hold
        if self._cache is None or not use_cache or parsed is None or hold is None:
            return
        if hold.cache_ttl_seconds is None or never_cached(parsed) is not None:
            return
        call.cache_key = request_hash(parsed.endpoint, parsed.payload)
        call.cache_status = "miss"
        try:
            stored = await self._cache.cached_answer(call.record.org_id, call.cache_key)
        except Exception:  # the store unreachable, or a table not as the template says
            return  # the cache is a shortcut: the upstream answers instead
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.abandon(call)
            raise
        if stored is not None and decoded(stored) is not None:
            call.cached, call.cache_status = stored, "hit"

    async def serve_cached(self, call: Call) -> bytes:
        """A hit: settled before the answer goes out, and the stored answer handed back
        (as server-sent events when the client streams). No upstream was called, so a hit
        costs nothing and counts no tokens; its record says `cached`."""
        assert call.parsed is not None and call.cached is not None
        body = call.cached
        if call.parsed.stream:
            answer = decoded(body)
            assert answer is not None  # checked when it was found
            body = replay_as_events(answer, call.parsed.endpoint, call.parsed.client_wants_usage)
        call.record.status, call.record.cached = 200, True
        await self.settle(call)
        return body

    def _keep(self, call: Call, answer: bytes | None) -> None:
        """A complete answer of a cache miss joins the settle as the org's cache entry."""
        ttl = call.hold.cache_ttl_seconds if call.hold is not None else None
        if answer is None or call.cache_key is None or ttl is None:
            return
        call.cache_entry = entry_for(call.record.org_id, call.cache_key, answer, ttl, time.time())

    async def refuse(
        self, key: ApiKey, endpoint: Endpoint, client_ip: str, request_id: str, error: GatewayError
    ) -> None:
        """Record a request refused before it could start (its body was too large)."""
        await self.fail(_new_call(key, endpoint, client_ip, request_id), error)

    async def open_upstream(self, call: Call) -> UpstreamResponse:
        """The first upstream on the route that answers below 400, each tried as
        domain/resilience.py says: 5xx, 429, timeouts and resets are retried with backoff,
        then move on to the next fallback; a refused provider key moves on at once; other
        4xx are answered as they are; an upstream whose breaker is open is skipped.
        Otherwise the error is settled and raised. No attempt starts once the deadline has
        passed, and nothing is retried once an answer is handed back."""
        failure: GatewayError | None = None
        for model in call.route:
            response, failure, move_on = await self._try_upstream(call, model, failure)
            if response is not None:
                return response
            if not move_on:
                break
        failure = failure or errors.upstream_error()
        await self.fail(call, failure)
        raise failure

    async def _try_upstream(
        self, call: Call, model: Model, failure: GatewayError | None
    ) -> tuple[UpstreamResponse | None, GatewayError | None, bool]:
        """One model of the route, attempted as the policy says: (its answer; else None,
        the failure to answer with, and whether the route moves on to its next model)."""
        assert call.parsed is not None
        parsed, provider = call.parsed, model.provider.name
        body = _upstream_body(parsed, model)
        tries = self._resilience.tries(provider, model.upstream)
        try:
            while True:
                remaining = call.remaining()
                if remaining <= 0:
                    return None, errors.deadline_exceeded(self._deadline_seconds), False
                if not tries.begin():
                    if tries.made == 0:  # its breaker is open: skipped, not tried
                        call.record.provider = call.record.provider or provider
                        return None, failure or tries.skipped(), True
                    return None, failure, True
                call.record.provider = provider
                call.record.attempts += 1
                response: UpstreamResponse | None = None
                began = time.perf_counter()
                try:
                    response = await self._upstream.send(
                        model.provider, "/" + parsed.endpoint, body, parsed.stream, remaining
                    )
                except UpstreamTimeout:
                    failure = errors.upstream_timeout(
                        f"The upstream provider '{provider}' did not answer in time."
                    )
                except UpstreamUnavailable:
                    failure = errors.upstream_error(
                        f"The upstream provider '{provider}' could not be reached."
                    )
                finally:
                    call.upstream_seconds += time.perf_counter() - began
                verdict = verdict_for(response.status if response is not None else None)
                if response is not None and verdict is Verdict.SERVED:
                    tries.answered()
                    call.served, call.response = model, response
                    return response, None, False
                if response is not None:
                    failure = await self._upstream_failure(call, provider, response)
                if verdict is Verdict.REFUSED_KEY:
                    tries.refused_key()
                    return None, failure, True
                if verdict is Verdict.REQUEST_FAULT:
                    tries.answered()  # another provider would refuse the request too
                    return None, failure, False
                retry_after = response.retry_after if response is not None else None
                began = time.perf_counter()
                again = await tries.failed(retry_after, call.remaining())
                call.upstream_seconds += time.perf_counter() - began  # waits are upstream time
                if not again:
                    return None, failure, True
        finally:
            tries.close()

    async def _upstream_failure(
        self, call: Call, provider: str, response: UpstreamResponse
    ) -> GatewayError:
        """An upstream's answer of 400 or more, read (its head kept on the record), closed
        and turned into the error to answer with."""
        try:
            raw = await response.read(ERROR_READ_BYTES)
        except (UpstreamTimeout, UpstreamUnavailable):
            raw = b""
        finally:
            await response.close()
        call.record.upstream_error_status = response.status
        if response.status in (401, 403):
            # The provider refused the gateway's own key; its text may quote that key.
            call.record.error_head = None
            return errors.provider_credentials_refused(provider, response.status)
        call.record.error_head = error_head(raw)
        return _from_upstream(provider, response.status, raw)

    async def complete(self, call: Call, response: UpstreamResponse) -> bytes:
        """A buffered answer: read it, charge its usage, settle, and hand back the bytes."""
        began = time.perf_counter()
        try:
            raw = await response.read(self._max_response_bytes + 1)
            if len(raw) > self._max_response_bytes:
                raise UpstreamUnavailable("the upstream response is too large to buffer")
        except UpstreamTimeout:
            await self.fail(call, errors.upstream_timeout())
            raise errors.upstream_timeout() from None
        except UpstreamUnavailable:
            await self.fail(call, errors.upstream_error())
            raise errors.upstream_error() from None
        finally:
            call.upstream_seconds += time.perf_counter() - began
            await response.close()
        answer = _decoded(raw)
        if answer is None:
            # Not JSON the gateway (or any client) can read: the upstream's failure.
            unreadable = errors.upstream_error("The upstream provider's answer could not be read.")
            await self.fail(call, unreadable)
            raise unreadable
        call.record.status = 200
        self._charge(call, _usage_of(answer, call.parsed))
        if call.cache_key is not None and response.status == 200 and storable(answer):
            # Only an answer whose usage the upstream reported (domain/cache.py).
            self._keep(call, None if call.record.usage_estimated else raw)
        await self.settle(call)
        return raw

    async def relay(self, call: Call, response: UpstreamResponse) -> AsyncIterator[bytes]:
        """A stream, event by event. Charged for what was generated, whatever the ending:
        the upstream's usage if it came, else an estimate (marked so); settled on close."""
        assert call.parsed is not None
        meter = StreamMeter(
            client_wants_usage=call.parsed.client_wants_usage,
            prompt_chars=call.parsed.prompt_chars,
        )
        status = CLIENT_CLOSED  # until the stream reaches its end
        # Only for a cache miss: the stream rebuilt into the answer to store.
        assembler = StreamAssembler(call.parsed.endpoint) if call.cache_key is not None else None
        try:
            try:
                async for chunk in response.iter_bytes():
                    if assembler is not None:
                        assembler.feed(chunk)
                    out = meter.feed(chunk)
                    if out:
                        yield out
                if not meter.done and not meter.upstream_error:
                    raise UpstreamUnavailable("the upstream ended the stream early")
                status = 502 if meter.upstream_error else 200
            except UpstreamTimeout:
                status = 504
                call.record.error_code = "upstream_timeout"
                yield error_event(errors.upstream_timeout("The upstream provider stopped sending."))
            except UpstreamUnavailable:
                status = 502
                call.record.error_code = "upstream_error"
                yield error_event(
                    errors.upstream_error("The upstream provider broke off the stream.")
                )
        finally:
            with anyio.CancelScope(shield=True):
                await response.close()
                call.record.status = status
                # A client that leaves pays for its prompt and what was generated so far;
                # a stream the upstream broke before producing anything costs nothing.
                paid = meter.produced_anything or status == CLIENT_CLOSED
                self._charge(call, meter.tokens() if paid else None)
                if assembler is not None and _complete(meter, status):
                    self._keep(call, assembler.answer())
                await self.settle(call)

    # -- settling -------------------------------------------------------------------------

    async def fail(self, call: Call, error: GatewayError) -> None:
        """Record a request that produced nothing: nothing is charged, the hold returns."""
        call.record.status = error.status
        call.record.error_code = error.code
        await self.settle(call)

    def _charge(self, call: Call, tokens: TokenCounts | None) -> None:
        if tokens is None or call.served is None:
            return
        record = call.record
        record.prompt_tokens = tokens.prompt_tokens
        record.completion_tokens = tokens.completion_tokens
        record.usage_estimated = tokens.estimated
        record.cost_usd = cost_of(call.served.price, tokens)
        record.model = call.served.id

    async def abandon(self, call: Call, error: GatewayError | None = None) -> None:
        """The last resort when nothing else settled the call (an unexpected exception, or
        a stream whose relay never started): the upstream is let go, the hold returned, and
        the request recorded with `error` (the gateway's own failure by default)."""
        if call.settled:
            return
        if call.response is not None:
            await call.response.close()
        await self.fail(call, error or errors.internal_error())

    async def settle(self, call: Call) -> None:
        if call.settled:
            return
        gateway_ms, upstream_ms = call.timing()
        record = call.record
        record.latency_ms = round(gateway_ms + upstream_ms)
        record.upstream_ms = round(upstream_ms)
        failure: Exception | None = None
        for attempt in range(SETTLE_ATTEMPTS):
            if attempt:
                await anyio.sleep(random.uniform(0, SETTLE_BACKOFF_SECONDS * 2**attempt))
            try:
                # Idempotent per request id, so a retry after an unclear failure is safe.
                await self._ledger.settle(
                    record,
                    call.held,
                    call.hold.key_charge if call.hold is not None else None,
                    call.cache_entry,
                    recorded=call.hold is not None and call.hold.recorded,
                )
                failure = None
                break
            except Exception as exc:  # any store failure is retried, then reported
                failure = exc
                call.cache_entry = None  # the cache never costs a settle: retried without it
        call.settled = True
        if record.cost_usd > call.held:
            # The upstream generated past the limit it was sent; the balance may go below
            # zero by the difference. Reported and alarmed, never silent.
            self._observer.hold_exceeded(record, call.held)
        if failure is not None:
            self._observer.settle_failed(record, failure)
        else:
            await self._mark_alerts(call)
        self._observer.request_finished(record)

    async def _mark_alerts(self, call: Call) -> None:
        """The hold's answer said the balance, the thresholds and the alerts' states: a
        write only on the request that crosses a threshold (or the first after a credit
        lifted the balance back), never on the others."""
        hold = call.hold
        if self._alerts is None or hold is None or hold.balance_after is None:
            return
        balance = hold.balance_after + call.held - call.record.cost_usd  # after the settle
        for kind, threshold, state in (
            ("low_balance", hold.low_balance_usd, hold.low_balance_state),
            ("recharge", hold.recharge_usd, hold.recharge_state),
        ):
            change = alert_change(balance, threshold, state)
            # A failed write leaves the state as it was: the next request tries again.
            with contextlib.suppress(Exception):
                if change == "due":
                    await self._alerts.mark_alert_due(call.record.org_id, kind)
                elif change == "rearm":
                    await self._alerts.rearm_alert(call.record.org_id, kind)


def _new_call(key: ApiKey, endpoint: Endpoint, client_ip: str, request_id: str) -> Call:
    record = UsageRecord(
        request_id=request_id,
        started_at=utcnow(),
        org_id=key.org_id,
        key_id=key.key_id,
        endpoint=endpoint,
        model="",
        client_ip=client_ip,
    )
    return Call(record=record, started=time.perf_counter())


def _complete(meter: StreamMeter, status: int) -> bool:
    """A stream worth caching: the upstream sent its [DONE] with no error event and its own
    usage (a client that closes right after [DONE] is recorded as leaving, yet had it all)."""
    whole = meter.done and not meter.upstream_error and meter.usage is not None
    return whole and status in (200, CLIENT_CLOSED)


def _check_fits(model: Model, parsed: ParsedRequest) -> None:
    wants_embedding = parsed.endpoint == "embeddings"
    if model.kind is not None and wants_embedding != (model.kind == "embedding"):
        what = "an embedding" if wants_embedding else "a chat or completion"
        raise errors.bad_request(
            f"The model '{model.id}' is not {what} model.",
            param="model",
            code="model_not_supported",
        )
    if parsed.max_output_tokens and parsed.max_output_tokens > model.max_output_tokens:
        param = (
            "max_completion_tokens" if "max_completion_tokens" in parsed.payload else "max_tokens"
        )
        raise errors.bad_request(
            f"'{param}' is too large: this model allows at most {model.max_output_tokens}.",
            param=param,
        )


def _output_limit(parsed: ParsedRequest, model: Model) -> int:
    """Tokens one choice may generate: what the request asks, else the model's cap."""
    if parsed.endpoint == "embeddings":
        return 0
    return parsed.max_output_tokens or model.max_output_tokens


def _upstream_body(parsed: ParsedRequest, model: Model) -> bytes:
    payload = dict(parsed.payload, model=model.upstream)
    if parsed.endpoint != "embeddings":
        # The field this upstream reads always carries a limit within the hold: the client's
        # own (moved from the other field if need be), else the one the hold assumed.
        read = "max_tokens" if parsed.endpoint == "completions" else None
        read = read or model.provider.output_limit_field
        other = "max_completion_tokens" if read == "max_tokens" else "max_tokens"
        if read not in payload:
            payload[read] = payload.pop(other, None) or _output_limit(parsed, model)
    if parsed.stream:
        # Always ask for usage so the stream is charged exactly; hidden if not asked for.
        payload["stream_options"] = {**(payload.get("stream_options") or {}), "include_usage": True}
    return json.dumps(payload, separators=(",", ":")).encode()


def _from_upstream(provider: str, status: int, raw: bytes) -> GatewayError:
    message, type_, code, param = "", "api_error", None, None
    try:
        detail = json.loads(raw).get("error")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, dict):
        message = str(detail.get("message") or "")
        type_ = str(detail.get("type") or type_)
        code = detail.get("code") if isinstance(detail.get("code"), str) else None
        param = detail.get("param") if isinstance(detail.get("param"), str) else None
    if status >= 500:
        return errors.upstream_error(
            f"The upstream provider '{provider}' failed with status {status}."
        )
    text = message or f"The upstream provider answered with status {status}."
    return GatewayError(
        status, f"Upstream '{provider}': {text}", type=type_, code=code, param=param
    )


def _decoded(raw: bytes) -> dict[str, Any] | None:
    """A buffered answer's JSON object; None if it is not one (or nests past what the
    parser takes)."""
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return payload if isinstance(payload, dict) else None


def _usage_of(answer: dict[str, Any], parsed: ParsedRequest | None) -> TokenCounts:
    """The upstream's usage, else an estimate (marked so) from everything it generated;
    never raises, whatever shape the answer has."""
    usage = usage_from(answer.get("usage"))
    if usage is not None:
        return usage
    choices = answer.get("choices")
    completion_chars = 0
    for choice in choices if isinstance(choices, list) else ():
        if isinstance(choice, dict):
            text = choice.get("text")  # legacy completions
            completion_chars += generated_chars(choice.get("message"))
            completion_chars += len(text) if isinstance(text, str) else 0
    prompt_chars = parsed.prompt_chars if parsed is not None else 0
    return TokenCounts(
        estimate_tokens(prompt_chars), estimate_tokens(completion_chars), estimated=True
    )
