"""Run every benchmark, then print the headline figures and draw docs/performance.png.

    .venv/bin/python -m bench.run_all            # the full set, under 10 minutes on 2 cores
    .venv/bin/python -m bench.run_all --tiny     # every script on a tiny input (the smoke test)

Each figure is a ratio to a baseline measured in the same run, because absolute times on a shared machine
drift; raw figures are in bench/results/<name>.json. The plot needs matplotlib (not in requirements.txt).
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys
import time

from bench.harness import RESULTS, ROOT, arguments, read_results
from bench.summary import headline, plot

PLOT = ROOT / "docs" / "performance.png"
FULL = {
    "web": "--duration 15",
    "processor": "--commands 50000",
    "recovery": "--sizes 100000,1000000,5000000",
    "projection": "--events 1000000 --accounts 10000",
    "eventsourcing_baseline": "--events 1000000 --accounts 10000 --reuse --runner-budget 60",
    "latency": "--rates 50,100,150,200,300 --seconds 10",
    "fanout": "--pages 1000 --storm 500 --deposits 20",
    "transfers": "--transfers 4000 --rate 50 --seconds 10",
    "history": "--entries 1000000 --csv-entries 100000",
    "rebuild": "--events 1000000 --accounts 10000 --rate 50 --seconds 10",
}
TINY = {
    "web": "--duration 2 --warmup 1 --processes 1",
    "processor": "--commands 2000 --accounts 20",
    "recovery": "--sizes 2000 --accounts 20 --tail 100 --commands 2000 --compaction-wait 0",
    "projection": "--events 2000 --accounts 20",
    "eventsourcing_baseline": "--events 2000 --accounts 20",
    "latency": "--rates 20 --seconds 2 --drain 2 --web-processes 1",
    "fanout": "--pages 20 --storm 10 --deposits 3 --settle 0.5 --drain 5",
    "transfers": "--accounts 20 --deposits 200 --transfers 100 --rate 20 --seconds 2",
    "history": "--entries 3000 --small 100 --csv-entries 500 --repeat 2",
    "rebuild": "--events 2000 --accounts 20 --rate 20 --seconds 1 --drain 3",
}
RESULT_FILES = ("http", "processor", "recovery", "projection", "eventsourcing", "latency", "fanout")


def run(script: str, args: str) -> float:
    started = time.monotonic()
    print(f"\n=== python -m bench.{script} {args}", flush=True)
    subprocess.run([sys.executable, "-m", f"bench.{script}", *args.split()], check=True, cwd=ROOT)
    return time.monotonic() - started


def main() -> None:
    args = arguments(__doc__, tiny=False, only=None, no_plot=False, summary_only=False)
    plan = TINY if args.tiny else FULL
    chosen = [] if args.summary_only else args.only.split(",") if args.only else list(plan)
    durations = {script: run(script, plan[script]) for script in chosen}
    print(
        f"\nall benchmarks ran in {sum(durations.values()):.0f}s: "
        + ", ".join(f"{k} {v:.0f}s" for k, v in durations.items())
    )
    if args.tiny or args.no_plot:
        return
    figures = headline({name: found for name in RESULT_FILES if (found := read_results(name)) is not None})
    print("\n".join(figures["lines"]))
    meta = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
    }
    (RESULTS / "summary.json").write_text(json.dumps({**figures, **meta}, indent=2) + "\n")
    if importlib.util.find_spec("matplotlib") is None:
        print("no plot: install matplotlib into the venv to draw docs/performance.png")
        return
    plot(figures, PLOT, meta)
    print(f"plot: {PLOT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
