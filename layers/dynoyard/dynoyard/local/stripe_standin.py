"""A Stripe stand-in for `make dev` and the tests: a real HTTP server speaking just the part
of Stripe's API Dynoyard calls, so a top-up can be tried end to end with no internet.

Stripe stand-in (local, not Stripe): no money moves, no card is ever asked for.

API (form-encoded POSTs as the `stripe` library sends them, JSON answers with `object`
fields, errors in Stripe's shape `{"error": {"type", "message", "code", "param"}}`, an
`Idempotency-Key` on a POST replays the first answer):
- `POST /v1/customers`, `POST /v1/checkout/sessions` (its `url` is this server's own
  hosted page), `GET /v1/checkout/sessions/{id}`, `GET /v1/charges/{id}`,
  `GET /v1/payment_intents/{id}` (`expand[]=latest_charge` supported) and
  `POST /v1/payment_intents` with `confirm=true, off_session=true` (auto-recharge): the
  payment method `pm_card_chargeDeclined` (or any containing "declined") fails with a 402
  card error and a `payment_intent.payment_failed` event; any other succeeds with a charge
  and a `payment_intent.succeeded` event.
- `GET /pay/{session}`: the hosted page, with Pay (a choice of test cards) and Cancel. Pay
  marks the session paid, makes the payment intent and its charge, delivers a signed
  `checkout.session.completed` to the webhook URL and redirects to the success URL.

Test hooks (POST, JSON bodies; each delivers its event and answers the object):
- `/_standin/sessions/{id}/pay {"async": bool, "fail": bool, "card": "visa"}`: pay without
  the page. `async`: the session completes unpaid (`checkout.session.completed`,
  `payment_status` "unpaid"); the next `pay` of that session settles it
  (`checkout.session.async_payment_succeeded`, or `_failed` with `fail`).
- `/_standin/charges/{id}/refund {"amount"}` (cents; default: what is left): `charge.refunded`
  with the cumulative `amount_refunded`.
- `/_standin/charges/{id}/dispute {"amount"}`: `charge.dispute.created`;
  `/_standin/disputes/{id}/close {"status": "won"|"lost"}`: `charge.dispute.closed`.
- `/_standin/events/{id}/resend`: the same event delivered again (signed anew).
- `/_standin/lose_answers {"count"}`: the next `count` API POSTs are done but answered 500
  (a lost answer): the library's retry with the same Idempotency-Key gets the first result.
- `GET /_standin/events`: every event made, with the status of each delivery.

Events are signed with `stripe.WebhookSignature.generate_signature_header` and the webhook
secret, and delivered before the hook (or the Pay POST) answers.
"""

from __future__ import annotations

import html
import itertools
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import stripe
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

LABEL = "Stripe stand-in (local, not Stripe): no money moves"
API_VERSION = "2025-01-27.acacia"
# The hosted page's test cards: brand, last four, payment method id; "declined" fails.
TEST_CARDS: dict[str, tuple[str, str, str]] = {
    "visa": ("visa", "4242", "pm_card_visa"),
    "mastercard": ("mastercard", "4444", "pm_card_mastercard"),
    "declined": ("visa", "0002", "pm_card_chargeDeclined"),
}
_INDEX = re.compile(r"([^\[\]]+)|\[([^\[\]]*)\]")


class StripeError(Exception):
    def __init__(
        self, status: int, message: str, *, type: str = "invalid_request_error", **more: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"type": type, "message": message, **more}}


