"""Cold start: wall time of importing the gateway Lambda handler, in a fresh interpreter.

    python bench/import_time.py            # from the repository root
    python bench/import_time.py --runs 9 --stmt "import app" --pythonpath functions/gateway

Runs `python -c "<stmt>"` (default `import app` with PYTHONPATH=functions/gateway, the
handler module of functions/gateway/app.py, and DYNOYARD_MODELS_FILE=config/models.yaml)
--runs times and reports the median wall time, then once more under `-X importtime` for
the modules with the largest cumulative import time. The first run is not discarded:
the page cache is usually warm already; run it twice if in doubt. One JSON line on stdout
and a readable table on stderr (or only the table with --text).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def environment(pythonpath: str, models_file: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / pythonpath), env.get("PYTHONPATH", "")) if p
    )
    env["DYNOYARD_MODELS_FILE"] = models_file
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    env.pop("PYTHONIMPORTTIME", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # read the caches, never write them mid-measure
    return env


def wall_times(python: str, stmt: str, env: dict[str, str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run([python, "-c", stmt], env=env, cwd=ROOT, check=True)
        times.append((time.perf_counter() - began) * 1000)
    return times


def top_imports(
    python: str, stmt: str, env: dict[str, str], top: int
) -> tuple[list[tuple[str, float]], list[tuple[str, float]], int]:
    """(the `top` modules by cumulative import ms, the `top` top-level packages by the sum of
    their modules' own import ms, how many modules were imported)."""
    done = subprocess.run(
        [python, "-X", "importtime", "-c", stmt],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    packages: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self_us, cumulative_us, name = line.removeprefix("import time:").split("|", 2)
        rows.append((name.strip(), int(cumulative_us) / 1000))
        package = name.strip().split(".")[0]
        packages[package] = packages.get(package, 0.0) + int(_self_us) / 1000
    # A module's cumulative time includes the imports it triggered, so parents and their
    # children both appear near the top.
    rows.sort(key=lambda row: row[1], reverse=True)
    by_package = sorted(packages.items(), key=lambda row: row[1], reverse=True)
    return rows[:top], by_package[:top], len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description="import wall time of the gateway handler")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--stmt", default="import app")
    parser.add_argument("--pythonpath", default="functions/gateway")
    parser.add_argument("--models-file", default="config/models.yaml")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--text", action="store_true", help="only the readable table")
    args = parser.parse_args()

    env = environment(args.pythonpath, args.models_file)
    baseline = statistics.median(wall_times(args.python, "pass", env, 3))
    times = wall_times(args.python, args.stmt, env, args.runs)
    top, by_package, modules = top_imports(args.python, args.stmt, env, args.top)
    result = {
        "stmt": args.stmt,
        "runs": args.runs,
        "median_ms": round(statistics.median(times), 1),
        "min_ms": round(min(times), 1),
        "max_ms": round(max(times), 1),
        "bare_interpreter_ms": round(baseline, 1),
        "modules_imported": modules,
        "top_cumulative_ms": {name: round(ms, 1) for name, ms in top},
        "top_packages_self_ms": {name: round(ms, 1) for name, ms in by_package},
    }
    lines = [
        f"cold start: `{args.stmt}` (PYTHONPATH={args.pythonpath}): median {result['median_ms']} ms"
        f" of {args.runs} (min {result['min_ms']}, max {result['max_ms']}; bare interpreter"
        f" {result['bare_interpreter_ms']} ms, included), {modules} modules imported",
        "  top modules by cumulative import time (-X importtime, one run):",
        *(f"    {ms:8.1f} ms  {name}" for name, ms in top),
        "  top packages by their modules' own import time (same run):",
        "    " + ", ".join(f"{name} {ms:.0f}" for name, ms in by_package) + " (ms)",
    ]
    if not args.text:
        print(json.dumps(result))
    print("\n".join(lines), file=sys.stderr if not args.text else sys.stdout)


if __name__ == "__main__":
    main()
