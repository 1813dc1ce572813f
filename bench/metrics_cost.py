"""What metrics cost: the processor's commands/s and the HTTP ingest figure with metrics on against off.

Runs bench/processor.py and bench/web.py as subprocesses, alternately with BANK_METRICS=true
and false (every metric a no-op), `--rounds` times each, and compares the medians — same
machine, same run. Aim: metrics on ≥ 0.95x off. Writes bench/results/metrics_cost.json.

    .venv/bin/python bench/metrics_cost.py [--rounds 2] [--commands 20000] [--duration 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"


def run(script: str, args: list[str], metrics_on: bool, result: str) -> dict[str, object]:
    env = {**os.environ, "BANK_METRICS": "true" if metrics_on else "false"}
    subprocess.run([sys.executable, str(BENCH / script), *args], env=env, check=True, stdout=subprocess.DEVNULL)
    return dict(json.loads((RESULTS / f"{result}.json").read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--commands", type=int, default=20_000, help="commands per processor run")
    parser.add_argument("--duration", type=int, default=10, help="seconds per HTTP side")
    args = parser.parse_args()

    processor: dict[bool, list[float]] = {True: [], False: []}
    http: dict[bool, list[float]] = {True: [], False: []}
    for round_ in range(args.rounds):
        for metrics_on in (round_ % 2 == 0, round_ % 2 == 1):  # alternate which goes first
            figures = run("processor.py", ["--commands", str(args.commands)], metrics_on, "processor")
            processor[metrics_on].append(float(figures["processor_decided_per_s"]))  # type: ignore[arg-type]
            figures = run("web.py", ["--duration", str(args.duration)], metrics_on, "http")
            http[metrics_on].append(float(figures["command"]["per_s"]))  # type: ignore[index]
            print(
                f"round {round_ + 1}, metrics {'on ' if metrics_on else 'off'}: processor "
                f"{processor[metrics_on][-1]:,.0f}/s, HTTP commands {http[metrics_on][-1]:,.1f}/s",
                flush=True,
            )

    summary = {
        "benchmark": "metrics_cost",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "rounds": args.rounds,
        "processor_on_per_s": statistics.median(processor[True]),
        "processor_off_per_s": statistics.median(processor[False]),
        "http_on_per_s": statistics.median(http[True]),
        "http_off_per_s": statistics.median(http[False]),
    }
    summary["processor_ratio"] = round(summary["processor_on_per_s"] / summary["processor_off_per_s"], 3)  # type: ignore[operator]
    summary["http_ratio"] = round(summary["http_on_per_s"] / summary["http_off_per_s"], 3)  # type: ignore[operator]
    print(
        f"processor: {summary['processor_on_per_s']:,.0f}/s with metrics, {summary['processor_off_per_s']:,.0f}/s "
        f"without: {summary['processor_ratio']}x\n"
        f"HTTP ingest: {summary['http_on_per_s']:,.1f}/s with metrics, {summary['http_off_per_s']:,.1f}/s "
        f"without: {summary['http_ratio']}x (aim ≥ 0.95x)"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "metrics_cost.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
