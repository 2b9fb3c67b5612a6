"""results.jsonl of one bench run -> the report tables (and the figures against the targets).

    python bench/report.py bench/results/<run>/results.jsonl [--ddb ddb.jsonl] [--imports imp.json]

Gateway figures are paired with `direct` from the same round, phase and concurrency
(`+p50 ms` = gateway p50 - direct p50, `rps/direct` = gateway rps / direct rps), then the
median over rounds is shown. The first line says which DynamoDB answered (DynamoDB Local or
bench/dynamo_standin.py) and which features were on, from the tags run.sh puts on each line.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

GATEWAY = "gateway"
DIRECT = "direct"


def load_lines(path: Path | None) -> list[dict[str, Any]]:
    if path is None or not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip().startswith("{")]


def med(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def fmt(value: float | None, digits: int = 2, pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value * 100:.1f}%" if pct else f"{value:.{digits}f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    out = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    out += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(out)


class Runs:
    """Measurements grouped by (phase, mode, c) then target then round."""

    def __init__(self, lines: list[dict[str, Any]]) -> None:
        self.by: dict[tuple[str, str, int], dict[str, dict[int, dict[str, Any]]]] = defaultdict(
            lambda: defaultdict(dict)
        )
        for line in lines:
            if "mode" not in line:
                continue
            key = (str(line.get("phase", "")), line["mode"], int(line["c"]))
            self.by[key][line["target"]][int(line["round"])] = line

    def phases(self) -> list[str]:
        return sorted({k[0] for k in self.by}, key=lambda p: float(p or 0))

    def keys(self, phase: str, mode: str) -> list[tuple[str, str, int]]:
        return sorted(k for k in self.by if k[0] == phase and k[1] == mode)

    def figure(self, key: tuple[str, str, int], target: str, name: str) -> float | None:
        return med([r.get(name) for r in self.by.get(key, {}).get(target, {}).values()])

    def added(self, key: tuple[str, str, int], name: str, ratio: bool = False) -> float | None:
        """gateway minus (or over) direct, paired by round, median over rounds."""
        targets = self.by.get(key, {})
        pairs = []
        for rnd, gw in targets.get(GATEWAY, {}).items():
            direct = targets.get(DIRECT, {}).get(rnd)
            if direct is None or gw.get(name) is None or direct.get(name) is None:
                continue
            if ratio:
                pairs.append(gw[name] / direct[name] if direct[name] else None)
            else:
                pairs.append(gw[name] - direct[name])
        return med(pairs)

    def gw_cpu(self, key: tuple[str, str, int]) -> float | None:
        rows = self.by.get(key, {}).get(GATEWAY, {}).values()
        return med([r.get("cpu_ms_per_req", {}).get("gateway") for r in rows])

    def gw_ddb_calls(self, key: tuple[str, str, int]) -> float | None:
        rows = self.by.get(key, {}).get(GATEWAY, {}).values()
        return med([r.get("ddb_calls_per_req") for r in rows])

    def errors(self, key: tuple[str, str, int], target: str) -> int:
        return sum(int(r.get("errors", 0)) for r in self.by[key].get(target, {}).values())

    def by_round(self, key: tuple[str, str, int], target: str, name: str) -> str:
        rounds = self.by[key].get(target, {})
        return "/".join(fmt(rounds[r].get(name)) for r in sorted(rounds))


def per_core(cpu_ms: float | None) -> str:
    """Requests per second one core could serve at this CPU per request."""
    return f"{1000 / cpu_ms:.0f}" if cpu_ms else "-"


def setup_line(lines: list[dict[str, Any]]) -> str:
    """Which DynamoDB answered and which features were on (run.sh's tags)."""
    tagged = [line for line in lines if "mode" in line]
    if not tagged:
        return "Setup: no measurements"
    first = tagged[0]
    dynamo = first.get("dynamo", "local")
    if dynamo == "standin":
        where = (
            "DynamoDB stand-in (bench/dynamo_standin.py: in memory, answers at once;"
            " measures the gateway, not DynamoDB)"
        )
    else:
        where = "DynamoDB Local"
    on = []
    if first.get("cache") == "1":
        on.append("response cache on (the same body every request)")
    if first.get("key_limits") == "1":
        on.append("key rpm/tpm/daily/monthly limits set")
    if first.get("org_rpm", "0") != "0":
        on.append(f"org rpm limit {first['org_rpm']}")
    features = ", ".join(on) if on else "no cache, no key limits, no org rpm limit"
    mixed = {(line.get("dynamo"), line.get("cache"), line.get("key_limits")) for line in tagged}
    note = " (WARNING: results of different setups mixed)" if len(mixed) > 1 else ""
    return f"Setup: {where}; {features}{note}"


def measured(runs: Runs, phase: str, mode: str) -> Iterator[tuple[Any, str, bool]]:
    """(key, target, is_gateway) for each measured target of a phase and mode, in order."""
    for key in runs.keys(phase, mode):
        for target in (DIRECT, GATEWAY):
            if target in runs.by[key]:
                yield key, target, target == GATEWAY


def chat_table(runs: Runs, phase: str) -> str:
    headers = ["target", "c", "rps", "p50 ms", "p99 ms", "+p50 ms", "+p99 ms", "rps/direct"]
    headers += ["gw CPU ms/req", "req/s/core", "upstream calls/req", "ddb calls/req"]
    headers += ["errors", "p50 by round"]
    rows = []
    for key, target, gw in measured(runs, phase, "chat"):
        rows.append(
            [
                target,
                str(key[2]),
                fmt(runs.figure(key, target, "rps"), 0),
                fmt(runs.figure(key, target, "p50_ms")),
                fmt(runs.figure(key, target, "p99_ms")),
                fmt(runs.added(key, "p50_ms")) if gw else "",
                fmt(runs.added(key, "p99_ms")) if gw else "",
                fmt(runs.added(key, "rps", ratio=True), pct=True) if gw else "",
                fmt(runs.gw_cpu(key), 3) if gw else "",
                per_core(runs.gw_cpu(key)) if gw else "",
                fmt(runs.figure(key, target, "upstream_calls_per_req"), 3),
                fmt(runs.gw_ddb_calls(key), 2) if gw else "",
                str(runs.errors(key, target)),
                runs.by_round(key, target, "p50_ms"),
            ]
        )
    return table(headers, rows)


def stream_table(runs: Runs, phase: str) -> str:
    headers = ["target", "c", "rps", "TTFT p50", "TTFT p99", "+TTFT p50", "+TTFT p99"]
    headers += ["total p50", "+total p50", "rps/direct", "gw CPU ms/req", "req/s/core"]
    headers += ["ddb calls/req", "errors"]
    rows = []
    for key, target, gw in measured(runs, phase, "stream"):
        rows.append(
            [
                target,
                str(key[2]),
                fmt(runs.figure(key, target, "rps"), 0),
                fmt(runs.figure(key, target, "ttft_p50_ms")),
                fmt(runs.figure(key, target, "ttft_p99_ms")),
                fmt(runs.added(key, "ttft_p50_ms")) if gw else "",
                fmt(runs.added(key, "ttft_p99_ms")) if gw else "",
                fmt(runs.figure(key, target, "p50_ms")),
                fmt(runs.added(key, "p50_ms")) if gw else "",
                fmt(runs.added(key, "rps", ratio=True), pct=True) if gw else "",
                fmt(runs.gw_cpu(key), 3) if gw else "",
                per_core(runs.gw_cpu(key)) if gw else "",
                fmt(runs.gw_ddb_calls(key), 2) if gw else "",
                str(runs.errors(key, target)),
            ]
        )
    return table(headers, rows)


def targets_section(
    runs: Runs,
    ddb: list[dict[str, Any]],
    imports: dict[str, Any],
    mangum: list[dict[str, Any]] | None = None,
) -> str:
    out = ["Against DESIGN.md 'Performance targets' (ms; all latency figures local, loopback):"]
    ddb_by = {d["kind"]: d for d in ddb}
    chat_ddb, stream_ddb = ddb_by.get("chat"), ddb_by.get("stream")
    base = runs.phases()[0] if runs.phases() else "0"
    add_p50 = runs.added((base, "chat", 1), "p50_ms")
    if add_p50 is not None:
        line = f"  added p50, non-stream, c=1: {add_p50:.2f} ms"
        if chat_ddb:
            over = add_p50 - chat_ddb["ddb_ms_per_req"]
            line += (
                f"; DynamoDB in it: {chat_ddb['roundtrips_per_req']:.2f} round trips/req,"
                f" {chat_ddb['ddb_ms_per_req']:.2f} ms/req measured in-process ->"
                f" {over:.2f} ms over the round trips (target <= 1; indicative only: the"
                " DynamoDB time is measured apart, unloaded, and DynamoDB Local varies by run)"
            )
            if "request_minus_ddb_ms_p50" in chat_ddb:
                own = chat_ddb["request_minus_ddb_ms_p50"]
                line += (
                    "\n    same, in-process (ddb_roundtrips.py, unloaded, upstream call included):"
                    f" request minus its DynamoDB calls p50 {own:.2f} ms"
                )
        out.append(line)
    add_ttft = runs.added((base, "stream", 1), "ttft_p50_ms")
    if add_ttft is not None:
        line = f"  added TTFT p50, stream, c=1: {add_ttft:.2f} ms"
        if stream_ddb:
            one = stream_ddb["ddb_call_ms_p50"]
            line += f" (target <= 1 + one DynamoDB round trip ~{one:.2f} = {1 + one:.2f})"
            if "request_minus_ddb_ms_p50" in stream_ddb:
                own = stream_ddb["request_minus_ddb_ms_p50"]
                line += f"; in-process, whole stream minus its DynamoDB calls p50 {own:.2f} ms"
        out.append(line)
    for mode, name in (("chat", "non-stream"), ("stream", "stream")):
        cpus = [(k[2], runs.gw_cpu(k)) for k in runs.keys(base, mode)]
        cpus = [(c, v) for c, v in cpus if v]
        if cpus:
            listed = ", ".join(f"c={c}: {v:.3f} ({1000 / v:.0f} req/s per core)" for c, v in cpus)
            out.append(f"  gateway CPU ms/req, {name}: {listed} (target <= 1)")
    if mangum:
        listed = ", ".join(
            f"{m['kind']}: {m['cpu_ms_per_req']:.3f} ({1000 / m['cpu_ms_per_req']:.0f} req/s per"
            f" core, wall p50 {m['wall_ms_p50']:.2f} ms)"
            for m in mangum
            if m.get("cpu_ms_per_req")
        )
        out.append(
            "  REST entrance, the Mangum handler in-process, one request at a time, CPU ms/req:"
            f" {listed}"
        )
    others = [
        line.get("other_busy_cores")
        for group in runs.by.values()
        for line in group.get(GATEWAY, {}).values()
    ]
    if any(v is not None for v in others):
        out.append(
            "  CPU outside the measured processes during the gateway measurements (the load"
            f" generator, and anything else on the host): median {med(others):.2f} cores,"
            f" most {max(v for v in others if v is not None):.2f}"
        )
    slow = [p for p in runs.phases() if float(p or 0) > 0]
    for phase in slow:
        ratio = runs.added((phase, "chat", 32), "rps", ratio=True)
        if ratio is not None:
            out.append(
                f"  throughput c=32 vs direct, {float(phase):g} ms upstream:"
                f" {ratio * 100:.1f}% (target >= 90%)"
            )
    for kind, d in ddb_by.items():
        ops = ", ".join(f"{op} {n:g}" for op, n in d["by_operation_per_req"].items())
        out.append(
            f"  DynamoDB round trips per warm {kind} request: {d['roundtrips_per_req']:g} ({ops});"
            f" first request of a process: {sum(d['first_request'].values())};"
            f" p50 {d['ddb_call_ms_p50']:.2f} ms per call"
        )
    if imports:
        out.append(
            f"  cold start, `{imports['stmt']}`: median {imports['median_ms']:.0f} ms of"
            f" {imports['runs']} (target <= 450), {imports['modules_imported']} modules"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description="bench report tables")
    parser.add_argument("results", type=Path)
    parser.add_argument("--ddb", type=Path)
    parser.add_argument("--imports", type=Path)
    parser.add_argument("--mangum", type=Path, help="bench/mangum_cpu.py's output")
    args = parser.parse_args()
    lines = load_lines(args.results)
    runs = Runs(lines)
    # Only the summary lines: the in-process app may print other JSON (EMF metrics).
    ddb = [line for line in load_lines(args.ddb) if "kind" in line]
    imports = (load_lines(args.imports) or [{}])[0]
    mangum = [line for line in load_lines(args.mangum) if line.get("entrance") == "mangum"]
    sections = [setup_line(lines), targets_section(runs, ddb, imports, mangum)]
    for phase in runs.phases():
        label = f"upstream latency {float(phase or 0):g} ms"
        if runs.keys(phase, "chat"):
            sections.append(f"Non-streaming chat ({label}):\n{chat_table(runs, phase)}")
        if runs.keys(phase, "stream"):
            sections.append(f"Streaming chat ({label}, TTFT = first non-empty delta.content):")
            sections[-1] += "\n" + stream_table(runs, phase)
    if imports:
        top = ", ".join(f"{n} {ms:.0f}" for n, ms in imports["top_cumulative_ms"].items())
        pkgs = ", ".join(f"{n} {ms:.0f}" for n, ms in imports["top_packages_self_ms"].items())
        sections.append(
            f"Cold start imports (ms): top cumulative: {top}\n  by package (own time): {pkgs}"
        )
    print("\n\n".join(sections))


if __name__ == "__main__":
    main()
