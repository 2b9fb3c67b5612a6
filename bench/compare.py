"""Key figures of several bench runs side by side: one row per run directory.

    python bench/compare.py bench/results/2026-11-25-A-standin bench/results/2026-11-25-B-standin

Columns: the setup (DynamoDB Local or the stand-in; cache, key limits, org rpm), the
gateway's CPU ms per request (non-stream c=1/8/32, stream c=1/8) and what one core could
serve at the c=32 figure, the Mangum handler's CPU ms per request (bench/mangum_cpu.py),
DynamoDB calls and upstream calls per request at c=32, throughput against direct at c=32
with the 50 ms upstream, and the CPU the host spent outside the measured processes (the load
generator and anything else running; from load.py's `other_busy_cores`, median).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from report import GATEWAY, Runs, load_lines


def setup_of(lines: list[dict[str, Any]]) -> str:
    first = next((line for line in lines if "mode" in line), {})
    parts = ["standin" if first.get("dynamo") == "standin" else "ddb-local"]
    if first.get("cache") == "1":
        parts.append("cache")
    if first.get("key_limits") == "1":
        parts.append("key-limits")
    if first.get("org_rpm", "0") != "0":
        parts.append("org-rpm")
    return "+".join(parts)


def figures(run: Path) -> dict[str, Any]:
    lines = load_lines(run / "results.jsonl")
    runs = Runs(lines)
    out: dict[str, Any] = {"run": run.name, "setup": setup_of(lines)}
    for mode, levels in (("chat", (1, 8, 32)), ("stream", (1, 8))):
        for c in levels:
            out[f"{mode} c={c}"] = runs.gw_cpu(("0", mode, c))
    c32 = out.get("chat c=32")
    out["req/s/core"] = round(1000 / c32) if c32 else None
    mangum = {m["kind"]: m for m in load_lines(run / "mangum.jsonl") if m.get("entrance")}
    out["mangum chat"] = mangum.get("chat", {}).get("cpu_ms_per_req")
    out["mangum stream"] = mangum.get("stream", {}).get("cpu_ms_per_req")
    rows = runs.by.get(("0", "chat", 32), {}).get(GATEWAY, {}).values()
    out["ddb calls"] = _median([r.get("ddb_calls_per_req") for r in rows])
    out["upstream calls"] = _median([r.get("upstream_calls_per_req") for r in rows])
    out["c=32 vs direct, 50 ms"] = runs.added(("50", "chat", 32), "rps", ratio=True)
    gateway_lines = [line for line in lines if line.get("target") == GATEWAY]
    out["other cores"] = _median([line.get("other_busy_cores") for line in gateway_lines])
    return out


def _median(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--json", action="store_true", help="one JSON line per run")
    args = parser.parse_args()
    rows = [figures(run) for run in args.runs]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return
    headers = list(rows[0])
    cells = [[_cell(row.get(h), h) for h in headers] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    print(" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for row_cells in cells:
        print(" | ".join(c.ljust(w) for c, w in zip(row_cells, widths, strict=True)))


def _cell(value: Any, header: str) -> str:
    if value is None:
        return "-"
    if header.startswith("c=32 vs"):
        return f"{value * 100:.1f}%"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


if __name__ == "__main__":
    main()
