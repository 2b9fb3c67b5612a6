"""DynamoDB round trips per request, counted inside the gateway.

Runs the app in this process (httpx.ASGITransport; the gateway still calls the fake
upstream over loopback), wraps the store's DynamoDB client and sends warm requests one at
a time: each call is counted by operation and timed (serialize, sign, round trip, parse); the
request's wall time minus its DynamoDB calls is the gateway's own share (upstream
call on loopback included), measured in the same process at the same moment.

Needs the same environment as the gateway (tables, DYNOYARD_MODELS_FILE,
AWS_ENDPOINT_URL_DYNAMODB) and BENCH_KEY. Prints one JSON line per kind of request.

    python bench/ddb_roundtrips.py -n 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections import Counter
from typing import Any

import httpx

from dynoyard.api.app import create_app


class DynamoCounter:
    def __init__(self) -> None:
        self.sends: Counter[str] = Counter()
        self.call_ms: list[float] = []

    def attach(self, client: Any) -> None:
        """Wraps DynamoClient.call: one count and one timing per operation."""
        original = client.call

        async def counted(operation: str, params: dict[str, Any], **options: Any) -> dict[str, Any]:
            began = time.perf_counter()
            try:
                return await original(operation, params, **options)  # type: ignore[no-any-return]
            finally:
                self.sends[operation] += 1
                self.call_ms.append((time.perf_counter() - began) * 1000)

        client.call = counted

    def reset(self) -> None:
        self.sends.clear()


def body(stream: bool) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Say hello in five words."}],
        "max_tokens": 16,
    }
    if stream:
        payload |= {"stream": True, "stream_options": {"include_usage": True}}
    return payload


async def measure(requests: int) -> list[dict[str, Any]]:
    app = create_app()
    store = app.state.runtime.store
    counter = DynamoCounter()
    counter.attach(store._db)
    headers = {"authorization": f"Bearer {os.environ['BENCH_KEY']}"}
    transport = httpx.ASGITransport(app=app)
    results = []
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        for stream in (False, True):
            per_request: list[Counter[str]] = []
            counter.call_ms.clear()
            # The first request of the process also reads the key (then cached in process).
            own_ms: list[float] = []  # request wall time minus its DynamoDB calls
            for i in range(requests + 1):
                counter.reset()
                calls_before = len(counter.call_ms)
                began = time.perf_counter()
                answer = await client.post(
                    "/v1/chat/completions", json=body(stream), headers=headers
                )
                wall_ms = (time.perf_counter() - began) * 1000
                own_ms.append(wall_ms - sum(counter.call_ms[calls_before:]))
                if answer.status_code != 200 or (stream and "[DONE]" not in answer.text):
                    raise SystemExit(f"request failed: {answer.status_code} {answer.text[:300]}")
                if i == 0:
                    first = dict(counter.sends)
                    counter.call_ms.clear()
                else:
                    per_request.append(Counter(counter.sends))
            total: Counter[str] = Counter()
            for sends in per_request:
                total.update(sends)
            calls = [sum(c.values()) for c in per_request]
            results.append(
                {
                    "kind": "stream" if stream else "chat",
                    "requests": requests,
                    "roundtrips_per_req": round(sum(calls) / len(calls), 3),
                    "by_operation_per_req": {
                        op: round(n / requests, 3) for op, n in sorted(total.items())
                    },
                    "first_request": first,
                    "ddb_call_ms_p50": round(statistics.median(counter.call_ms), 3),
                    "ddb_ms_per_req": round(sum(counter.call_ms) / requests, 3),
                    # In-process (no client socket), fake upstream on loopback included.
                    "request_minus_ddb_ms_p50": round(statistics.median(own_ms[1:]), 3),
                }
            )
    await app.state.runtime.gateway._upstream.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description="DynamoDB round trips per gateway request")
    parser.add_argument("-n", type=int, default=50, help="warm requests of each kind")
    args = parser.parse_args()
    for line in asyncio.run(measure(args.n)):
        print(json.dumps(line))


if __name__ == "__main__":
    main()
