"""HTTP ingest: deposit commands (202 once Kafka confirmed them) against update-in-place (200), through daphne.

The web tier as deployed (DEBUG off, bench/baseline.py mounted): daphne processes sharing one port under
supervisord, 1 and then N (`--processes 1,auto`: WEB_PROCESSES, else one per core), a scratch database and fresh
topics; `wrk` (bench/wrk_post.lua) logged in as a browser drives each side with the same connections and duration,
after a warm-up, on the same processes. `--profile` adds an uncounted run per side with py-spy on every daphne
and prints the heaviest functions. Other answers, socket errors and timeouts are errors, not req/s. Afterwards
the commands topic and the balance rows must hold what was answered. No processor runs: the write path up to
"durably in Kafka".

    .venv/bin/python -m bench.web [--duration 15] [--connections 16] [--threads 2] [--rounds 1] [--warmup 3]
                                  [--processes 1,auto] [--profile]
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from bank.config import KafkaSettings
from bank.kafka import read_to_end
from bench import harness
from devservices.process import apt_install, free_port

LUA = Path(__file__).resolve().with_name("wrk_post.lua")
LOGS = harness.ROOT / "var" / "bench" / "http"
EXPECTED = {"baseline": 200, "command": 202}
Run = dict[str, Any]  # one wrk run's figures


def make_customer(accounts: int) -> tuple[str, str, list[str]]:
    """A fresh user with `accounts` accounts, as projection rows (command side) and balance rows (baseline)."""
    from django.contrib.auth.models import User
    from django.db import connection

    from bench import baseline
    from projections.models import Account

    username, password = f"bench-{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(16)
    owner = str(User.objects.create_user(username, password=password).pk)
    now = datetime.now(UTC)
    ids = [uuid.uuid4() for _ in range(accounts)]
    common = {"owner": owner, "currency": "EUR", "balance": 0, "status": "open", "last_sequence": 1}
    Account.objects.bulk_create(
        Account(id=i, name=f"Bench {n}", opened_at=now, updated_at=now, **common) for n, i in enumerate(ids)
    )
    baseline.ensure_table()
    with connection.cursor() as cursor:
        insert = f"INSERT INTO {baseline.TABLE} (id, owner, balance) VALUES (%s, %s, 0)"
        cursor.executemany(insert, [(i, owner) for i in ids])
    return username, password, [str(i) for i in ids]


def deposited_in_place(accounts: list[str]) -> int:
    """Deposits of 1.00 found in the baseline's balance rows."""
    from django.db import connection

    from bench import baseline

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT coalesce(sum(balance), 0) FROM {baseline.TABLE} WHERE id = ANY(%s::uuid[])", [accounts])
        return int(cursor.fetchone()[0]) // 100