def missing(kind: str, object_id: str, param: str = "id") -> StripeError:
    return StripeError(404, f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


def parse_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding (`metadata[org_id]=x`, `line_items[0][quantity]=1`) back to
    nested dicts; numbered levels become lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = [a or b for a, b in _INDEX.findall(key)] or [key]
        node: Any = root
        for part, following in itertools.pairwise(parts):
            if following == "":  # `expand[]=x`: a list of values
                node.setdefault(part, []).append(value)
                break
            node = node.setdefault(part, {})
        else:
            node[parts[-1]] = value
    tidy: dict[str, Any] = _lists(root)
    return tidy


def _lists(node: Any) -> Any:
    if isinstance(node, dict):
        if node and all(k.isdigit() for k in node):
            return [_lists(node[k]) for k in sorted(node, key=int)]
        return {k: _lists(v) for k, v in node.items()}
    return node


def _true(value: Any) -> bool:
    return str(value).lower() == "true"


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


@dataclass
class Delivery:
    at: int
    status: int | None
    error: str | None = None


@dataclass
class StandIn:
    """Everything the stand-in knows, in memory. `webhook_url` may be set after start."""

    webhook_url: str | None
    webhook_secret: str
    secret_key: str | None = None  # None: any "sk_test_" key is accepted
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    charges: dict[str, dict[str, Any]] = field(default_factory=dict)
    disputes: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    deliveries: dict[str, list[Delivery]] = field(default_factory=dict)
    idempotent: dict[str, tuple[str, int, dict[str, Any]]] = field(default_factory=dict)
    # The next this many API POSTs are done but answered 500, as if the answer were lost.
    lose_answers: int = 0
    # The HTTP libraries API calls came through (the `stripe` library names its own).
    http_libraries: set[str] = field(default_factory=set)
    # Which session a payment intent paid, for the session's async settlement.
    _session_cards: dict[str, str] = field(default_factory=dict)

    # -- events ----------------------------------------------------------------------------

    async def emit(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        event_id = _new_id("evt")
        event: dict[str, Any] = {
            "id": event_id,
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()),
            "type": kind,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "data": {"object": json.loads(json.dumps(obj))},  # a snapshot, as Stripe sends
        }
        self.events[event_id] = event
        await self.deliver(event_id)
        return event

    async def deliver(self, event_id: str) -> Delivery:
        payload = json.dumps(self.events[event_id])
        record = Delivery(int(time.time()), None)
        if self.webhook_url is None:
            record.error = "no webhook URL configured"
        else:
            signature = stripe.WebhookSignature.generate_signature_header(
                payload, self.webhook_secret
            )
            headers = {"content-type": "application/json", "stripe-signature": signature}
            try:
                async with httpx.AsyncClient(timeout=30) as http:
                    answer = await http.post(self.webhook_url, content=payload, headers=headers)
                record.status = answer.status_code
            except httpx.HTTPError as exc:
                record.error = type(exc).__name__
        self.deliveries.setdefault(event_id, []).append(record)
        return record

    # -- objects ---------------------------------------------------------------------------

    def customer(self, params: dict[str, Any]) -> dict[str, Any]:
        found: dict[str, Any] = {
            "id": _new_id("cus"),
            "object": "customer",
            "created": int(time.time()),
            "email": params.get("email"),
            "metadata": params.get("metadata") or {},
            "livemode": False,
        }
        self.customers[found["id"]] = found
        return found

    def checkout(self, params: dict[str, Any], base_url: str) -> dict[str, Any]:
        if params.get("mode") != "payment":
            raise StripeError(400, "Only mode=payment is supported here.", param="mode")
        customer = params.get("customer")
        if customer is not None and customer not in self.customers:
            raise missing("customer", customer, "customer")
        for name in ("success_url", "cancel_url"):
            if not str(params.get(name, "")).startswith(("http://", "https://")):
                raise StripeError(400, f"Not a valid URL: {name}", param=name)
        try:
            (line,) = params["line_items"]
            price = line["price_data"]
            amount = int(price["unit_amount"])
            quantity = int(line.get("quantity", 1))
            currency = str(price["currency"]).lower()
        except (KeyError, ValueError, TypeError):
            raise StripeError(
                400, "One line item with price_data is expected.", param="line_items"
            ) from None
        if amount < 50 or quantity < 1:
            raise StripeError(400, "The amount must be at least 50 cents.", param="line_items")
        session_id = _new_id("cs_test")
        session = {
            "id": session_id,
            "object": "checkout.session",
            "amount_subtotal": amount * quantity,
            "amount_total": amount * quantity,
            "currency": currency,
            "customer": customer,
            "client_reference_id": params.get("client_reference_id"),
            "metadata": params.get("metadata") or {},
            "mode": "payment",
            "payment_intent": None,
            "payment_status": "unpaid",
            "status": "open",
            "success_url": params["success_url"],
            "cancel_url": params["cancel_url"],
            "url": f"{base_url.rstrip('/')}/pay/{session_id}",
            "created": int(time.time()),
            "livemode": False,
        }
        # Kept aside (not part of the session object Stripe answers with).
        session_data = params.get("payment_intent_data") or {}
        self.sessions[session_id] = session
        self._session_cards[session_id] = json.dumps(session_data)
        return session

    def _charge_for(
        self,
        amount: int,
        currency: str,
        customer: str | None,
        metadata: dict[str, Any],
        card: str,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        brand, last4, method = TEST_CARDS[card]
        intent_id, charge_id = _new_id("pi"), _new_id("ch")
        now = int(time.time())
        charge = {
            "id": charge_id,
            "object": "charge",
            "amount": amount,
            "amount_captured": amount,
            "amount_refunded": 0,
            "currency": currency,
            "customer": customer,
            "payment_intent": intent_id,
            "payment_method": method,
            "payment_method_details": {
                "type": "card",
                "card": {"brand": brand, "last4": last4, "exp_month": 12, "exp_year": 2034},
            },
            "metadata": metadata,
            "paid": True,
            "captured": True,
            "refunded": False,
            "disputed": False,
            "status": "succeeded",
            "created": now,
            "livemode": False,
        }
        intent = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_received": amount,
            "currency": currency,
            "customer": customer,
            "latest_charge": charge_id,
            "metadata": metadata,
            "payment_method": method,
            "status": "succeeded",
            "created": now,
            "livemode": False,
        }
        self.charges[charge_id], self.intents[intent_id] = charge, intent
        return intent, charge

    async def pay(self, session_id: str, *, card: str, later: bool, fail: bool) -> dict[str, Any]:
        session = self.sessions.get(session_id)
        if session is None:
            raise missing("checkout.session", session_id)
        if card not in TEST_CARDS:
            raise StripeError(400, f"Unknown test card: {card}", param="card")
        if session["status"] == "complete" and session["payment_status"] == "unpaid":
            return await self._settle(session, card=card, fail=fail)
        if session["status"] != "open":
            raise StripeError(400, f"This session is {session['status']}.", code="session_closed")
        if fail or card == "declined":
            raise StripeError(
                402, "Your card was declined.", type="card_error", code="card_declined"
            )
        session["status"] = "complete"
        if later:  # e.g. a bank debit: paid some days after the session completes
            await self.emit("checkout.session.completed", session)
            return session
        self._pay_now(session, card)
        await self.emit("checkout.session.completed", session)
        return session

    def _pay_now(self, session: dict[str, Any], card: str) -> None:
        data = json.loads(self._session_cards.get(session["id"], "{}"))
        intent, _ = self._charge_for(
            session["amount_total"],
            session["currency"],
            session["customer"],
            data.get("metadata") or {},
            card,
        )
        session["payment_intent"] = intent["id"]
        session["payment_status"] = "paid"

    async def _settle(self, session: dict[str, Any], *, card: str, fail: bool) -> dict[str, Any]:
        if fail:
            session["status"] = "complete"
            await self.emit("checkout.session.async_payment_failed", session)
            session["payment_status"] = "failed"  # once, even if settled again
            return session
        self._pay_now(session, card)
        await self.emit("checkout.session.async_payment_succeeded", session)
        return session

    async def recharge(self, params: dict[str, Any]) -> dict[str, Any]:
        if not (_true(params.get("confirm")) and _true(params.get("off_session"))):
            raise StripeError(400, "Only confirm=true, off_session=true is supported here.")
        try:
            amount = int(params["amount"])
            currency = str(params["currency"]).lower()
        except (KeyError, ValueError):
            raise StripeError(400, "amount and currency are required.", param="amount") from None
        customer, method = params.get("customer"), str(params.get("payment_method", ""))
        if customer not in self.customers:
            raise missing("customer", str(customer), "customer")
        if not method:
            raise StripeError(400, "A payment_method is required.", param="payment_method")
        metadata = params.get("metadata") or {}
        if "declined" in method.lower():
            intent = {
                "id": _new_id("pi"),
                "object": "payment_intent",
                "amount": amount,
                "amount_received": 0,
                "currency": currency,
                "customer": customer,
                "latest_charge": None,
                "metadata": metadata,
                "payment_method": method,
                "status": "requires_payment_method",
                "created": int(time.time()),
                "livemode": False,
            }
            self.intents[intent["id"]] = intent
            await self.emit("payment_intent.payment_failed", intent)
            raise StripeError(
                402,
                "Your card was declined.",
                type="card_error",
                code="card_declined",
                decline_code="generic_decline",
                payment_intent=intent,
            )
        card = next((k for k, v in TEST_CARDS.items() if v[2] == method), "visa")
        intent, _ = self._charge_for(amount, currency, customer, metadata, card)
        intent["payment_method"] = method
        await self.emit("payment_intent.succeeded", intent)
        return intent

    async def refund(self, charge_id: str, amount: int | None) -> dict[str, Any]:
        charge = self._charge(charge_id)
        left = charge["amount"] - charge["amount_refunded"]
        amount = left if amount is None else amount
        if not 0 < amount <= left:
            raise StripeError(400, f"Refund between 1 and {left} cents.", param="amount")
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        refund = {
            "id": _new_id("re"),
            "object": "refund",
            "amount": amount,
            "charge": charge_id,
            "currency": charge["currency"],
            "payment_intent": charge["payment_intent"],
            "status": "succeeded",
            "created": int(time.time()),
        }
        charge["refunds"] = {"object": "list", "data": [refund], "has_more": False}
        await self.emit("charge.refunded", charge)
        return charge

    async def dispute(self, charge_id: str, amount: int | None) -> dict[str, Any]:
        charge = self._charge(charge_id)
        found = {
            "id": _new_id("dp"),
            "object": "dispute",
            "amount": charge["amount"] if amount is None else amount,
            "charge": charge_id,
            "currency": charge["currency"],
            "payment_intent": charge["payment_intent"],
            "metadata": {},
            "reason": "fraudulent",
            "status": "needs_response",
            "created": int(time.time()),
            "livemode": False,
        }
        charge["disputed"] = True
        self.disputes[found["id"]] = found
        await self.emit("charge.dispute.created", found)
        return found

    async def close_dispute(self, dispute_id: str, status: str) -> dict[str, Any]:
        found = self.disputes.get(dispute_id)
        if found is None:
            raise missing("dispute", dispute_id)
        if status not in ("won", "lost"):
            raise StripeError(400, "status is won or lost.", param="status")
        found["status"] = status
        await self.emit("charge.dispute.closed", found)
        return found

    def _charge(self, charge_id: str) -> dict[str, Any]:
        found = self.charges.get(charge_id)
        if found is None:
            raise missing("charge", charge_id)
        return found


# -- HTTP --------------------------------------------------------------------------------


def standin(request: Request) -> StandIn:
    found: StandIn = request.app.state.standin
    return found


def _authorized(request: Request) -> None:
    try:
        agent = json.loads(request.headers.get("x-stripe-client-user-agent", "{}"))
        standin(request).http_libraries.add(str(agent.get("httplib", "unknown")))
    except (ValueError, AttributeError):
        standin(request).http_libraries.add("unknown")
    known = standin(request).secret_key
    header = request.headers.get("authorization", "")
    key = header.removeprefix("Bearer ").strip()
    if not key.startswith("sk_test_") or (known is not None and key != known):
        raise StripeError(401, "Invalid API Key provided.", code="invalid_api_key")


async def _form(request: Request) -> dict[str, Any]:
    """The body as Stripe reads it (application/x-www-form-urlencoded)."""
    body = (await request.body()).decode("utf-8", "replace")
    return parse_form(parse_qsl(body, keep_blank_values=True))


def _json(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={"request-id": _new_id("req")})


def api(handler: Any) -> Any:
    """An API route: the secret key checked, Stripe's error shape, POSTs replayed by their
    Idempotency-Key (the same key with other parameters: 400 idempotency_error)."""

    async def route(request: Request) -> Response:
        try:
            _authorized(request)
            if request.method != "POST":
                return _json(await handler(request, {}))
            params = await _form(request)
            key = request.headers.get("idempotency-key")
            state = standin(request)
            signature = json.dumps([request.url.path, params], sort_keys=True)
            if key and key in state.idempotent:
                seen, status, body = state.idempotent[key]
                if seen != signature:
                    raise StripeError(
                        400,
                        "Keys for idempotent requests can only be used with the same parameters.",
                        type="idempotency_error",
                    )
                return _json(body, status)
            try:
                status, body = 200, await handler(request, params)
            except StripeError as exc:
                status, body = exc.status, exc.body
            if key:
                state.idempotent[key] = (signature, status, body)
            if state.lose_answers > 0:  # done, but the caller never hears of it
                state.lose_answers -= 1
                lost = StripeError(
                    500, "The answer was lost (stand-in test hook).", type="api_error"
                )
                return _json(lost.body, lost.status)
            return _json(body, status)
        except StripeError as exc:
            return _json(exc.body, exc.status)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # odd parameters
            refused = StripeError(400, f"Invalid request ({type(exc).__name__}).")
            return _json(refused.body, refused.status)

    return route


def _expanded(request: Request) -> list[str]:
    query = request.query_params
    return query.getlist("expand[]") + [
        v for k, v in query.multi_items() if k.startswith("expand[")
    ]


@api
async def create_customer(request: Request, params: dict[str, Any]) -> dict[str, Any]:
    return standin(request).customer(params)


@api
async def create_session(request: Request, params: dict[str, Any]) -> dict[str, Any]:
    return standin(request).checkout(params, str(request.base_url))


@api
async def get_session(request: Request, params: dict[str, Any]) -> dict[str, Any]:
    session_id = request.path_params["id"]
    found = standin(request).sessions.get(session_id)
    if found is None:
        raise missing("checkout.session", session_id)
    return found


@api
async def get_charge(request: Request, params: dict[str, Any]) -> dict[str, Any]:
    return standin(request)._charge(request.path_params["id"])


@api
async def get_intent(request: Request, params: dict[str, Any]) -> dict[str, Any]:
    state, intent_id = standin(request), request.path_params["id"]
    found = state.intents.get(intent_id)
    if found is None:
        raise missing("payment_intent", intent_id)
    if "latest_charge" in _expanded(request) and found["latest_charge"]:
        return {**found, "latest_charge": state.charges[found["latest_charge"]]}
    return found


@api
async def create_intent(request: Request, params: dict[str, Any]) -> dict[str, Any]:
    return await standin(request).recharge(params)


# -- the hosted page -----------------------------------------------------------------------

_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{label}</title></head><body style="font-family:sans-serif;max-width:36em;margin:3em auto">
<p style="background:#fde68a;padding:.6em;border:2px solid #b45309"><strong>{label}.</strong>
This page stands in for Stripe Checkout on this machine; nothing is charged.</p>
{body}</body></html>"""


def page(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(label=LABEL, body=body), status_code=status)


async def hosted_page(request: Request) -> Response:
    session = standin(request).sessions.get(request.path_params["id"])
    if session is None:
        return page("<p>No such checkout session.</p>", 404)
    total = f"{session['amount_total'] / 100:.2f}"  # display only; amounts stay cents
    if session["status"] != "open":
        return page(f"<p>This checkout session is {html.escape(session['status'])}.</p>", 409)
    options = "".join(
        f'<option value="{name}">{brand} ending {last4}</option>'
        for name, (brand, last4, _) in TEST_CARDS.items()
    )
    action = html.escape(f"/pay/{session['id']}")
    return page(
        f"<h1>Pay {total} {html.escape(session['currency'].upper())}</h1>"
        f'<form method="post" action="{action}"><label>Test card '
        f'<select name="card">{options}</select></label> '
        '<button name="choice" value="pay">Pay</button> '
        '<button name="choice" value="cancel">Cancel</button></form>'
    )


async def hosted_submit(request: Request) -> Response:
    state, session_id = standin(request), request.path_params["id"]
    session = state.sessions.get(session_id)
    if session is None:
        return page("<p>No such checkout session.</p>", 404)
    form = await _form(request)
    if form.get("choice") == "cancel":
        return RedirectResponse(session["cancel_url"], status_code=303)
    try:
        await state.pay(session_id, card=str(form.get("card") or "visa"), later=False, fail=False)
    except StripeError as exc:
        return page(f"<p>{html.escape(str(exc))}</p>", exc.status)
    return RedirectResponse(session["success_url"], status_code=303)


# -- test hooks ----------------------------------------------------------------------------


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    found = json.loads(raw) if raw.strip() else {}
    if not isinstance(found, dict):
        raise StripeError(400, "A JSON object is expected.")
    return found


def hook(handler: Any) -> Any:
    async def route(request: Request) -> Response:
        try:
            return _json(await handler(standin(request), request, await _body(request)))
        except StripeError as exc:
            return _json(exc.body, exc.status)
        except (ValueError, TypeError) as exc:
            return _json(StripeError(400, str(exc)).body, 400)

    return route


def _cents(body: dict[str, Any]) -> int | None:
    amount = body.get("amount")
    return None if amount is None else int(amount)


@hook
async def hook_pay(state: StandIn, request: Request, body: dict[str, Any]) -> dict[str, Any]:
    return await state.pay(
        request.path_params["id"],
        card=str(body.get("card", "visa")),
        later=bool(body.get("async", False)),
        fail=bool(body.get("fail", False)),
    )


@hook
async def hook_refund(state: StandIn, request: Request, body: dict[str, Any]) -> dict[str, Any]:
    return await state.refund(request.path_params["id"], _cents(body))


@hook
async def hook_dispute(state: StandIn, request: Request, body: dict[str, Any]) -> dict[str, Any]:
    return await state.dispute(request.path_params["id"], _cents(body))


@hook
async def hook_close(state: StandIn, request: Request, body: dict[str, Any]) -> dict[str, Any]:
    return await state.close_dispute(request.path_params["id"], str(body.get("status", "")))


@hook
async def hook_lose(state: StandIn, request: Request, body: dict[str, Any]) -> dict[str, Any]:
    state.lose_answers = int(body.get("count", 1))
    return {"lose_answers": state.lose_answers}


@hook
async def hook_resend(state: StandIn, request: Request, body: dict[str, Any]) -> dict[str, Any]:
    event_id = request.path_params["id"]
    if event_id not in state.events:
        raise missing("event", event_id)
    delivered = await state.deliver(event_id)
    return {"id": event_id, "status": delivered.status, "error": delivered.error}


async def list_events(request: Request) -> Response:
    state = standin(request)
    return _json(
        {
            "object": "list",
            "http_libraries": sorted(state.http_libraries),
            "data": [
                {
                    **event,
                    "deliveries": [d.__dict__ for d in state.deliveries.get(event_id, [])],
                }
                for event_id, event in state.events.items()
            ],
        }
    )


def create_app(
    webhook_url: str | None, webhook_secret: str, secret_key: str | None = None
) -> Starlette:
    app = Starlette(
        routes=[
            Route("/v1/customers", create_customer, methods=["POST"]),
            Route("/v1/checkout/sessions", create_session, methods=["POST"]),
            Route("/v1/checkout/sessions/{id}", get_session, methods=["GET"]),
            Route("/v1/charges/{id}", get_charge, methods=["GET"]),
            Route("/v1/payment_intents", create_intent, methods=["POST"]),
            Route("/v1/payment_intents/{id}", get_intent, methods=["GET"]),
            Route("/pay/{id}", hosted_page, methods=["GET"]),
            Route("/pay/{id}", hosted_submit, methods=["POST"]),
            Route("/_standin/sessions/{id}/pay", hook_pay, methods=["POST"]),
            Route("/_standin/charges/{id}/refund", hook_refund, methods=["POST"]),
            Route("/_standin/charges/{id}/dispute", hook_dispute, methods=["POST"]),
            Route("/_standin/disputes/{id}/close", hook_close, methods=["POST"]),
            Route("/_standin/events/{id}/resend", hook_resend, methods=["POST"]),
            Route("/_standin/events", list_events, methods=["GET"]),
            Route("/_standin/lose_answers", hook_lose, methods=["POST"]),
        ]
    )
    app.state.standin = StandIn(webhook_url, webhook_secret, secret_key)
    return app
