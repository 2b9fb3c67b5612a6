"""CPU per DynamoDB call and import time of DynamoDB client modules, side by side.

    python bench/dynamo_client_cpu.py                  # the current client alone
    git show 86c7c29:layers/dynoyard/dynoyard/adapters/dynamo/client.py > /tmp/before.py
    python bench/dynamo_client_cpu.py --client before=/tmp/before.py \
        --client after=layers/dynoyard/dynoyard/adapters/dynamo/client.py

CPU: time.process_time() around blocks of `--block` GetItem, then UpdateItem (ADD on one
item, `idempotent=False`) calls, one at a time on one event loop, against DynamoDB Local
(`AWS_ENDPOINT_URL_DYNAMODB`, default http://127.0.0.1:8000). The clients take turns block
by block (`--rounds` rounds, after a warm-up), so a neighbour's load on this shared machine
falls on all of them alike. The process's own CPU only: DynamoDB Local's is not in it.

Import: a fresh interpreter that has already imported what every version shares (aiohttp,
the session helper, the ports) times loading the client module itself (`own`); `cold` is
the same with nothing preloaded. Medians over `--import-runs`.

Prints one JSON line per client and a readable line each.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LAYER = ROOT / "layers" / "dynoyard"
CLIENT_FILE = LAYER / "dynoyard" / "adapters" / "dynamo" / "client.py"
SHARED = ("aiohttp", "dynoyard.adapters.http_session", "dynoyard.domain.ports")
KEY = {"pk": {"S": "ORG#bench"}, "sk": {"S": "ORG"}}


def load_client_module(label: str, path: str) -> ModuleType:
    if str(LAYER) not in sys.path:
        sys.path.insert(0, str(LAYER))
    name = f"bench_dynamo_client_{label}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def table_params(table: str) -> dict[str, Any]:
    return {
        "TableName": table,
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }


async def measure_cpu(
    modules: dict[str, ModuleType], endpoint: str, rounds: int, block: int, warmup: int
) -> dict[str, dict[str, Any]]:
    clients = {
        label: m.DynamoClient(endpoint=endpoint, region="us-east-1") for label, m in modules.items()
    }
    first = next(iter(clients.values()))
    table = f"bench-cpu-{uuid.uuid4().hex[:8]}"
    await first.call("CreateTable", table_params(table))
    try:
        await first.call(
            "PutItem", {"TableName": table, "Item": {**KEY, "balance_usd": {"N": "1e9"}}}
        )
        calls = {
            "GetItem": ({"TableName": table, "Key": KEY}, True),
            "UpdateItem": (
                {
                    "TableName": table,
                    "Key": KEY,
                    "UpdateExpression": "ADD balance_usd :d",
                    "ConditionExpression": "balance_usd >= :zero",
                    "ExpressionAttributeValues": {":d": {"N": "-0.001"}, ":zero": {"N": "0"}},
                },
                False,
            ),
        }
        cpu = {label: {op: 0.0 for op in calls} for label in clients}
        wall = {label: {op: 0.0 for op in calls} for label in clients}
        for operation, (params, idempotent) in calls.items():
            for client in clients.values():
                for _ in range(warmup):
                    await client.call(operation, params, idempotent=idempotent)
            for _ in range(rounds):
                for label, client in clients.items():
                    began_cpu, began_wall = time.process_time(), time.perf_counter()
                    for _ in range(block):
                        await client.call(operation, params, idempotent=idempotent)
                    cpu[label][operation] += time.process_time() - began_cpu
                    wall[label][operation] += time.perf_counter() - began_wall
        total = rounds * block
        return {
            label: {
                op: {
                    "cpu_ms_per_call": round(cpu[label][op] * 1000 / total, 4),
                    "wall_ms_per_call": round(wall[label][op] * 1000 / total, 3),
                }
                for op in calls
            }
            for label in clients
        }
    finally:
        await first.call("DeleteTable", {"TableName": table})
        for client in clients.values():
            await client.aclose()


IMPORT_PROBE = """
import importlib.util, sys, time
for name in {preload!r}:
    __import__(name)
began = time.perf_counter()
spec = importlib.util.spec_from_file_location("bench_dynamo_client", {path!r})
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
print((time.perf_counter() - began) * 1000)
"""


def measure_import(client_file: str, runs: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(LAYER), "PYTHONDONTWRITEBYTECODE": "1"}

    def probe(preload: tuple[str, ...]) -> float:
        code = IMPORT_PROBE.format(preload=preload, path=client_file)
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=ROOT, check=True, capture_output=True
        )
        return float(done.stdout)

    probe(SHARED)  # warm the page cache
    own = statistics.median(probe(SHARED) for _ in range(runs))
    cold = statistics.median(probe(()) for _ in range(runs))
    return {"import_own_ms": round(own, 2), "import_cold_ms": round(cold, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--client",
        action="append",
        metavar="LABEL=PATH",
        help=f"a client.py to measure (repeatable); default current={CLIENT_FILE}",
    )
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--block", type=int, default=200, help="calls per turn")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--import-runs", type=int, default=9)
    parser.add_argument(
        "--endpoint",
        default=os.environ.get("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:8000"),
    )
    args = parser.parse_args()

    files = dict(item.split("=", 1) for item in args.client or [f"current={CLIENT_FILE}"])
    modules = {label: load_client_module(label, path) for label, path in files.items()}
    cpu = asyncio.run(measure_cpu(modules, args.endpoint, args.rounds, args.block, args.warmup))
    for label, path in files.items():
        imports = measure_import(path, args.import_runs)
        calls = args.rounds * args.block
        print(json.dumps({"label": label, "calls": calls, **cpu[label], **imports}))
        print(
            f"{label}: GetItem {cpu[label]['GetItem']['cpu_ms_per_call']:.3f} ms CPU/call, "
            f"UpdateItem {cpu[label]['UpdateItem']['cpu_ms_per_call']:.3f} ms CPU/call "
            f"({calls} calls each); import {imports['import_own_ms']} ms own, "
            f"{imports['import_cold_ms']} ms cold",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