async def log_in_and_check(base: str, username: str, password: str, account: str) -> tuple[str, str]:
    """Log in like a browser; one request per side (a benchmark full of 403s measures nothing). (cookie, csrf)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        csrf = await harness.log_in(session, base, username, password)
        headers = {"X-CSRFToken": csrf, "HX-Request": "true"}
        command = {"deposit-amount": "1.00", "deposit-command_id": str(uuid.uuid4())}
        for side, path, form in (
            ("baseline", f"/bench/deposit-in-place/{account}", command),  # the same form, as wrk_post.lua
            ("command", f"/accounts/{account}/deposit", command),
        ):
            async with session.post(f"{base}{path}", data=form, headers=headers) as answer:
                if answer.status != EXPECTED[side]:
                    text = (await answer.text())[:2000]
                    raise SystemExit(f"{side}: POST {path} answered {answer.status}, not {EXPECTED[side]}:\n{text}")
        cookie = "; ".join(f"{c.key}={c.value}" for c in session.cookie_jar if c.key in ("sessionid", "csrftoken"))
    return cookie, csrf


def wrk(base: str, side: str, login: tuple[str, str], accounts: list[str], args: Any, seconds: int) -> Run:
    """One wrk run of `seconds` against one side, in a separate process; the daphne processes' CPU (cores busy,
    summed) meanwhile."""
    command = [
        *("wrk", f"--threads={args.threads}", f"--connections={args.connections}", f"--duration={seconds}s"),
        *("--timeout=10s", "--latency", f"--script={LUA}", base, "--", side, *login, ",".join(accounts)),
    ]  # the 10 s timeout: a command view waits up to KAFKA_COMMAND_TIMEOUT + 1 s before its 503
    cpu = harness.CpuMeter({f"daphne-{pid}": pid for pid in args.daphne_pids})
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    line = next((x for x in result.stdout.splitlines() if x.startswith("WRK_RESULT ")), None)
    if result.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    raw: dict[str, Any] = json.loads(line.removeprefix("WRK_RESULT "))
    statuses = {str(k): int(v) for k, v in sorted(raw["statuses"].items())}
    ok = statuses.get(str(EXPECTED[side]), 0)
    socket_errors = {k: int(v) for k, v in raw["socket_errors"].items() if v}
    elapsed = raw["duration_us"] / 1e6
    return {
        "side": side,
        "requests": raw["requests"],
        "seconds": round(elapsed, 3),
        "per_s": round(ok / elapsed, 1),  # answers with the expected status: fast errors do not count
        **{f"{q}_ms": raw[f"{q}_us"] / 1000 for q in ("p50", "p90", "p99", "max")},
        "ok": ok,
        "errors": sum(statuses.values()) - ok + sum(socket_errors.values()),
        "statuses": statuses,
        "socket_errors": socket_errors,
        "server_cpu": round(sum(cpu.busy().values()), 2),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def summary(runs: list[Run]) -> dict[str, Any]:
    """The median over the rounds of every figure (one round: that round), with the error totals."""
    return {
        **{key: round(statistics.median(r[key] for r in runs), 2) for key in ("per_s", "p50_ms", "p90_ms", "p99_ms")},
        "max_ms": round(max(r["max_ms"] for r in runs), 2),
        **{key: sum(r[key] for r in runs) for key in ("requests", "ok", "errors")},
        "server_cpu": round(statistics.median(r["server_cpu"] for r in runs), 2),
        "rounds": runs,
    }


def commands_in_kafka(kafka: KafkaSettings) -> tuple[int, int]:
    """(messages on the commands topic, distinct command ids among them)."""
    count, ids = 0, set()
    for batch in read_to_end(kafka, kafka.commands_topic):
        count += len(batch)
        ids.update(json.loads(m.value() or b"{}").get("command_id") for m in batch)
    return count, len(ids)


def processes_of(text: str) -> list[int]:
    """`--processes 1,auto`: web process counts; auto is WEB_PROCESSES, else one per core (as ./run)."""
    counts = [harness.web_processes_default() if x.strip() == "auto" else int(x) for x in text.split(",")]
    return list(dict.fromkeys(counts))  # auto may equal 1 on a single core


def profile(base: str, side: str, login: tuple[str, str], accounts: list[str], args: Any) -> tuple[int, Any]:
    """One more (uncounted) wrk run of the side with py-spy on every daphne: (answered, the top functions)."""
    out = LOGS / f"profile-{side}-{len(args.daphne_pids)}"
    spies = harness.py_spy(args.daphne_pids, args.duration, out)
    answered = wrk(base, side, login, accounts, args, args.duration)["ok"]
    for spy in spies:
        spy.wait(60)
    return answered, harness.profile_top([Path(f"{out}-{pid}.txt") for pid in args.daphne_pids])


def measure(
    processes: int, env: dict[str, str], username: str, password: str, accounts: list[str], args: Any
) -> dict[str, Any]:
    """Both sides on `processes` daphne processes sharing a port (supervisord); answers counted in `args.answered`."""
    base = f"http://127.0.0.1:{(port := free_port())}"
    runs: dict[str, list[Run]] = {"baseline": [], "command": []}
    profiles: dict[str, Any] = {}
    server = harness.WebTier(port, processes, env, LOGS)
    try:
        server.serving()
        args.daphne_pids = server.pids
        print(f"  {processes} daphne: pids {server.pids} on port {port}", flush=True)
        login = asyncio.run(log_in_and_check(base, username, password, accounts[0]))
        for side in ("baseline", "command"):
            args.answered[side] += 1  # the checks at log-in
            if args.warmup:
                args.answered[side] += wrk(base, side, login, accounts, args, args.warmup)["ok"]
        for round_ in range(args.rounds):
            for side in ("baseline", "command") if round_ % 2 == 0 else ("command", "baseline"):
                runs[side].append(run := wrk(base, side, login, accounts, args, args.duration))
                args.answered[side] += run["ok"]
        if args.profile:
            for side in ("baseline", "command"):
                answered, profiles[side] = profile(base, side, login, accounts, args)
                args.answered[side] += answered
        if not server.alive() or len([p for p in server.pids if psutil.pid_exists(p)]) < processes:
            raise SystemExit(f"a web process died during the run:\n{server.tail()}")
    finally:
        server.stop()
    command, base_line = summary(runs["command"]), summary(runs["baseline"])
    ratio = command["per_s"] / base_line["per_s"] if base_line["per_s"] else 0.0
    p99_ratio = command["p99_ms"] / base_line["p99_ms"] if base_line["p99_ms"] else 0.0
    return {
        "processes": processes,
        "baseline": base_line,
        "command": command,
        "ratio": round(ratio, 3),
        "p99_ratio": round(p99_ratio, 3),
        "meets_1_0x": ratio >= 1.0 and p99_ratio <= 1.0,
        "meets_1_3x": ratio >= 1.3 and p99_ratio <= 1.0,
        "daphne_tracebacks": server.log().count("Traceback"),
        **({"profile": profiles} if profiles else {}),
    }


def main() -> None:
    args = harness.arguments(
        __doc__, duration=15, warmup=3, connections=16, threads=2, accounts=50, rounds=1, processes="1,auto",
        profile=False, database=None,
    )  # fmt: skip
    args.warmup = min(args.warmup, args.duration)
    harness.setup_django()
    from django.conf import settings

    apt_install("wrk")
    kafka = harness.fresh_kafka("http")
    database_url = harness.use_bench_database(args.database or harness.scratch_name("bench"))
    username, password, accounts = make_customer(args.accounts)
    env = harness.production_env(kafka, database_url, settings.REDIS_URL, DJANGO_SETTINGS_MODULE="bench.settings")
    args.answered = {"baseline": 0, "command": 0}
    tiers = [measure(n, env, username, password, accounts, args) for n in processes_of(args.processes)]

    in_kafka, distinct_ids = commands_in_kafka(kafka)
    in_place = deposited_in_place(accounts)
    answered = args.answered
    # Requests wrk cut off at the end of a run may be done on the server without being counted.
    cut_off = args.connections * (args.rounds + (1 if args.warmup else 0) + (1 if args.profile else 0)) * len(tiers)
    checks = {
        "commands_202": answered["command"],
        "commands_in_kafka": in_kafka,
        "commands_distinct_ids": distinct_ids,
        "commands_ok": answered["command"] <= in_kafka <= answered["command"] + cut_off and distinct_ids == in_kafka,
        "baseline_200": answered["baseline"],
        "baseline_deposits_in_db": in_place,
        "baseline_ok": answered["baseline"] <= in_place <= answered["baseline"] + cut_off,
    }
    first = tiers[0]  # the figures at the top level: the first process count (1), as bench/summary.py reads them
    figures = {
        "tool": "wrk " + subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split()[1],
        "duration_s": args.duration,
        **{key: getattr(args, key) for key in ("rounds", "connections", "threads", "accounts")},
        "warmup_s": args.warmup,
        "database_pool_size": getattr(settings, "DATABASE_POOL_SIZE", None),
        "cpus": os.cpu_count(),
        **{k: first[k] for k in ("processes", "baseline", "command", "ratio", "p99_ratio", "meets_1_0x", "meets_1_3x")},
        "by_processes": {str(t["processes"]): t for t in tiers},
        "checks": checks,
        "daphne_tracebacks": sum(t["daphne_tracebacks"] for t in tiers),
    }

    def row(s: dict[str, Any]) -> str:
        return (
            f"{s['per_s']:>8,.0f} req/s   p50 {s['p50_ms']:>7.2f} ms   p99 {s['p99_ms']:>7.2f} ms   "
            f"errors {s['errors']:>5}   daphne CPU {s['server_cpu']:.2f}"
        )

    print(
        f"deposits over HTTP through daphne, wrk {args.connections} connections / {args.threads} threads, "
        f"{args.duration} s per side x {args.rounds}, {args.accounts} accounts, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    mismatch = "" if checks["commands_ok"] and checks["baseline_ok"] else "   MISMATCH"
    rows = []
    for t in tiers:
        n = t["processes"]
        rows += [
            (f"{n} daphne: baseline, update in place (200)", row(t["baseline"]) + "   (baseline)"),
            (f"{n} daphne: command, to Kafka acks=all (202)", row(t["command"])),
            (
                f"{n} daphne: ratio command/baseline",
                f"{t['ratio']:.2f}x req/s (target >= 1.0x, 1.3x), p99 {t['p99_ratio']:.2f}x (<= 1.0x)",
            ),
        ]
    rows.append(
        (
            "checks",
            f"{in_kafka} commands in Kafka ({distinct_ids} distinct ids) for {answered['command']} answered 202; "
            f"{in_place} deposits in place for {answered['baseline']} answered 200{mismatch}",
        )
    )
    print(harness.table(rows))
    for t in tiers:
        for side, top in t.get("profile", {}).items():
            print(f"profile, {t['processes']} daphne, {side} ({top.get('samples', ['0'])[0]} samples holding the GIL):")
            print("  inclusive:\n" + "\n".join(f"    {x}" for x in top["inclusive"]))
            print("  own:\n" + "\n".join(f"    {x}" for x in top["own"]))
    if figures["daphne_tracebacks"] or any(t[s]["errors"] for t in tiers for s in ("baseline", "command")):
        print(f"errors: statuses and socket errors per round in {harness.RESULTS}/http.json; daphne logs in {LOGS}")
    harness.write_results("http", figures)
    if mismatch:
        raise SystemExit("the counts do not match: see checks above")


if __name__ == "__main__":
    main()
