"""The unsubscribe link of non-essential email (the welcome sequence): it works without
signing in. The link carries a random token; only its SHA-256 is stored (`UNSUB#<sha256>`).

`GET /api/email/unsubscribe?token=…` answers a small page with a button and changes nothing
(mail scanners follow links). `POST /api/email/unsubscribe` opts the user out: the token in
the query (RFC 8058 one-click, body `List-Unsubscribe=One-Click`), a form field or JSON
`{"token": …}`. Posting a used token again answers the same (idempotent). No CSRF token: the
call needs the secret token, and all it can do is stop non-essential email.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from dynoyard.console.auth import runtime, sha256
from dynoyard.console.errors import bad_request

router = APIRouter(prefix="/api")

# secrets.token_urlsafe(32) is 43 characters; anything else is no token of ours.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{20,128}")
MAX_BODY_BYTES = 4096
# The token is in the address: no referrer, no cache, nothing loaded, the form posts here only.
_PAGE_HEADERS = {
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "x-frame-options": "DENY",
}


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    page = (
        '<!doctype html>\n<html lang="en">\n<head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>\n"
        '<body style="font-family:sans-serif;max-width:480px;margin:48px auto;padding:0 16px;">\n'
        f"<h1>{html.escape(title)}</h1>\n{body}\n</body>\n</html>\n"
    )
    return HTMLResponse(page, status_code=status, headers=_PAGE_HEADERS)


@router.get("/email/unsubscribe")
async def unsubscribe_page(request: Request) -> Response:
    token = request.query_params.get("token", "")
    if not _TOKEN.fullmatch(token):
        return _page("Unsubscribe", "<p>This unsubscribe link is not valid.</p>", status=400)
    form = (
        "<p>Stop the Dynoyard emails you do not need (such as the welcome series)? Sign-in "
        "links, invitations and billing alerts still come.</p>\n"
        '<form method="post" action="/api/email/unsubscribe">'
        f'<input type="hidden" name="token" value="{html.escape(token, quote=True)}">'
        '<button type="submit">Unsubscribe</button></form>'
    )
    return _page("Unsubscribe", form)


@router.post("/email/unsubscribe")
async def unsubscribe(request: Request) -> Response:
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise bad_request("The request body is too large.")
    is_json = request.headers.get("content-type", "").startswith("application/json")
    token = _token_in(body, is_json) or request.query_params.get("token", "")
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise bad_request("The unsubscribe token is missing or malformed.", param="token")
    user_id = await runtime(request).store.unsubscribe_user(sha256(token))
    if user_id is None:
        raise bad_request("This unsubscribe link is not valid.", param="token", code="bad_token")
    if is_json or "List-Unsubscribe=One-Click" in body.decode("utf-8", "replace"):
        return JSONResponse({"unsubscribed": True}, headers={"cache-control": "no-store"})
    return _page("Unsubscribed", "<p>You will receive no more non-essential Dynoyard email.</p>")


def _token_in(body: bytes, is_json: bool) -> Any:
    """The token a JSON object or a form gives; None when the body gives none."""
    if not body:
        return None
    if is_json:
        try:
            data = json.loads(body)
        except ValueError:
            raise bad_request("The body is not JSON.") from None
        return data.get("token") if isinstance(data, dict) else None
    try:
        values = parse_qs(body.decode("utf-8", "replace"), max_num_fields=8).get("token")
    except ValueError:
        raise bad_request("The form has too many fields.") from None
    return values[0] if values else None
