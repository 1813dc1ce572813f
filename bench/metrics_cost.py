"""What metrics cost: the processor's commands/s and the HTTP ingest figure with metrics on against off.

Runs bench.processor and bench.web as subprocesses, alternately with BANK_METRICS=true and false
(every metric a no-op), `--rounds` times each, and compares the medians — same machine, same run.
Aim: metrics on ≥ 0.95x off. Writes bench/results/metrics_cost.json.

    .venv/bin/python -m bench.metrics_cost [--rounds 2] [--commands 20000] [--duration 10]
"""

from __future__ import annotations

import os
import subprocess
import sys
from statistics import median

from bench.harness import ROOT, arguments, read_results, write_results


def measure(script: str, args: list[str], metrics_on: bool, result: str) -> dict[str, object]:
    env = {**os.environ, "BANK_METRICS": "true" if metrics_on else "false"}
    subprocess.run(
        [sys.executable, "-m", f"bench.{script}", *args], env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL
    )
    return read_results(result) or {}


def main() -> None:
    args = arguments(__doc__, rounds=2, commands=20_000, duration=10)
    processor: dict[bool, list[float]] = {True: [], False: []}
    http: dict[bool, list[float]] = {True: [], False: []}
    for round_ in range(args.rounds):
        for metrics_on in (round_ % 2 == 0, round_ % 2 == 1):  # alternate which goes first
            figures = measure("processor", ["--commands", str(args.commands)], metrics_on, "processor")
            processor[metrics_on].append(float(figures["processor_decided_per_s"]))  # type: ignore[arg-type]
            figures = measure("web", ["--duration", str(args.duration)], metrics_on, "http")
            http[metrics_on].append(float(figures["command"]["per_s"]))  # type: ignore[index]
            print(
                f"round {round_ + 1}, metrics {'on ' if metrics_on else 'off'}: processor "
                f"{processor[metrics_on][-1]:,.0f}/s, HTTP commands {http[metrics_on][-1]:,.1f}/s",
                flush=True,
            )
    on, off = median(processor[True]), median(processor[False])
    http_on, http_off = median(http[True]), median(http[False])
    summary = {
        "rounds": args.rounds,
        "processor_on_per_s": on,
        "processor_off_per_s": off,
        "http_on_per_s": http_on,
        "http_off_per_s": http_off,
        "processor_ratio": round(on / off, 3),
        "http_ratio": round(http_on / http_off, 3),
    }
    print(f"processor: {on:,.0f}/s with metrics, {off:,.0f}/s without: {summary['processor_ratio']}x")
    print(
        f"HTTP ingest: {http_on:,.1f}/s with metrics, {http_off:,.1f}/s without: {summary['http_ratio']}x (aim ≥ 0.95x)"
    )
    write_results("metrics_cost", summary)


if __name__ == "__main__":
    main()
