"""One closed-loop measurement at one concurrency; prints one JSON line.

    python bench/load.py chat   --base-url http://127.0.0.1:18080/v1 --key sk-... -c 8 -d 10
    python bench/load.py stream --base-url http://127.0.0.1:18000/v1 --key x -c 1 -d 10

`chat`: non-streaming chat completions through `wrk` (bench/wrk_chat.lua) when wrk is on
PATH, else (or with --engine python) a Python asyncio client on raw sockets.
`stream`: the Python client, recording per stream the time to the first body byte (TTFB),
to the first SSE event with non-empty `delta.content` (TTFT) and to the end (total).

Closed loop: `c` connections, each sending its next request when the previous answer is
complete, for `d` seconds. With `--cpu-pid name=PID` the user+system CPU of that process
and all its descendants (from /proc) is reported per completed request, with the whole
host's busy CPU (`host_busy_cores`) and what the measured trees do not account for
(`other_busy_cores`: the load generator and anything else running); with
`--dynamo-stats URL` (bench/dynamo_standin.py's /stats) the DynamoDB calls per completed
request, by operation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BENCH_DIR = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROMPT = [{"role": "user", "content": "Say hello in five words."}]


# -- CPU of a process tree, from /proc ---------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def tree_cpu_seconds(pid: int) -> float:
    """user+system CPU of `pid` and its live descendants (and their reaped children)."""
    children = _children_map()
    total_ticks = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is field 3 (state); utime, stime, cutime, cstime are fields 14-17.
        total_ticks += sum(int(v) for v in fields[11:15])
        todo.extend(children.get(current, []))
    return total_ticks / CLK_TCK


# -- helpers ------------------------------------------------------------------------------


def percentile(sorted_values: list[float], p: float) -> float | None:
    if not sorted_values:
        return None
    rank = max(1, round(p / 100 * len(sorted_values) + 0.5 - 1e-9))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.loads(answer.read())


def upstream_calls(url: str | None) -> int | None:
    if not url:
        return None
    try:
        return sum(int(v) for v in get_json(url).values())
    except (OSError, ValueError):
        return None


def host_busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs, from /proc/stat (busy: not idle or iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4], sum(fields)


def dynamo_calls(url: str | None) -> dict[str, int] | None:
    if not url:
        return None
    try:
        return {op: int(n) for op, n in get_json(url)["calls"].items()}
    except (OSError, ValueError, KeyError):
        return None


def request_body(model: str, stream: bool) -> bytes:
    payload: dict[str, Any] = {"model": model, "messages": PROMPT, "max_tokens": 16}
    if stream:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    return json.dumps(payload, separators=(",", ":")).encode()


@dataclass
class Target:
    host: str
    port: int
    path: str  # .../chat/completions

    @classmethod
    def from_base(cls, base_url: str) -> Target:
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme != "http" or not parts.hostname:
            raise SystemExit(f"--base-url must be http://host:port/...: {base_url}")
        return cls(parts.hostname, parts.port or 80, parts.path + "/chat/completions")


def raw_request(target: Target, key: str, body: bytes, headers: list[str]) -> bytes:
    lines = [
        f"POST {target.path} HTTP/1.1",
        f"Host: {target.host}:{target.port}",
        "Content-Type: application/json",
        f"Authorization: Bearer {key}",
        f"Content-Length: {len(body)}",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# -- a minimal HTTP/1.1 keep-alive client ---------------------------------------------------


class HttpError(Exception):
    pass


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def iter_body(reader: asyncio.StreamReader, headers: dict[bytes, bytes]):  # type: ignore[no-untyped-def]
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # end of (empty) trailers
                return
            data = await reader.readexactly(size + 2)
            yield data[:-2]
    elif b"content-length" in headers:
        length = int(headers[b"content-length"])
        if length:
            yield await reader.readexactly(length)
    else:
        yield await reader.read()


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)  # ms, requests done by the deadline
    ttfb: list[float] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)
    errors: int = 0
    late: int = 0  # completed after the deadline (not counted in rps)
    error_samples: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 3:
            self.error_samples.append(what[:300])


async def worker(
    target: Target, request: bytes, stream: bool, deadline: float, stats: Stats
) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while time.perf_counter() < deadline:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(target.host, target.port)
            assert reader is not None
            started = time.perf_counter()
            writer.write(request)
            status, headers = await read_head(reader)
            first_byte = first_token = None
            done = False
            body = bytearray()
            async for piece in iter_body(reader, headers):
                if first_byte is None:
                    first_byte = time.perf_counter()
                if not stream:
                    body += piece
                    continue
                body += piece
                if first_token is None and _has_content(body):
                    first_token = time.perf_counter()
                if b"data: [DONE]" in body[-64:]:
                    done = True
            ended = time.perf_counter()
            if headers.get(b"connection", b"").lower() == b"close":
                writer.close()
                reader = writer = None
            if status != 200:
                stats.error(f"status {status}: {bytes(body[:200])!r}")
                continue
            if stream and (not done or first_token is None):
                stats.error(f"stream without content or [DONE]: {bytes(body[-200:])!r}")
                continue
            if ended > deadline:
                stats.late += 1
                continue
            stats.latencies.append((ended - started) * 1000)
            if stream:
                assert first_byte is not None and first_token is not None
                stats.ttfb.append((first_byte - started) * 1000)
                stats.ttft.append((first_token - started) * 1000)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
            stats.error(f"{type(e).__name__}: {e}")
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


def _has_content(buffer: bytearray) -> bool:
    """True once a complete SSE event with a non-empty delta.content is in `buffer`."""
    for event in bytes(buffer).split(b"\n\n")[:-1]:
        for line in event.split(b"\n"):
            if not line.startswith(b"data:") or b'"content"' not in line:
                continue
            try:
                payload = json.loads(line[5:])
            except ValueError:
                continue
            for choice in payload.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    return True
    return False


async def python_load(
    target: Target, request: bytes, stream: bool, concurrency: int, duration: float
) -> tuple[Stats, float]:
    stats = Stats()
    began = time.perf_counter()
    deadline = began + duration
    await asyncio.gather(
        *(worker(target, request, stream, deadline, stats) for _ in range(concurrency))
    )
    return stats, duration


def run_python(args: argparse.Namespace, stream: bool) -> dict[str, Any]:
    target = Target.from_base(args.base_url)
    request = raw_request(target, args.key, request_body(args.model, stream), args.header)
    try:
        import uvloop  # type: ignore[import-not-found]

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    cpu_before = time.process_time()
    stats, duration = runner(python_load(target, request, stream, args.c, args.d))
    client_cpu = time.process_time() - cpu_before
    lat = sorted(stats.latencies)
    done = len(lat)
    out: dict[str, Any] = {
        "engine": "python",
        "requests": done,
        "completed_total": done + stats.late,
        "rps": round(done / duration, 1),
        "errors": stats.errors,
        "mean_ms": round(sum(lat) / done, 3) if done else None,
        **{f"p{p}_ms": _r(percentile(lat, p)) for p in (50, 90, 99)},
        "client_cpu_ms_per_req": round(client_cpu * 1000 / max(done + stats.late, 1), 3),
    }
    if stream:
        ttfb, ttft = sorted(stats.ttfb), sorted(stats.ttft)
        out |= {
            "ttfb_p50_ms": _r(percentile(ttfb, 50)),
            "ttft_p50_ms": _r(percentile(ttft, 50)),
            "ttft_p90_ms": _r(percentile(ttft, 90)),
            "ttft_p99_ms": _r(percentile(ttft, 99)),
        }
    if stats.error_samples:
        out["error_samples"] = stats.error_samples
    return out


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# -- wrk ------------------------------------------------------------------------------------


def run_wrk(args: argparse.Namespace) -> dict[str, Any]:
    url = args.base_url.rstrip("/") + "/chat/completions"
    env = dict(
        os.environ,
        BENCH_KEY=args.key,
        BENCH_BODY=request_body(args.model, False).decode(),
        BENCH_HEADERS="\n".join(args.header),
    )
    command = [
        "wrk",
        "-t",
        str(max(1, min(args.wrk_threads, args.c))),
        "-c",
        str(args.c),
        "-d",
        f"{args.d:g}s",
        "--timeout",
        "10s",
        "-s",
        str(BENCH_DIR / "wrk_chat.lua"),
        url,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK_RESULT ")), None)
    if line is None:
        raise SystemExit(f"wrk failed ({done.returncode}): {done.stdout[-500:]} {done.stderr}")
    raw = json.loads(line.removeprefix("WRK_RESULT "))
    seconds = raw["duration_us"] / 1e6
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    ok = raw["requests"] - raw["status"]
    return {
        "engine": "wrk",
        "requests": ok,
        "completed_total": raw["requests"],
        "rps": round(ok / seconds, 1),
        "errors": errors,
        "mean_ms": round(raw["mean_us"] / 1000, 3),
        **{f"p{p}_ms": round(raw[f"p{p}_us"] / 1000, 3) for p in (50, 90, 99)},
    }


# -- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description="one closed-loop measurement, one JSON line")
    parser.add_argument("mode", choices=["chat", "stream"])
    parser.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:18080/v1")
    parser.add_argument("--key", default="sk-bench")
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("-c", type=int, default=1, help="concurrent connections")
    parser.add_argument("-d", type=float, default=10.0, help="seconds")
    parser.add_argument("-H", "--header", action="append", default=[], help="'Name: value'")
    parser.add_argument("--engine", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--label", default="", help="target name, copied to the output")
    parser.add_argument("--round", type=int, default=1)
    parser.add_argument("--upstream-stats", help="fake upstream /stats URL (calls per request)")
    parser.add_argument("--dynamo-stats", help="DynamoDB stand-in /stats URL (calls per request)")
    parser.add_argument(
        "--cpu-pid", action="append", default=[], help="name=PID: CPU ms/req of that tree"
    )
    parser.add_argument("--tag", action="append", default=[], help="key=value, copied out")
    args = parser.parse_args()

    pids = {}
    for spec in args.cpu_pid:
        name, _, pid = spec.partition("=")
        pids[name] = int(pid)
    calls_before = upstream_calls(args.upstream_stats)
    ddb_before = dynamo_calls(args.dynamo_stats)
    host_before = host_busy_jiffies()
    cpu_before = {name: tree_cpu_seconds(pid) for name, pid in pids.items()}

    stream = args.mode == "stream"
    use_wrk = not stream and args.engine != "python" and shutil.which("wrk") is not None
    if args.engine == "wrk" and not use_wrk:
        raise SystemExit("--engine wrk: wrk is not on PATH (or the mode is stream)")
    result = run_wrk(args) if use_wrk else run_python(args, stream)

    cpu_after = {name: tree_cpu_seconds(pid) for name, pid in pids.items()}
    calls_after = upstream_calls(args.upstream_stats)
    ddb_after = dynamo_calls(args.dynamo_stats)
    host_after = host_busy_jiffies()
    completed = max(result["completed_total"], 1)
    line: dict[str, Any] = {
        "mode": args.mode,
        "target": args.label or args.base_url,
        "c": args.c,
        "round": args.round,
        "duration_s": args.d,
        **dict(tag.split("=", 1) for tag in args.tag),
        **result,
        "cpu_ms_per_req": {
            name: round((cpu_after[name] - cpu_before[name]) * 1000 / completed, 3) for name in pids
        },
    }
    busy, total = (after - before for before, after in zip(host_before, host_after, strict=True))
    cpus = os.cpu_count() or 1
    # Cores' worth of CPU used on the whole host; minus the measured trees: everyone else's.
    line["host_busy_cores"] = round(busy / total * cpus, 2) if total else None
    if line["host_busy_cores"] is not None and pids:
        measured = sum(line["cpu_ms_per_req"].values()) * completed / 1000 / args.d
        line["other_busy_cores"] = round(max(line["host_busy_cores"] - measured, 0.0), 2)
    if calls_before is not None and calls_after is not None:
        line["upstream_calls_per_req"] = round((calls_after - calls_before) / completed, 3)
    if ddb_before is not None and ddb_after is not None:
        by_op = {
            op: round((n - ddb_before.get(op, 0)) / completed, 3)
            for op, n in sorted(ddb_after.items())
            if n != ddb_before.get(op, 0)
        }
        line["ddb_calls_per_req"] = round(sum(by_op.values()), 3)
        line["ddb_calls_per_req_by_op"] = by_op
    sys.stdout.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
