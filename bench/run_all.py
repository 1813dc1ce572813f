"""Run every benchmark, then print the four headline figures and draw docs/performance.png.

    .venv/bin/python bench/run_all.py            # the full set, under 10 minutes on 2 cores
    .venv/bin/python bench/run_all.py --tiny     # every script on a tiny input (the smoke test)

Each figure is a ratio to a baseline measured in the same run, because absolute times on a
shared machine drift. Raw figures are in bench/results/<name>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# BENCH_RESULTS_DIR lets the smoke test write elsewhere than the committed figures.
RESULTS = Path(os.environ.get("BENCH_RESULTS_DIR") or ROOT / "bench" / "results")
PLOT = ROOT / "docs" / "performance.png"

FULL = {
    "web": ["--duration", "15"],
    "processor": ["--commands", "50000"],
    "projection": ["--events", "1000000", "--accounts", "10000"],
    "eventsourcing_baseline": ["--events", "1000000", "--accounts", "10000", "--reuse", "--runner-budget", "60"],
    "latency": ["--rates", "50,200,500", "--seconds", "10"],
    "transfers": ["--transfers", "5000", "--rate", "50", "--seconds", "10"],
}
TINY = {
    "web": ["--duration", "2"],
    "processor": ["--commands", "2000", "--accounts", "20"],
    "projection": ["--events", "2000", "--accounts", "20"],
    "eventsourcing_baseline": ["--events", "2000", "--accounts", "20"],
    "latency": ["--rates", "20", "--seconds", "2", "--no-find-max"],
    "transfers": ["--accounts", "20", "--deposits", "200", "--transfers", "100", "--rate", "20", "--seconds", "2"],
}
RESULT_FILES = {
    "web": "http",
    "processor": "processor",
    "projection": "projection",
    "eventsourcing_baseline": "eventsourcing",
    "latency": "latency",
    "transfers": "transfers",
}


def run(script: str, args: list[str]) -> float:
    started = time.monotonic()
    print(f"\n=== bench/{script}.py {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, str(ROOT / "bench" / f"{script}.py"), *args], check=True, cwd=ROOT)
    return time.monotonic() - started


def load(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="every script on a tiny input")
    parser.add_argument("--only", help="comma-separated scripts to run (default: all)")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--summary-only", action="store_true", help="redraw the summary and plot from bench/results")
    args = parser.parse_args()
    plan = TINY if args.tiny else FULL
    chosen = [] if args.summary_only else args.only.split(",") if args.only else list(plan)
    started = time.monotonic()
    durations = {script: run(script, plan[script]) for script in chosen}
    total = time.monotonic() - started
    print(f"\nall benchmarks ran in {total:.0f}s: " + ", ".join(f"{k} {v:.0f}s" for k, v in durations.items()))
    if args.tiny or args.no_plot:
        return
    from summary import headline, plot

    try:
        import matplotlib  # noqa: F401
    except ImportError:  # installed for the plot only, like eventsourcing for its comparison
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], check=True)

    figures = headline({file: load(file) for file in RESULT_FILES.values() if (RESULTS / f"{file}.json").exists()})
    for line in figures["lines"]:
        print(line)
    meta = {
        "machine": f"{platform.processor() or platform.machine()}, {_cores()} cores",
        "date": time.strftime("%Y-%m-%d"),
    }
    (RESULTS / "summary.json").write_text(json.dumps({**figures, **meta}, indent=2) + "\n")
    plot(figures, PLOT, meta)
    print(f"plot: {PLOT.relative_to(ROOT)}")


def _cores() -> int:
    return os.cpu_count() or 0


if __name__ == "__main__":
    main()
