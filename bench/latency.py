"""End-to-end latency: a command accepted by the view → its outcome on an authenticated websocket.

Runs the whole bank as real processes (`manage.py run_processor`, `manage.py run_projector`,
`python -m daphne ... server.asgi:application`, DEBUG off) on fresh topics, a scratch database
(`--database`, default `bank_bench` beside DATABASE_URL's `bank`, created and migrated) and a channel-layer prefix of its own,
so that nothing mixes with the dev server. This process is the browser: it logs in through
POST /login/, opens `--accounts` accounts through POST /accounts/open, opens the websocket
/ws/live/ with the session cookie, says hello as the page does, then POSTs deposits at a fixed
open-loop rate (scheduled by the clock, never waiting for answers; `--connections` keep-alive
connections) and measures, per command:

    latency = t_update - t_accepted
    t_accepted  when the 202 answer of POST /accounts/<id>/deposit arrived
    t_update    when a websocket message holding <li id="cmd-<command_id>"> arrived

It also records the HTTP answer time (from the scheduled send), every answer other than 202,
and where the time goes: the command's `issued_at` (the view), its event's `occurred_at` (the
processor's decision), both read back from Kafka; plus the CPU the processes used (psutil).
The websocket reconnects as the page does
(its hello lists the commands still pending; their outcomes then come from the catch-up).

A rate is *held* when every command is answered 202 and its outcome reaches the websocket within
`--drain` seconds of the last send, the last third of the run is not much slower than the first
(end to end, from the scheduled send), the last update comes at most 1 s after the last send,
the websocket stays up, the generator keeps its schedule and p99 stays under `--held-p99-ms`.
The highest held rate of the ladder `--rates` is the capacity figure (a rate not held gets up to
15 s to clear its backlog before the next).

aiohttp (in requirements.txt) is the load generator. Worker settings can be tried through
the environment, which the workers inherit: `PROJECTOR_BATCH_WAIT=0.005 DATABASE_POOL_SIZE=40
.venv/bin/python -m bench.latency`. Runs of other benchmarks that use the same `--database` at
the same time (bench/projection.py truncates its projections) disturb each other: give one of
them another database.

    .venv/bin/python -m bench.latency [--rates 50,100,150,200,300] [--seconds 10]
    .venv/bin/python -m bench.latency --rates 20 --seconds 2     # smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bank import messages
from bank.config import KafkaSettings
from bank.kafka import read_to_end
from bench import harness
from bench.harness import ROOT, table
from devservices.process import free_port

LOGS = ROOT / "var" / "bench" / "latency"
PASSWORD = "latency-bench-2026"
ORIGIN = "http://127.0.0.1"
CMD_ID = re.compile(r'id="cmd-[0-9a-f-]{36}-([0-9a-f-]{36})"')  # cmd-<account id>-<command id>
TARGET_RATE, TARGET_P99_MS = 200, 100.0
SETTLE = 15.0  # seconds a rate that was not held may take to clear its backlog before the next one
# Worker settings worth trying through the environment (passed on to the workers as they are).
TUNABLES = (
    "PROJECTOR_BATCH_WAIT",
    "PROJECTOR_BATCH_SIZE",
    "DATABASE_POOL_SIZE",
    "KAFKA_PARTITIONS",
    "KAFKA_COMMAND_TIMEOUT",
)
# perf_counter() + WALL = time.time(): this process's clock against the timestamps the workers write.
WALL = time.time() - time.perf_counter()


# --- one command's measurements (perf_counter seconds) ---


@dataclass(slots=True)
class Record:
    rate: int
    account: str
    command_id: str
    scheduled: float
    accepted: float | None = None
    status: str = ""
    update: float | None = None
    issued_at: float | None = None  # wall clock, from the command on Kafka
    occurred_at: float | None = None  # wall clock, from the event on Kafka


@dataclass
class RateRun:
    rate: int
    seconds: float
    records: list[Record]
    send_lag_ms: list[float]
    deadline: float
    last_scheduled: float
    settled_s: float = 0.0
    late: int = 0
    ws_closes: list[int | None] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    load_average: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)


# --- the browser ---


class Browser:
    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base = base
        self.session = session
        self.records: dict[str, Record] = {}
        self.ws_messages = 0
        self.ws_closes: list[tuple[float, int | None]] = []
        self.ws_ready = asyncio.Event()
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def login(self, username: str) -> None:
        self.csrf = await harness.log_in(self.session, self.base, username, PASSWORD)

    async def open_account(self, name: str) -> str:
        command_id = uuid.uuid4()
        data = {"command_id": str(command_id), "name": name, "currency": "EUR"}
        headers = {"X-CSRFToken": self.csrf, "HX-Request": "true"}
        async with self.session.post(f"{self.base}/accounts/open", data=data, headers=headers) as response:
            body = await response.text()
            if response.status != 202:
                raise RuntimeError(f"POST /accounts/open answered {response.status}: {body[:300]}")
        # As the view does: the account id is derived from the command id.
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"bank:open:{command_id}"))

    async def deposit(self, record: Record) -> None:
        data = {"deposit-amount": "1.00", "deposit-command_id": record.command_id}
        headers = {"X-CSRFToken": self.csrf, "HX-Request": "true"}
        try:
            async with self.session.post(
                f"{self.base}/accounts/{record.account}/deposit", data=data, headers=headers
            ) as response:
                await response.read()
                record.accepted = time.perf_counter()
                record.status = str(response.status)
        except (aiohttp.ClientError, TimeoutError) as error:
            record.accepted = time.perf_counter()
            record.status = type(error).__name__
        if record.status == "202" and self.ws is not None and not self.ws.closed:
            # As the page does for its new pending row: outcomes come only for commands a page waits for
            # (one lost with a closing socket comes with the next hello's catch-up).
            watch = {"type": "watch", "account": record.account, "command": record.command_id}
            with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                await self.ws.send_str(json.dumps(watch))

    async def listen(self, url: str) -> None:
        """Stamp each command when the websocket brings its outcome row; reconnect as the page does.

        After a reconnect the hello lists the commands still waiting (the page's pending rows), and
        the server's catch-up answers them: those count when they arrive, late.
        """
        while True:
            try:
                ws = await self.session.ws_connect(url, headers={"Origin": ORIGIN}, heartbeat=None)
            except (aiohttp.ClientError, OSError) as error:
                self.ws_closes.append((time.perf_counter(), None))
                print(f"  websocket: cannot connect ({error}); retrying", flush=True)
                await asyncio.sleep(0.5)
                continue
            waiting = [[r.account, c] for c, r in self.records.items() if r.status == "202" and r.update is None]
            await ws.send_str(json.dumps({"type": "hello", "page": None, "pending": waiting[:100]}))
            self.ws = ws
            self.ws_ready.set()
            async for message in ws:
                now = time.perf_counter()
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                self.ws_messages += 1
                for command_id in CMD_ID.findall(message.data):
                    record = self.records.get(command_id)
                    if record is not None and record.update is None:
                        record.update = now
            self.ws_closes.append((time.perf_counter(), ws.close_code))
            print(f"  websocket closed (code {ws.close_code}); reconnecting", flush=True)
            await asyncio.sleep(0.2)

    def pending(self, records: list[Record]) -> int:
        return sum(1 for r in records if r.status == "202" and r.update is None)

    async def run_rate(
        self, rate: int, seconds: float, accounts: list[str], drain: float, cpu: harness.CpuMeter | None = None
    ) -> RateRun:
        """Deposits at `rate`/s for `seconds`, open loop; then wait for answers and updates.

        Answers still missing `drain` seconds after the last send are given up (cancelled, counted
        as errors); updates get the same deadline, and then up to SETTLE more seconds to clear
        the backlog (counted late), so that the next rate starts clean.
        """
        count = max(1, round(rate * seconds))
        records: list[Record] = []
        tasks: list[asyncio.Task[None]] = []
        lag: list[float] = []
        start = time.perf_counter() + 0.05
        if cpu:
            cpu.restart()
        for i in range(count):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            lag.append((time.perf_counter() - scheduled) * 1000)
            record = Record(rate, accounts[i % len(accounts)], str(uuid.uuid4()), scheduled)
            self.records[record.command_id] = record
            records.append(record)
            tasks.append(asyncio.create_task(self.deposit(record)))
        last_scheduled = start + (count - 1) / rate
        cpu_per_s = cpu.busy() if cpu else {}
        deadline = last_scheduled + drain
        _, unanswered = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.perf_counter()))
        for task in unanswered:
            task.cancel()
        await asyncio.gather(*unanswered, return_exceptions=True)
        for record in records:
            if not record.status:
                record.status = "unanswered"
        while self.pending(records) and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        run = RateRun(rate, seconds, records, lag, deadline, last_scheduled, load_average=os.getloadavg()[0])
        run.cpu = cpu_per_s
        settle_until = time.perf_counter() + SETTLE
        settle_start = time.perf_counter()
        while self.pending(records) and time.perf_counter() < settle_until:
            await asyncio.sleep(0.05)
        run.settled_s = time.perf_counter() - settle_start
        run.late = sum(1 for r in records if r.update is not None and r.update > deadline)
        run.ws_closes = [code for t, code in self.ws_closes if start <= t <= deadline]
        await asyncio.sleep(0.5)
        return run


# --- figures ---


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def summary(values: list[float]) -> dict[str, float | None]:
    return {
        "p50": pct(values, 50),
        "p95": pct(values, 95),
        "p99": pct(values, 99),
        "max": max(values) if values else None,
    }


def rounded(figures: dict[str, float | None]) -> dict[str, float | None]:
    return {k: None if v is None else round(v, 1) for k, v in figures.items()}


def evaluate(run: RateRun, held_p99_ms: float) -> dict[str, Any]:
    """The run's figures, and whether the rate was held."""
    records = run.records
    accepted = [r for r in records if r.status == "202"]
    errors = Counter(r.status for r in records if r.status != "202")
    done = [r for r in accepted if r.update is not None and r.accepted is not None and r.update <= run.deadline]
    missing = len(accepted) - len(done)
    latency = [(r.update - r.accepted) * 1000 for r in done if r.update is not None and r.accepted is not None]
    http = [(r.accepted - r.scheduled) * 1000 for r in records if r.accepted is not None]
    third = max(1, len(done) // 3)
    total_first = pct([(r.update - r.scheduled) * 1000 for r in done[:third] if r.update is not None], 50)
    total_last = pct([(r.update - r.scheduled) * 1000 for r in done[-third:] if r.update is not None], 50)
    tail = max((r.update for r in done if r.update is not None), default=run.deadline) - run.last_scheduled
    answered = [r.accepted for r in accepted if r.accepted is not None]
    span = max(answered, default=0.0) - records[0].scheduled if answered else 0.0
    growing = total_first is not None and total_last is not None and total_last > 2 * total_first + 25
    reasons = []
    if errors:
        reasons.append(f"{sum(errors.values())} not 202")
    if missing:
        reasons.append(f"{missing} updates missing after {run.deadline - run.last_scheduled:.0f}s")
    if growing:
        reasons.append(f"end-to-end p50 grew {ms(total_first)} → {ms(total_last)} ms")
    if tail > 1.0:
        reasons.append(f"last update {tail:.1f}s after the last send")
    if (pct(run.send_lag_ms, 99) or 0) > 100:
        reasons.append("the load generator fell behind its schedule")
    if run.ws_closes:
        reasons.append(f"the websocket closed {len(run.ws_closes)}x (codes {run.ws_closes})")
    p99 = pct(latency, 99)
    if p99 is not None and p99 > held_p99_ms:
        reasons.append(f"p99 {p99:.0f} ms is above {held_p99_ms:.0f} ms")
    return {
        "rate": run.rate,
        "seconds": run.seconds,
        "commands": len(records),
        "accepted": len(accepted),
        "accepted_per_s": round(len(accepted) / span, 1) if span > 0 else None,
        "errors": dict(errors),
        "updates_missing": missing,
        "updates_late": run.late,
        "latency_ms": rounded(summary(latency)),
        "http_ms": rounded(summary(http)),
        "end_to_end_p50_first_third_ms": None if total_first is None else round(total_first, 1),
        "end_to_end_p50_last_third_ms": None if total_last is None else round(total_last, 1),
        "last_update_after_last_send_s": round(tail, 3),
        "backlog_cleared_after_s": round(run.settled_s, 2),
        "send_lag_p99_ms": round(pct(run.send_lag_ms, 99) or 0.0, 1),
        "websocket_closes": run.ws_closes,
        "load_average_1m": round(run.load_average, 2),
        "cpu_cores_busy": run.cpu,
        "held": not reasons,
        "not_held_because": reasons,
    }


STAGES = (
    ("send→view", "client request until the view built the command (issued_at)"),
    ("view→202", "Kafka confirmation, render, answer"),
    ("202→decided", "processor: consume, decide (the event's occurred_at)"),
    ("decided→ws", "commit, projector batch and DB commit, channel layer, daphne: render, websocket frame"),
)


def stages(records: list[Record]) -> dict[str, dict[str, float | None]]:
    """Where the time goes, per stage, over the commands whose every timestamp is known."""
    parts: dict[str, list[float]] = {name: [] for name, _ in STAGES}
    for r in records:
        if r.accepted is None or r.update is None or r.issued_at is None or r.occurred_at is None:
            continue
        parts["send→view"].append((r.issued_at - (r.scheduled + WALL)) * 1000)
        parts["view→202"].append((r.accepted + WALL - r.issued_at) * 1000)
        parts["202→decided"].append((r.occurred_at - (r.accepted + WALL)) * 1000)
        parts["decided→ws"].append((r.update + WALL - r.occurred_at) * 1000)
    return {name: rounded({"p50": pct(v, 50), "p99": pct(v, 99)}) for name, v in parts.items()}


def stamp_from_kafka(kafka: KafkaSettings, records: dict[str, Record]) -> None:
    """issued_at of each command and occurred_at of its event, read back from the topics."""
    for batch in read_to_end(kafka, kafka.commands_topic):
        for message in batch:
            command = messages.decode_command(message.value())
            record = records.get(str(command.command_id))
            if record is not None:
                record.issued_at = command.issued_at.timestamp()
    for batch in read_to_end(kafka, kafka.events_topic):
        for message in batch:
            event = messages.decode_event(message.value())
            record = records.get(str(event.command_id))
            if record is not None:
                record.occurred_at = event.occurred_at.timestamp()


# --- the run ---


async def wait_for_accounts(account_ids: list[str], workers: list[harness.Process], timeout: float) -> None:
    """Until every account is projected: the processor and the projector are both up and working."""
    from projections.models import Account

    def projected() -> int:
        return Account.objects.filter(id__in=account_ids).count()

    deadline = time.monotonic() + timeout
    while (await asyncio.to_thread(projected)) < len(account_ids):
        for worker in workers:
            if not worker.alive():
                raise SystemExit(f"{worker.name} exited:\n{worker.tail()}")
        if time.monotonic() > deadline:
            raise SystemExit(
                f"accounts not projected after {timeout:.0f}s; logs in {LOGS}\n"
                + "\n".join(f"--- {w.name}\n{w.tail(1500)}" for w in workers)
            )
        await asyncio.sleep(0.1)


async def measure(
    args: argparse.Namespace, env: dict[str, str], port: int, workers: list[harness.Process]
) -> dict[str, Any]:
    from django.contrib.auth.models import User

    measuring = time.monotonic()
    base = f"http://127.0.0.1:{port}"
    username = f"latency-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(User.objects.create_user, username, password=PASSWORD)
    cpu = harness.CpuMeter({w.name: w.pid for w in workers} | {"load generator": os.getpid()})
    connector = aiohttp.TCPConnector(limit=args.connections)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=timeout
    ) as session:
        browser = Browser(base, session)
        await browser.login(username)
        accounts = [await browser.open_account(f"Latency {i + 1}") for i in range(args.accounts)]
        await wait_for_accounts(accounts, workers, timeout=120)
        ready_s = time.monotonic() - measuring

        listener = asyncio.create_task(browser.listen(f"ws://127.0.0.1:{port}/ws/live/"))
        await asyncio.wait_for(browser.ws_ready.wait(), 30)

        async def rate_run(rate: int, seconds: float) -> RateRun:
            run = await browser.run_rate(rate, seconds, accounts, args.drain, cpu)
            run.figures = evaluate(run, args.held_p99_ms)
            say(run.figures)
            return run

        try:
            # Warm-up, not measured: first renders, connections, the view's Kafka producer.
            await browser.run_rate(50, 1.0, accounts, drain=5)
            runs: list[RateRun] = []
            for rate in args.rates:
                runs.append(await rate_run(rate, args.seconds))
            if listener.done():
                listener.result()  # raises what stopped it
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
    return {
        "username": username,
        "accounts": accounts,
        "ready_s": ready_s,
        "runs": runs,
        "records": browser.records,
        "ws_messages": browser.ws_messages,
        "ws_closes": browser.ws_closes,
    }


def say(figures: dict[str, Any]) -> None:
    lat = figures["latency_ms"]
    print(
        f"  {figures['rate']:>5}/s: latency p50 {ms(lat['p50'])} p99 {ms(lat['p99'])} ms, "
        f"{'held' if figures['held'] else 'NOT held: ' + '; '.join(figures['not_held_because'])}",
        flush=True,
    )


COLUMNS = (
    f"{'p50':>6} {'p95':>6} {'p99':>6} {'max':>6} | {'p50':>5} {'p99':>6} | {'202/s':>7} | {'errors':>6} | "
    f"{'first':>6} → {'last':<6} |"
)
GROUPS = f"{'latency ms, 202 → websocket':^27} | {'http ms':^12} | {'':7} | {'':6} | {'e2e p50, thirds':^15} |"


def row(figures: dict[str, Any]) -> str:
    lat, http = figures["latency_ms"], figures["http_ms"]
    errors = sum(figures["errors"].values()) + figures["updates_missing"]
    return (
        f"{ms(lat['p50']):>6} {ms(lat['p95']):>6} {ms(lat['p99']):>6} {ms(lat['max']):>6} | "
        f"{ms(http['p50']):>5} {ms(http['p99']):>6} | {figures['accepted_per_s'] or 0:>7.1f} | {errors:>6} | "
        f"{ms(figures['end_to_end_p50_first_third_ms']):>6} → {ms(figures['end_to_end_p50_last_third_ms']):<6} | "
        f"{'held' if figures['held'] else 'NOT held'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--rates", type=lambda t: [int(r) for r in t.split(",")], default=[50, 100, 150, 200, 300], help="1/s, a,b,c"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of load per rate")
    parser.add_argument("--drain", type=float, default=5.0, help="seconds after the last send an update may take")
    parser.add_argument("--held-p99-ms", type=float, default=1000.0, help="a higher p99 is not held (near saturation)")
    parser.add_argument("--accounts", type=int, default=1, help="accounts the deposits go to, round robin")
    parser.add_argument("--connections", type=int, default=32, help="HTTP keep-alive connections of the client")
    parser.add_argument("--database", help="scratch database, made and migrated (default: DATABASE_URL's + _bench)")
    parser.add_argument("--redis-socket-timeout", type=float, help="the workers' REDIS_URL gets ?socket_timeout=S")
    args = parser.parse_args()
    harness.setup_django()
    args.database = args.database or harness.scratch_name("bench")
    from django.conf import settings

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    started = time.monotonic()
    kafka = harness.fresh_kafka("latency")
    database_url = harness.use_bench_database(args.database)
    redis_url = settings.REDIS_URL
    if args.redis_socket_timeout is not None:
        redis_url += ("&" if "?" in redis_url else "?") + f"socket_timeout={args.redis_socket_timeout:g}"
    env = harness.worker_env(kafka, database_url, redis_url, CHANNELS_PREFIX=f"bench-latency-{uuid.uuid4().hex[:8]}")
    env |= {"DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": secrets.token_hex(32), "LOG_LEVEL": "WARNING"}
    port = free_port()
    workers: list[harness.Process] = []
    try:
        for name, argv in (
            ("processor", harness.manage("run_processor", "--instance", f"latency-{port}")),
            ("projector", harness.manage("run_projector")),
            ("daphne", harness.daphne(port)),
        ):
            workers.append(harness.Process(name, argv, env, LOGS))
        harness.serving(f"http://127.0.0.1:{port}", workers[-1])
        print("  workers: " + ", ".join(f"{w.name} pid {w.pid}" for w in workers) + f"; port {port}; logs in {LOGS}")
        result = asyncio.run(measure(args, env, port, workers))
        stamp_from_kafka(kafka, result["records"])
    finally:
        for worker in workers:
            worker.stop()
    crashed = {w.name: n for w in workers if (n := w.log().count("Traceback"))}

    runs: list[RateRun] = result["runs"]
    for run in runs:
        run.figures["stages_ms"] = stages(run.records)
    held = [r.rate for r in runs if r.figures["held"]]
    failed = [r.rate for r in runs if not r.figures["held"]]
    max_held = max(held, default=0)
    first_failed = min((f for f in failed if f > max_held), default=None)
    target = next((r.figures for r in result["runs"] if r.rate == TARGET_RATE), None)
    target_met = (
        None if target is None else bool(target["held"] and (target["latency_ms"]["p99"] or 1e9) < TARGET_P99_MS)
    )

    print(
        f"end-to-end latency, 202 from the view → outcome on the websocket ({args.accounts} accounts, "
        f"{kafka.partitions} partitions, database {args.database}, load average {os.getloadavg()[0]:.1f})"
    )
    print(table([("", GROUPS), ("rate", COLUMNS)] + [(f"{r.rate}/s", row(r.figures)) for r in runs]))
    print("CPU while sending, in cores busy (the GIL keeps the Python code of one process to about one core):")
    print(
        table(
            [(f"{r.rate}/s", "  ".join(f"{n} {b:.2f}" for n, b in r.figures["cpu_cores_busy"].items())) for r in runs]
        )
    )
    print("where the time goes (p50 / p99 ms):")
    stage = "  ".join
    print(
        table(
            [
                (f"{r.rate}/s", stage(f"{n} {ms(v['p50'])}/{ms(v['p99'])}" for n, v in r.figures["stages_ms"].items()))
                for r in runs
            ]
        )
    )
    target_text = (
        ""
        if target_met is None
        else f"; p99 < {TARGET_P99_MS:.0f} ms at {TARGET_RATE}/s: {'met' if target_met else 'NOT met'}"
    )
    print(f"highest rate held: {max_held}/s (first not held: {first_failed or '-'}/s){target_text}")
    if crashed:
        print(f"tracebacks in the workers' logs ({LOGS}): {crashed}")

    harness.write_results(
        "latency",
        {
            "accounts": args.accounts,
            "partitions": kafka.partitions,
            "connections": args.connections,
            "database": args.database,
            "redis_socket_timeout": args.redis_socket_timeout,
            "worker_settings_from_environment": {k: os.environ[k] for k in TUNABLES if k in os.environ},
            "load_average_1m": round(os.getloadavg()[0], 2),
            "cpus": os.cpu_count(),
            "ready_s": round(result["ready_s"], 1),
            "total_s": round(time.monotonic() - started, 1),
            "rates": [r.figures for r in result["runs"]],
            "max_held_rate": max_held,
            "first_rate_not_held": first_failed,
            "target": {"rate": TARGET_RATE, "p99_ms": TARGET_P99_MS, "met": target_met},
            "ws_messages": result["ws_messages"],
            "worker_tracebacks": crashed,
            "stages": dict(STAGES),
        },
    )


if __name__ == "__main__":
    main()
