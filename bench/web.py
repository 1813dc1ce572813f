"""Command throughput over HTTP: authenticated deposit POSTs through daphne, until Kafka confirmed them.

Starts daphne (one process, DEBUG off, the baseline view mounted) on a free port, against a
database of its own (`--database bank_bench`, created and migrated) and fresh Kafka topics;
logs in over HTTP like a browser; then drives, from `wrk` in a separate process
(`bench/wrk_post.lua`), with the same connections and duration for both sides:

1. baseline: POST /bench/deposit-in-place/<id> (`bank/baseline.py`): the update-in-place way,
   SELECT … FOR UPDATE and UPDATE of a balance row in PostgreSQL; answers 200;
2. command: POST /accounts/<id>/deposit (`web.views.move_money`): form checks, then the
   command produced to Kafka with acks=all; answers 202 once the broker confirmed it.

Each request picks one of `--accounts` accounts (owned by the logged-in user on both sides) and
deposits 1.00; the command side sends a fresh command id per request. Each side gets a warm-up
run first (not measured). Any answer other than 202 (command) or 200 (baseline), and any socket
error or timeout, counts as an error, and not in req/s. Afterwards the script checks that the commands topic
holds at least as many commands as there were 202s, and the balance rows at least as many
deposits as there were 200s (requests cut off by the end of a run may land without an answer).

No processor runs: the figure is the write path up to "durably in Kafka". daphne runs as the
Procfile runs it (one process, access log on), with DJANGO_DEBUG=false and a throwaway secret key.

    .venv/bin/python bench/web.py [--duration 15] [--connections 16] [--threads 2] [--rounds 1]
    .venv/bin/python bench/web.py --duration 2 --warmup 1      # smoke run (about 20 s in all)
    .venv/bin/python bench/web.py --profile /tmp [--profile-gil]  # py-spy stacks of daphne per side

daphne gets this process's environment plus the variables above, so settings such as
DATABASE_POOL_SIZE can be varied from the command line: `DATABASE_POOL_SIZE=20 .venv/bin/python bench/web.py`.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import logging
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __name__ != "http":
    from common import ROOT, fresh_kafka, table, use_bench_database, write_results
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.db import connection

    from bank.config import KafkaSettings
    from bank.kafka import read_to_end
    from bench import baseline
    from devservices.process import apt_install, free_port, pid_alive
    from projections.models import Account

LUA = Path(__file__).resolve().with_name("wrk_post.lua")
AMOUNT_CENTS = 100  # the Lua script deposits 1.00
EXPECTED = {"baseline": 200, "command": 202}


# --- the database ---


@dataclass(frozen=True)
class Customer:
    username: str
    password: str
    accounts: list[str]


def make_customer(accounts: int) -> Customer:
    """A fresh user with `accounts` accounts: projection rows (command side) and balance rows (baseline)."""
    username, password = f"bench-{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(16)
    user = User.objects.create_user(username, password=password)
    owner = str(user.pk)
    now = datetime.now(UTC)
    ids = [uuid.uuid4() for _ in range(accounts)]
    Account.objects.bulk_create(
        Account(
            id=i,
            owner=owner,
            name=f"Bench {n}",
            currency="EUR",
            balance=0,
            status="open",
            opened_at=now,
            last_sequence=1,
            updated_at=now,
        )
        for n, i in enumerate(ids)
    )
    baseline.ensure_table()
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {baseline.TABLE} (id, owner, balance) VALUES (%s, %s, 0)", [(i, owner) for i in ids]
        )
    return Customer(username, password, [str(i) for i in ids])


def deposited_in_place(accounts: list[str]) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT coalesce(sum(balance), 0) FROM {baseline.TABLE} WHERE id = ANY(%s::uuid[])", [accounts])
        return int(cursor.fetchone()[0])


# --- the server ---


@contextmanager
def daphne(env: dict[str, str], log_path: Path) -> Iterator[tuple[str, int]]:
    """daphne serving server.asgi on a free port: yields (base URL, pid); stopped on the way out, also on error."""
    port = free_port()
    listen = ["-b", "127.0.0.1", "-p", str(port)]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "daphne", *listen, "server.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise SystemExit(f"daphne exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"daphne did not serve {base}/healthz within 60 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield base, process.pid
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the client side ---


@dataclass(frozen=True)
class Session:
    cookie: str  # the Cookie header: sessionid and csrftoken
    csrf: str  # the X-CSRFToken header


def log_in(base: str, customer: Customer) -> Session:
    """Log in like a browser: GET the form (CSRF cookie), POST it, keep the session cookie."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{base}/login/", timeout=10).read()
    csrf = {c.name: c.value for c in jar}.get("csrftoken")
    if not csrf:
        raise SystemExit("GET /login/ set no csrftoken cookie")
    form = {"username": customer.username, "password": customer.password, "csrfmiddlewaretoken": csrf}
    opener.open(f"{base}/login/", urllib.parse.urlencode(form).encode(), timeout=10).read()
    cookies = {c.name: c.value for c in jar}  # login rotates the CSRF token: take the new one
    if "sessionid" not in cookies:
        raise SystemExit(f"logging in as {customer.username} gave no session cookie")
    return Session(f"sessionid={cookies['sessionid']}; csrftoken={cookies['csrftoken']}", cookies["csrftoken"])


