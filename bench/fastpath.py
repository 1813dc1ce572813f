"""The price of stock Django and Channels: HTTP ingest and websocket fan-out with the framework overrides
(server/fastpath/) on and off, alternated in one run.

HTTP: `bench.web`'s measurement (wrk, deposits answered 202 and the update-in-place baseline, on one daphne)
with BANK_FASTPATH=true, then false, `--repeats` times, on the same scratch database and topics. Fan-out:
`bench.fanout`'s measurement (`--pages` websockets on one daphne, `--deposits` deposits), likewise, each time
with fresh processes. Each figure is the median over the repeats of its mode; the load average is printed
with each measurement, since the machine is shared. Writes bench/results/fastpath.json.

    .venv/bin/python -m bench.fastpath [--repeats 3] [--duration 5] [--pages 300] [--deposits 10] [--only http,fanout]
"""

from __future__ import annotations

import asyncio
import os
import statistics
from types import SimpleNamespace
from typing import Any

from bench import fanout, harness, web
from devservices.process import apt_install

MODES = {"on": "true", "off": "false"}


def http(args: Any) -> dict[str, list[dict[str, Any]]]:
    from django.conf import settings

    apt_install("wrk")
    kafka = harness.fresh_kafka("http")
    database_url = harness.use_bench_database(args.database or harness.scratch_name("bench"))
    username, password, accounts = web.make_customer(50)
    env = harness.production_env(kafka, database_url, settings.REDIS_URL, DJANGO_SETTINGS_MODULE="bench.settings")
    options = SimpleNamespace(
        duration=args.duration, warmup=2, connections=16, threads=2, rounds=1, profile=False,
        answered={"baseline": 0, "command": 0},
    )  # fmt: skip
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for repeat in range(args.repeats):
        for mode in MODES if repeat % 2 == 0 else reversed(MODES):
            tier = web.measure(1, env | {"BANK_FASTPATH": MODES[mode]}, username, password, accounts, options)
            run: dict[str, Any] = {
                side: {k: tier[side][k] for k in ("per_s", "p50_ms", "p99_ms", "errors", "server_cpu")}
                for side in ("command", "baseline")
            }
            for side in ("command", "baseline"):  # what a loaded machine distorts least: daphne's CPU per answer
                per_s = run[side]["per_s"]
                run[side]["cpu_ms_per_request"] = round(1000 * run[side]["server_cpu"] / per_s, 2) if per_s else None
            run["load_average_1m"] = round(os.getloadavg()[0], 2)
            runs[mode].append(run)
            print(f"  http, fast path {mode}: {run}", flush=True)
    return runs


def fan_out(args: Any) -> dict[str, list[dict[str, Any]]]:
    options = SimpleNamespace(
        pages=args.pages, storm=min(args.pages, 250), wave=250, deposits=args.deposits, interval=0.5, settle=2.0,
        drain=15.0,
    )  # fmt: skip
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for repeat in range(args.repeats):
        for mode in MODES if repeat % 2 == 0 else reversed(MODES):
            os.environ["BANK_FASTPATH"] = MODES[mode]  # the processes' environment (harness.worker_env)
            try:
                with harness.bank_processes("fanout", args.database, fanout.LOGS) as (_, port, workers):
                    figures = asyncio.run(fanout.measure(options, port, workers))
            finally:
                del os.environ["BANK_FASTPATH"]
            run = {
                "latency_ms": figures["latency_ms"],
                "last_page_ms": figures["last_page_ms"],
                "delivered": f"{figures['updates']['delivered']}/{figures['updates']['expected']}",
                "storm_s": figures["storm"]["seconds"],
                "daphne_cpu": figures["cpu_cores_busy_while_sending"].get("daphne"),
                "load_average_1m": round(os.getloadavg()[0], 2),
            }
            runs[mode].append(run)
            print(f"  fan-out, fast path {mode}: {run}", flush=True)
    return runs


def median(runs: list[dict[str, Any]], *path: str) -> float | None:
    values = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int | float):
            values.append(value)
    return round(statistics.median(values), 2) if values else None


def main() -> None:
    args = harness.arguments(__doc__, repeats=3, duration=5, pages=300, deposits=10, only="http,fanout", database=None)
    harness.setup_django()
    # One scratch database for every part, made anew by each: the process's database pool stays on the
    # database it first connected to, so a second name would be migrated through a connection to the first.
    args.database = args.database or harness.scratch_name("bench")
    chosen = args.only.split(",")
    figures: dict[str, Any] = {"repeats": args.repeats, "cpus": os.cpu_count()}
    rows = []
    if "http" in chosen:
        figures["http"] = runs = http(args)
        for side in ("command", "baseline"):
            for key, unit in (
                ("per_s", "req/s"),
                ("p99_ms", "ms p99"),
                ("cpu_ms_per_request", "daphne CPU ms/request"),
            ):
                on, off = median(runs["on"], side, key), median(runs["off"], side, key)
                rows.append((f"http {side} {unit}", f"on {on}   off {off}"))
    if "fanout" in chosen:
        figures["fanout"] = runs = fan_out(args)
        for path, label in (
            (("latency_ms", "p50"), "202 -> page p50 ms"),
            (("latency_ms", "p99"), "202 -> page p99 ms"),
            (("last_page_ms", "p50"), "last page p50 ms"),
            (("daphne_cpu",), "daphne cores while sending"),
            (("storm_s",), "storm seconds"),
        ):
            rows.append((f"fan-out {label}", f"on {median(runs['on'], *path)}   off {median(runs['off'], *path)}"))
    figures["load_average_1m"] = round(os.getloadavg()[0], 2)
    print(f"framework overrides on and off, medians of {args.repeats}, load average {figures['load_average_1m']}")
    print(harness.table(rows))
    harness.write_results("fastpath", figures)


if __name__ == "__main__":
    main()
