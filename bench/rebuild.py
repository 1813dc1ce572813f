"""Online rebuild: its events/s against the live projector and `replay`, and the live path while it runs.

On the whole bank as processes (processor, projector, daphne) and fresh topics: `--events` generated events are
produced to bank.events and applied by the live projector (its rate, from its checkpoints); then deposits at
`--rate`/s through the web with one customer's websocket open, first without a rebuild (the baseline), then
during `manage.py rebuild` of every projection (its own process, as an operator runs it): 202 → websocket
update p99, updates missing, the longest gap between two updates, the slowest page load. Last, `replay` (the
stop-the-world rebuild into the live tables) on the same log, also under the deposits, for its rate and its
gap. Every figure comes from this one run.

    .venv/bin/python -m bench.rebuild [--events 1000000] [--accounts 10000] [--rate 50]
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import subprocess
import time
import uuid
from typing import Any

import aiohttp

from bank import messages
from bank.kafka import end_offsets, producer
from bench import harness
from bench.harness import ROOT, Expected, generate, table
from bench.latency import PASSWORD, Browser, Record, evaluate, ms, pct, wait_for_accounts

LOGS = ROOT / "var" / "bench" / "rebuild"
FILLED = re.compile(r"filled g\d+: (\d+) events in ([\d.]+)s")
REPLAYED = re.compile(r"replayed (\d+) events .* in ([\d.]+)s")


def applied(kafka: Any) -> int:
    """Offsets the live projector's audit checkpoints have passed."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(sum(next_offset), 0) FROM projections_checkpoint WHERE projection = 'audit' AND topic = %s",
            [kafka.events_topic],
        )
        return int(cursor.fetchone()[0])


def live_projector_rate(kafka: Any, events: int) -> tuple[float, float]:
    """Produce the events and time the live projector through them: (events/s, seconds)."""
    expected = Expected()
    envelopes = (messages.encode(e) for e in generate(events, harness_accounts, expected))
    out = producer(kafka, **{"linger.ms": 50, "batch.size": 1_000_000, "queue.buffering.max.messages": 500_000})
    start = applied(kafka)
    harness.produce_all(out, kafka.events_topic, envelopes)
    end = sum(end_offsets(kafka, kafka.events_topic).values())
    first = None
    while (done := applied(kafka)) < end:
        if first is None and done > start:
            first = (time.perf_counter(), done)
        time.sleep(0.1)
    finished = time.perf_counter()
    begun, at = first or (finished, start)
    seconds = max(finished - begun, 1e-9)
    return (done - at) / seconds, seconds


harness_accounts = 10_000


async def browse(browser: Browser, url: str, stop: asyncio.Event, loads: list[float]) -> None:
    """The customer's account page, loaded again and again: how long each load takes."""
    while not stop.is_set():
        started = time.perf_counter()
        async with browser.session.get(url) as page:
            await page.read()
            if page.status != 200:
                raise SystemExit(f"GET {url} answered {page.status}")
        loads.append(time.perf_counter() - started)
        await asyncio.sleep(0.2)


def longest_gap(records: list[Record]) -> float:
    """The longest time between two consecutive websocket updates (seconds)."""
    stamps = sorted(r.update for r in records if r.update is not None)
    return max((b - a for a, b in itertools.pairwise(stamps)), default=0.0)


