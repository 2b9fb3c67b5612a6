"""A DynamoDB endpoint that answers like a busy table: a real HTTP server on 127.0.0.1 that
forwards every call to DynamoDB Local, except that a share of the writes to an item are
refused the way DynamoDB refuses writes that meet a running transaction (nothing applied).
DynamoDB Local serializes writes, so it never produces these conflicts by itself."""

from __future__ import annotations

import json
import random
from collections import Counter

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

CONFLICTED = ("DynamoDB_20120810.UpdateItem", "DynamoDB_20120810.TransactWriteItems")
JSON_1_0 = "application/x-amz-json-1.0"


class ConflictProxy:
    def __init__(self, target: str, share: float, seed: int = 7) -> None:
        self.target = target.rstrip("/")
        self.share = share
        self.injected: Counter[str] = Counter()
        self._random = random.Random(seed)
        self._client: httpx.AsyncClient | None = None
        self.app = Starlette(routes=[Route("/", self.handle, methods=["POST"])])

    async def handle(self, request: Request) -> Response:
        target = request.headers.get("x-amz-target", "")
        body = await request.body()
        if target in CONFLICTED and self._random.random() < self.share:
            self.injected[target.rpartition(".")[2]] += 1
            return Response(_conflict(target, body), status_code=400, media_type=JSON_1_0)
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=10)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host",)}
        answer = await self._client.post(self.target + "/", content=body, headers=headers)
        return Response(answer.content, status_code=answer.status_code, media_type=JSON_1_0)


def _conflict(target: str, body: bytes) -> bytes:
    if target.endswith("TransactWriteItems"):
        count = len(json.loads(body).get("TransactItems", []))
        reasons = [{"Code": "TransactionConflict", "Message": "Transaction is ongoing"}]
        reasons += [{"Code": "None"}] * (count - 1)
        return json.dumps(
            {
                "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
                "message": "Transaction cancelled, please refer cancellation reasons for specific"
                " reasons [TransactionConflict]",
                "CancellationReasons": reasons,
            }
        ).encode()
    return json.dumps(
        {
            "__type": "com.amazonaws.dynamodb.v20120810#TransactionConflictException",
            "message": "Transaction is ongoing for the item",
        }
    ).encode()
