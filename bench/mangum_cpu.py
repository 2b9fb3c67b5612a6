"""CPU per request of the REST entrance: functions/gateway/app.py's handler (Mangum), called
in this process with API Gateway REST proxy events (events/chat_completion*.json), one at a
time, against the bench's DynamoDB and fake upstream (the environment run.sh sets up).

    python bench/mangum_cpu.py -n 1000        # one JSON line per kind (chat, stream)

`cpu_ms_per_req` is this process's user+system CPU (every thread) over the measured
requests: the handler, Mangum, the app and its DynamoDB and upstream calls, with no HTTP
server in front and no client, which is what a Lambda invocation behind API Gateway spends
(the Lambda runtime's own work aside). Compare with `gw CPU ms/req` at c=1 of the uvicorn
gateway (the streaming entrance's server), which also parses HTTP and writes to a socket.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROMPT = [{"role": "user", "content": "Say hello in five words."}]  # as load.py sends


class Context:
    """The Lambda context object's fields the handler and Powertools read."""

    function_name = "dynoyard-gateway"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:dynoyard-gateway"
    memory_limit_in_mb = 1024
    aws_request_id = "bench"
    log_group_name = "/aws/lambda/dynoyard-gateway"
    log_stream_name = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


def load_handler() -> Any:
    spec = importlib.util.spec_from_file_location("app", ROOT / "functions/gateway/app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["app"] = module
    spec.loader.exec_module(module)
    return module.handler


def make_event(key: str, stream: bool) -> dict[str, Any]:
    name = "chat_completion_stream.json" if stream else "chat_completion.json"
    event: dict[str, Any] = json.loads((ROOT / "events" / name).read_text())
    body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": PROMPT, "max_tokens": 16}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    event["body"] = json.dumps(body, separators=(",", ":"))
    event["headers"]["Authorization"] = f"Bearer {key}"
    event["multiValueHeaders"]["Authorization"] = [f"Bearer {key}"]
    return event


def measure(handler: Any, event: dict[str, Any], requests: int, warmup: int) -> dict[str, Any]:
    context = Context()
    for _ in range(warmup):
        _check(handler(copy.deepcopy(event), context))
    events = [copy.deepcopy(event) for _ in range(requests)]
    wall: list[float] = []
    cpu_before = time.process_time()
    for one in events:
        began = time.perf_counter()
        _check(handler(one, context))
        wall.append((time.perf_counter() - began) * 1000)
    cpu = time.process_time() - cpu_before
    return {
        "requests": requests,
        "cpu_ms_per_req": round(cpu * 1000 / requests, 3),
        "wall_ms_p50": round(statistics.median(wall), 3),
    }


def _check(response: dict[str, Any]) -> None:
    if response.get("statusCode") != 200:
        raise SystemExit(f"handler answered {response.get('statusCode')}: {response}"[:500])


def main() -> None:
    parser = argparse.ArgumentParser(description="CPU per request of the Mangum handler")
    parser.add_argument("-n", type=int, default=1000, help="measured requests of each kind")
    parser.add_argument("--warmup", type=int, default=100)
    args = parser.parse_args()
    handler = load_handler()
    key = os.environ["BENCH_KEY"]
    for stream in (False, True):
        result = measure(handler, make_event(key, stream), args.n, args.warmup)
        print(json.dumps({"entrance": "mangum", "kind": "stream" if stream else "chat", **result}))


if __name__ == "__main__":
    main()