async def window(
    browser: Browser, account: str, rate: int, args: Any, during: subprocess.Popen[str] | None, seconds: float
) -> dict[str, Any]:
    """Deposits at `rate`/s while `during` runs (or for `seconds`): the live path's figures."""
    stop = asyncio.Event()
    loads: list[float] = []
    pages = asyncio.create_task(browse(browser, f"{browser.base}/accounts/{account}/", stop, loads))
    records: list[Record] = []
    lag: list[float] = []
    start = time.perf_counter() + 0.05
    i = 0
    tasks = []
    while True:
        scheduled = start + i / rate
        if (during is None and scheduled > start + seconds) or (during is not None and during.poll() is not None):
            break
        if (delay := scheduled - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        lag.append((time.perf_counter() - scheduled) * 1000)
        records.append(record := Record(account, str(uuid.uuid4()), scheduled))
        browser.records[record.command_id] = record
        tasks.append(asyncio.create_task(browser.deposit(record)))
        i += 1
    last = start + (i - 1) / rate
    await asyncio.wait(tasks, timeout=args.drain)
    deadline = last + args.drain
    while any(r.status == "202" and r.update is None for r in records) and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    stop.set()
    await pages
    figures = evaluate(rate, last - start, records, lag, deadline, last, [], 1000.0)
    figures |= {
        "longest_gap_s": round(longest_gap(records), 3),
        "page_load_ms": {"p50": pct([x * 1000 for x in loads], 50), "max": max(loads, default=0) * 1000},
        "page_loads": len(loads),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    return figures


def operator(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        harness.manage(*args), env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finished(process: subprocess.Popen[str], what: str) -> str:
    out = process.communicate(timeout=1800)[0]
    if process.returncode != 0:
        raise SystemExit(f"{what} failed:\n{out[-3000:]}")
    return out


async def measure(args: Any, kafka: Any, port: int, workers: list[harness.Process]) -> dict[str, Any]:
    from django.contrib.auth.models import User

    username = f"rebuild-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(User.objects.create_user, username, password=PASSWORD)
    env = workers[1].env
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=aiohttp.ClientTimeout(total=120)
    ) as session:
        browser = Browser(f"http://127.0.0.1:{port}", session)
        browser.csrf = await harness.log_in(session, browser.base, username, PASSWORD)
        account = await browser.open_account("Rebuild")
        await wait_for_accounts([account], workers)
        rate, projector_seconds = await asyncio.to_thread(live_projector_rate, kafka, args.events)
        print(f"  live projector: {rate:,.0f} events/s ({projector_seconds:.1f}s)", flush=True)
        listener = asyncio.create_task(browser.listen(f"ws://127.0.0.1:{port}/ws/live/"))
        await asyncio.wait_for(browser.ws_ready.wait(), 30)
        try:
            await window(browser, account, args.rate, args, None, 2.0)  # not measured: first renders
            baseline = await window(browser, account, args.rate, args, None, args.seconds)
            print(f"  baseline: p99 {ms(baseline['latency_ms']['p99'])} ms", flush=True)
            rebuilding = operator(env, "rebuild", "--no-progress")
            during = await window(browser, account, args.rate, args, rebuilding, 0)
            rebuilt = finished(rebuilding, "rebuild")
            print(f"  rebuild: p99 {ms(during['latency_ms']['p99'])} ms", flush=True)
            replaying = operator(env, "replay", "--noinput", "--no-progress")
            frozen = await window(browser, account, args.rate, args, replaying, 0)
            replayed = finished(replaying, "replay")
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
    fill = FILLED.search(rebuilt)
    old = REPLAYED.search(replayed)
    if fill is None or old is None:
        raise SystemExit(f"could not read the rates:\n{rebuilt[-2000:]}\n{replayed[-2000:]}")
    return {
        "projector_per_s": round(rate),
        "rebuild_fill_per_s": round(int(fill[1]) / float(fill[2])),
        "rebuild_fill_seconds": float(fill[2]),
        "rebuild_output": rebuilt.strip().splitlines()[-1],
        "replay_per_s": round(int(old[1]) / float(old[2])),
        "replay_seconds": float(old[2]),
        "baseline": baseline,
        "during_rebuild": during,
        "during_replay": frozen,
    }


def line(figures: dict[str, Any]) -> str:
    return (
        f"p99 {ms(figures['latency_ms']['p99']):>6} ms, missing {figures['updates_missing']:>3}, "
        f"errors {sum(figures['errors'].values()):>3}, longest gap {figures['longest_gap_s']:>5.2f}s, "
        f"slowest page {figures['page_load_ms']['max']:>6.0f} ms, load {figures['load_average_1m']:.1f}"
    )


def main() -> None:
    global harness_accounts
    args = harness.arguments(
        __doc__, events=1_000_000, accounts=10_000, rate=50, seconds=10.0, drain=5.0, database=None
    )
    harness_accounts = args.accounts
    harness.setup_django()
    database = args.database or harness.scratch_name("bench_rebuild")
    started = time.perf_counter()
    with harness.bank_processes("rebuild", database, LOGS) as (kafka, port, workers):
        result = asyncio.run(measure(args, kafka, port, workers))
    crashed = harness.tracebacks(workers)
    result |= {
        "events": args.events,
        "accounts": args.accounts,
        "rate": args.rate,
        "rebuild_vs_replay": round(result["rebuild_fill_per_s"] / result["replay_per_s"], 2),
        "rebuild_vs_projector": round(result["rebuild_fill_per_s"] / result["projector_per_s"], 2),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
        "worker_tracebacks": crashed,
        "run_seconds": round(time.perf_counter() - started, 1),
    }
    print(
        f"rebuild, {args.events:,} events over {args.accounts:,} accounts, deposits at {args.rate}/s through the web "
        f"(load average {result['load_average_1m']:.1f} on {os.cpu_count()} cores, shared)"
    )
    rate = "{:>9,} events/s".format
    print(
        table(
            [
                ("live projector", rate(result["projector_per_s"])),
                (
                    "replay (today: one transaction, TRUNCATE)",
                    f"{rate(result['replay_per_s'])} ({result['replay_seconds']:.1f}s)",
                ),
                (
                    "rebuild fill (COPY, indexes after)",
                    f"{rate(result['rebuild_fill_per_s'])} ({result['rebuild_fill_seconds']:.1f}s)",
                ),
                ("rebuild / replay", f"{result['rebuild_vs_replay']:.2f}x"),
                ("rebuild / live projector", f"{result['rebuild_vs_projector']:.2f}x"),
                ("live path, no rebuild", line(result["baseline"])),
                ("live path, during rebuild", line(result["during_rebuild"])),
                ("live path, during replay", line(result["during_replay"])),
            ]
        )
    )
    if crashed:
        print(f"tracebacks in the workers' logs ({LOGS}): {crashed}")
    harness.write_results("rebuild", result)


if __name__ == "__main__":
    main()