def post(base: str, session: Session, path: str, form: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(
        f"{base}{path}",
        data=urllib.parse.urlencode(form).encode(),
        headers={"Cookie": session.cookie, "X-CSRFToken": session.csrf, "HX-Request": "true"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def check_both_sides(base: str, session: Session, account: str) -> None:
    """One request per side before loading it: a benchmark full of 403s or 404s measures nothing."""
    command_id = str(uuid.uuid4())
    for side, path, form in (
        (
            "baseline",
            f"/bench/deposit-in-place/{account}",
            {"deposit-amount": "1.00", "deposit-command_id": command_id},
        ),
        ("command", f"/accounts/{account}/deposit", {"deposit-amount": "1.00", "deposit-command_id": command_id}),
    ):
        status, body = post(base, session, path, form)
        if status != EXPECTED[side]:
            raise SystemExit(f"{side}: POST {path} answered {status}, expected {EXPECTED[side]}:\n{body[:2000]}")


@dataclass
class Run:
    side: str
    requests: int
    seconds: float
    per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    ok: int
    errors: int
    statuses: dict[str, int]
    socket_errors: dict[str, int]
    server_cpu: float  # daphne's CPU time over the run / wall time (1.0 = one core busy)


def wrk(base: str, side: str, session: Session, accounts: list[str], args: argparse.Namespace, seconds: int) -> Run:
    """One wrk run of `seconds` against one side, in a separate process."""
    command = [
        "wrk",
        f"--threads={args.threads}",
        f"--connections={args.connections}",
        f"--duration={seconds}s",
        "--timeout=10s",  # a command view waits up to KAFKA_COMMAND_TIMEOUT + 1 s before its 503
        "--latency",
        f"--script={LUA}",
        base,
        "--",
        side,
        session.cookie,
        session.csrf,
        ",".join(accounts),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    line = next((x for x in result.stdout.splitlines() if x.startswith("WRK_RESULT ")), None)
    if result.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    if args.verbose:
        print(result.stdout.replace(line, "").rstrip())
    raw: dict[str, Any] = json.loads(line.removeprefix("WRK_RESULT "))
    statuses = {str(k): int(v) for k, v in sorted(raw["statuses"].items())}
    ok = statuses.get(str(EXPECTED[side]), 0)
    socket_errors = {k: int(v) for k, v in raw["socket_errors"].items() if v}
    elapsed = raw["duration_us"] / 1e6
    return Run(
        side=side,
        requests=raw["requests"],
        seconds=round(elapsed, 3),
        per_s=ok / elapsed,  # answers with the expected status: fast errors do not count
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        ok=ok,
        errors=sum(statuses.values()) - ok + sum(socket_errors.values()),
        statuses=statuses,
        socket_errors=socket_errors,
        server_cpu=0.0,
    )


@contextmanager
def profiled(pid: int, side: str, seconds: int, folder: Path | None, gil: bool) -> Iterator[None]:
    """py-spy on daphne for the run (collapsed stacks in FOLDER/http-<side>.txt), when asked for.

    Without `gil`, every thread that is not idle is sampled (where requests wait); with it,
    only the thread holding the GIL (where daphne's CPU goes).
    """
    if folder is None:
        yield
        return
    venv_spy = Path(sys.executable).parent / "py-spy"
    spy = str(venv_spy) if venv_spy.exists() else shutil.which("py-spy")
    if spy is None:
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    out = folder / f"http-{side}.txt"
    process = subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--duration", str(seconds), "--format", "raw", "--threads", "-o", str(out)]
        + (["--gil"] if gil else []),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        print(f"  py-spy stacks of daphne during the {side} run: {out}")


def measure(
    base: str, pid: int, side: str, session: Session, accounts: list[str], args: argparse.Namespace, profile: bool
) -> Run:
    started_cpu, started = cpu_seconds(pid), time.perf_counter()
    with profiled(pid, side, args.duration, args.profile if profile else None, args.profile_gil):
        run = wrk(base, side, session, accounts, args, args.duration)
    run.server_cpu = round((cpu_seconds(pid) - started_cpu) / (time.perf_counter() - started), 2)
    return run


def summary(runs: list[Run]) -> dict[str, Any]:
    """The median over the rounds of every figure (one round: that round), with the error totals."""
    return {
        "per_s": round(statistics.median(r.per_s for r in runs), 1),
        "p50_ms": round(statistics.median(r.p50_ms for r in runs), 2),
        "p90_ms": round(statistics.median(r.p90_ms for r in runs), 2),
        "p99_ms": round(statistics.median(r.p99_ms for r in runs), 2),
        "max_ms": round(max(r.max_ms for r in runs), 2),
        "requests": sum(r.requests for r in runs),
        "ok": sum(r.ok for r in runs),
        "errors": sum(r.errors for r in runs),
        "server_cpu": round(statistics.median(r.server_cpu for r in runs), 2),
        "rounds": [asdict(r) | {"per_s": round(r.per_s, 1)} for r in runs],
    }


def exceptions(log: str) -> Counter[str]:
    """The exception that ended each traceback in a log (the last of a chain), counted."""
    found: Counter[str] = Counter()
    for chunk in log.split("Traceback (most recent call last):")[1:]:
        if "During handling of the above exception" in chunk or "The above exception was the direct cause" in chunk:
            continue  # the chain goes on in the next chunk
        lines = [x for x in chunk.splitlines() if x and not x.startswith((" ", "\t"))]
        if lines:
            found[lines[0]] += 1
    return found


def commands_in_kafka(kafka: KafkaSettings) -> tuple[int, int]:
    """(messages on the commands topic, distinct command ids among them)."""
    count, ids = 0, set()
    for batch in read_to_end(kafka, kafka.commands_topic):
        count += len(batch)
        ids.update(json.loads(m.value() or b"{}").get("command_id") for m in batch)
    return count, len(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=15, help="seconds measured per side and round")
    parser.add_argument(
        "--warmup", type=int, default=None, help="seconds of warm-up per side (default min(3, duration))"
    )
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--accounts", type=int, default=50, help="accounts the requests spread over")
    parser.add_argument("--rounds", type=int, default=1, help="measured rounds per side, alternating; medians reported")
    parser.add_argument("--database", default="bank_bench", help="scratch database (created and migrated)")
    parser.add_argument("--profile", type=Path, default=None, help="folder for py-spy stacks of daphne per side")
    parser.add_argument("--profile-gil", action="store_true", help="with --profile: sample only the GIL holder")
    parser.add_argument("--verbose", "-v", action="store_true", help="print wrk's own output too")
    args = parser.parse_args()
    if args.connections < args.threads or min(args.duration, args.rounds, args.accounts, args.threads) < 1:
        parser.error("need duration, rounds, accounts, threads >= 1 and connections >= threads")
    warmup = min(3, args.duration) if args.warmup is None else args.warmup
    logging.basicConfig(level=logging.WARNING)

    apt_install("wrk")
    kafka = fresh_kafka("http")
    database_url = use_bench_database(args.database)
    customer = make_customer(args.accounts)
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "KAFKA_PARTITIONS": str(kafka.partitions),
        "REDIS_URL": settings.REDIS_URL,
        # DEBUG would keep every SQL query in memory; off, it needs a key other than the dev one.
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(40),
        "LOG_LEVEL": "WARNING",
    }
    log_path = Path(tempfile.gettempdir()) / f"bench-http-daphne-{os.getpid()}.log"
    runs: dict[str, list[Run]] = {"baseline": [], "command": []}
    with daphne(env, log_path) as (base, pid):
        session = log_in(base, customer)
        check_both_sides(base, session, customer.accounts[0])
        answered = {"baseline": 1, "command": 1}  # the checks above
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
        for side in ("baseline", "command"):
            if warmup:
                answered[side] += wrk(base, side, session, customer.accounts, args, warmup).ok
        for round_ in range(args.rounds):
            order = ("baseline", "command") if round_ % 2 == 0 else ("command", "baseline")
            for side in order:
                run = measure(base, pid, side, session, customer.accounts, args, profile=round_ == 0)
                answered[side] += run.ok
                runs[side].append(run)
        if not pid_alive(pid):
            raise SystemExit(f"daphne died during the run:\n{log_path.read_text()[-3000:]}")
    server_log = log_path.read_text()
    if "Traceback" not in server_log:
        log_path.unlink(missing_ok=True)

    in_kafka, distinct_ids = commands_in_kafka(kafka)
    in_place = deposited_in_place(customer.accounts) // AMOUNT_CENTS
    # A request still in flight when wrk stops is done on the server but not counted by wrk.
    cut_off = args.connections * (args.rounds + (1 if warmup else 0))
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
        "warmup_s": warmup,
        "rounds": args.rounds,
        "connections": args.connections,
        "threads": args.threads,
        "accounts": args.accounts,
        "database_pool_size": getattr(settings, "DATABASE_POOL_SIZE", None),
        "cpus": os.cpu_count(),
        "baseline": base_line,
        "command": command,
        "ratio": round(ratio, 3),
        "p99_ratio": round(p99_ratio, 3),
        "meets_1_0x": ratio >= 1.0 and p99_ratio <= 1.0,
        "meets_1_3x": ratio >= 1.3 and p99_ratio <= 1.0,
        "checks": checks,
    }

    def row(name: str, s: dict[str, Any]) -> str:
        return (
            f"{s['per_s']:>8,.0f} req/s   p50 {s['p50_ms']:>7.2f} ms   p99 {s['p99_ms']:>7.2f} ms   "
            f"errors {s['errors']:>5}   daphne CPU {s['server_cpu']:.2f}"
        )

    print(
        f"deposits over HTTP through one daphne, wrk {args.connections} connections / {args.threads} threads, "
        f"{args.duration} s per side x {args.rounds}, {args.accounts} accounts, {os.cpu_count()} CPUs"
    )
    print(
        table(
            [
                ("baseline: update in place (200)", row("baseline", base_line) + "   (baseline)"),
                ("command: to Kafka, acks=all (202)", row("command", command)),
                (
                    "ratio command/baseline",
                    f"{ratio:.2f}x req/s (target >= 1.0x, 1.3x), p99 {p99_ratio:.2f}x (<= 1.0x)",
                ),
                (
                    "checks",
                    f"{in_kafka} commands in Kafka ({distinct_ids} distinct ids) for {answered['command']} answered 202; "
                    f"{in_place} deposits in place for {answered['baseline']} answered 200"
                    + ("" if checks["commands_ok"] and checks["baseline_ok"] else "   MISMATCH"),
                ),
            ]
        )
    )
    for side, s in (("baseline", base_line), ("command", command)):
        bad = {k: v for r in s["rounds"] for k, v in r["statuses"].items() if k != str(EXPECTED[side])}
        sockets = {k: v for r in s["rounds"] for k, v in r["socket_errors"].items()}
        if bad or sockets:
            print(f"  {side} errors: statuses {bad or '-'}, socket {sockets or '-'}")
    if "Traceback" in server_log:
        print(f"daphne logged tracebacks (log kept: {log_path}), ending in:")
        for error, n in exceptions(server_log).most_common(4):
            print(f"  {n:>6} x {error[:200]}")
    write_results("http", figures)
    if not (checks["commands_ok"] and checks["baseline_ok"]):
        raise SystemExit("the counts do not match: see checks above")


if __name__ == "__main__":
    main()
