"""HTTP ingest: deposit commands (202 once Kafka confirmed them) against update-in-place (200), through daphne.

One daphne (DEBUG off, bench/baseline.py mounted), a scratch database and fresh topics; `wrk`
(bench/wrk_post.lua) logged in as a browser drives each side with the same connections and duration, after a
warm-up. Other answers, socket errors and timeouts are errors, not req/s. Afterwards the commands topic and
the balance rows must hold what was answered. No processor runs: the write path up to "durably in Kafka".

    .venv/bin/python -m bench.web [--duration 15] [--connections 16] [--threads 2] [--rounds 1] [--warmup 3]
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
    """One wrk run of `seconds` against one side, in a separate process; daphne's CPU (cores busy) meanwhile."""
    command = [
        *("wrk", f"--threads={args.threads}", f"--connections={args.connections}", f"--duration={seconds}s"),
        *("--timeout=10s", "--latency", f"--script={LUA}", base, "--", side, *login, ",".join(accounts)),
    ]  # the 10 s timeout: a command view waits up to KAFKA_COMMAND_TIMEOUT + 1 s before its 503
    cpu = harness.CpuMeter({"daphne": args.daphne_pid})
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
        "server_cpu": cpu.busy().get("daphne", 0.0),
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


def main() -> None:
    args = harness.arguments(
        __doc__, duration=15, warmup=3, connections=16, threads=2, accounts=50, rounds=1, database=None
    )
    warmup = min(args.warmup, args.duration)
    harness.setup_django()
    from django.conf import settings

    apt_install("wrk")
    kafka = harness.fresh_kafka("http")
    database_url = harness.use_bench_database(args.database or harness.scratch_name("bench"))
    username, password, accounts = make_customer(args.accounts)
    env = harness.production_env(kafka, database_url, settings.REDIS_URL, DJANGO_SETTINGS_MODULE="bench.settings")
    base = f"http://127.0.0.1:{free_port()}"
    runs: dict[str, list[Run]] = {"baseline": [], "command": []}
    answered = {"baseline": 1, "command": 1}  # the checks at log-in
    server = harness.Process("daphne", harness.daphne(int(base.rsplit(":", 1)[1])), env, LOGS)
    args.daphne_pid = server.pid
    try:
        harness.serving(base, server)
        print(f"  daphne pid {server.pid} (to profile it: py-spy record --pid {server.pid})", flush=True)
        login = asyncio.run(log_in_and_check(base, username, password, accounts[0]))
        for side in ("baseline", "command"):
            if warmup:
                answered[side] += wrk(base, side, login, accounts, args, warmup)["ok"]
        for round_ in range(args.rounds):
            for side in ("baseline", "command") if round_ % 2 == 0 else ("command", "baseline"):
                runs[side].append(run := wrk(base, side, login, accounts, args, args.duration))
                answered[side] += run["ok"]
        if not server.alive():
            raise SystemExit(f"daphne died during the run:\n{server.tail()}")
    finally:
        server.stop()
    tracebacks = server.log().count("Traceback")

    in_kafka, distinct_ids = commands_in_kafka(kafka)
    in_place = deposited_in_place(accounts)
    cut_off = args.connections * (args.rounds + (1 if warmup else 0))  # done on the server, not counted by wrk
    checks = {
        "commands_202": answered["command"],
        "commands_in_kafka": in_kafka,
        "commands_distinct_ids": distinct_ids,
        "commands_ok": answered["command"] <= in_kafka <= answered["command"] + cut_off and distinct_ids == in_kafka,
        "baseline_200": answered["baseline"],
        "baseline_deposits_in_db": in_place,
        "baseline_ok": answered["baseline"] <= in_place <= answered["baseline"] + cut_off,
    }
    command, base_line = summary(runs["command"]), summary(runs["baseline"])
    ratio = command["per_s"] / base_line["per_s"] if base_line["per_s"] else 0.0
    p99_ratio = command["p99_ms"] / base_line["p99_ms"] if base_line["p99_ms"] else 0.0
    figures = {
        "tool": "wrk " + subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split()[1],
        "duration_s": args.duration,
        **{key: getattr(args, key) for key in ("rounds", "connections", "threads", "accounts")},
        "warmup_s": warmup,
        "database_pool_size": getattr(settings, "DATABASE_POOL_SIZE", None),
        "cpus": os.cpu_count(),
        "baseline": base_line,
        "command": command,
        "ratio": round(ratio, 3),
        "p99_ratio": round(p99_ratio, 3),
        "meets_1_0x": ratio >= 1.0 and p99_ratio <= 1.0,
        "meets_1_3x": ratio >= 1.3 and p99_ratio <= 1.0,
        "checks": checks,
        "daphne_tracebacks": tracebacks,
    }

    def row(s: dict[str, Any]) -> str:
        return (
            f"{s['per_s']:>8,.0f} req/s   p50 {s['p50_ms']:>7.2f} ms   p99 {s['p99_ms']:>7.2f} ms   "
            f"errors {s['errors']:>5}   daphne CPU {s['server_cpu']:.2f}"
        )

    print(
        f"deposits over HTTP through one daphne, wrk {args.connections} connections / {args.threads} threads, "
        f"{args.duration} s per side x {args.rounds}, {args.accounts} accounts, {os.cpu_count()} CPUs"
    )
    mismatch = "" if checks["commands_ok"] and checks["baseline_ok"] else "   MISMATCH"
    rows = [
        ("baseline: update in place (200)", row(base_line) + "   (baseline)"),
        ("command: to Kafka, acks=all (202)", row(command)),
        ("ratio command/baseline", f"{ratio:.2f}x req/s (target >= 1.0x, 1.3x), p99 {p99_ratio:.2f}x (<= 1.0x)"),
        (
            "checks",
            f"{in_kafka} commands in Kafka ({distinct_ids} distinct ids) for {answered['command']} answered 202; "
            f"{in_place} deposits in place for {answered['baseline']} answered 200{mismatch}",
        ),
    ]
    print(harness.table(rows))
    if tracebacks or base_line["errors"] or command["errors"]:
        print(
            f"errors: statuses and socket errors per round in {harness.RESULTS}/http.json; daphne's log {server.log_path}"
        )
    harness.write_results("http", figures)
    if mismatch:
        raise SystemExit("the counts do not match: see checks above")


if __name__ == "__main__":
    main()
