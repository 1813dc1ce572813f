"""End-to-end latency per rate: a deposit's 202 from the view → its outcome row on an authenticated websocket.

Runs processor, projector and daphne (DEBUG off) on fresh topics and a scratch database; this process is the
browser (login, accounts, /ws/live/ with hello and watch as the page does) and POSTs deposits open loop at
each of `--rates` for `--seconds`. Per rate: latency percentiles, HTTP answer times, where the time goes
(`issued_at` and `occurred_at` read back from Kafka; when a read_committed consumer of this process could
read the event; when the projector's push reached a channel-layer listener of this process), CPU per
process, and whether the rate was *held* (all answered 202 and updated within `--drain` s, no slowdown, no
websocket close, p99 < `--held-p99-ms`).

    .venv/bin/python -m bench.latency [--rates 50,100,150,200,300] [--seconds 10] [--web-processes 1,auto]

The web runs as deployed, daphne processes sharing one port under supervisord: 1, then N (WEB_PROCESSES, else
one per core), each against a fresh bank (topics, scratch database) in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp

from bank import messages
from bank.config import KafkaSettings
from bank.kafka import consume_batch, read_to_end
from bench import harness
from bench.harness import ROOT, table

LOGS = ROOT / "var" / "bench" / "latency"
PASSWORD = "latency-bench-2026"
ORIGIN = "http://127.0.0.1"
CMD_ID = re.compile(r'id="cmd-[0-9a-f-]{36}-([0-9a-f-]{36})"')  # cmd-<account id>-<command id>
TARGET_RATE, TARGET_P99_MS = 200, 100.0
SETTLE = 15.0  # seconds a rate that was not held may take to clear its backlog before the next one
TUNABLES = ("PROJECTOR_BATCH_", "DATABASE_POOL_SIZE", "KAFKA_PARTITIONS", "KAFKA_COMMAND_TIMEOUT")
WALL = time.time() - time.perf_counter()  # perf_counter() + WALL: the clock of the workers' timestamps
STAGES = {
    "send→view": "client request until the view built the command (issued_at)",
    "view→202": "Kafka confirmation, render, answer",
    "202→decided": "processor: consume, decide (the event's occurred_at)",
    "decided→readable": "processor's transaction commit until a read_committed consumer (of the bench) has the event",
    "readable→pushed": "projector: fetch, batch, DB transaction, channel-layer push (seen by a listener of the bench)",
    "pushed→ws": "daphne: channel layer to consumer, render, websocket frame",
}


@dataclass(slots=True)
class Record:
    """One command's times: perf_counter seconds, but `issued_at`/`occurred_at` (wall clock, from Kafka)."""

    account: str
    command_id: str
    scheduled: float
    accepted: float | None = None
    status: str = ""
    update: float | None = None
    issued_at: float | None = None
    occurred_at: float | None = None
    readable: float | None = None  # perf_counter, when the bench's read_committed consumer got the event
    pushed: float | None = None  # perf_counter, when the projector's push reached the bench's listener


def pct(values: list[float], q: float) -> float | None:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))] if ordered else None


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def quantiles(values: list[float], qs: tuple[int, ...] = (50, 95, 99)) -> dict[str, float | None]:
    figures = {f"p{q}": pct(values, q) for q in qs} | ({"max": max(values, default=None)} if len(qs) > 2 else {})
    return {k: None if v is None else round(v, 1) for k, v in figures.items()}


class Browser:
    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base, self.session, self.csrf = base, session, ""
        self.records: dict[str, Record] = {}
        self.ws_messages = 0
        self.ws_closes: list[tuple[float, int | None]] = []
        self.ws_ready = asyncio.Event()
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def post(self, path: str, data: dict[str, str]) -> int:
        headers = {"X-CSRFToken": self.csrf, "HX-Request": "true"}
        async with self.session.post(f"{self.base}{path}", data=data, headers=headers) as response:
            await response.read()
            return response.status

    async def open_account(self, name: str) -> str:
        command_id = uuid.uuid4()
        status = await self.post("/accounts/open", {"command_id": str(command_id), "name": name, "currency": "EUR"})
        if status != 202:
            raise RuntimeError(f"POST /accounts/open answered {status}")
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"bank:open:{command_id}"))  # as the view derives it

    async def deposit(self, record: Record) -> None:
        data = {"deposit-amount": "1.00", "deposit-command_id": record.command_id}
        try:
            record.status = str(await self.post(f"/accounts/{record.account}/deposit", data))
        except (aiohttp.ClientError, TimeoutError) as error:
            record.status = type(error).__name__
        record.accepted = time.perf_counter()
        if record.status == "202":
            await self.watch(record.account, record.command_id)

    async def watch(self, account: str, command_id: str) -> None:
        """As the page does for its new pending row (one lost with a closing socket comes with the next hello)."""
        if self.ws is not None and not self.ws.closed:
            with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                await self.ws.send_str(json.dumps({"type": "watch", "account": account, "command": command_id}))

    async def listen(self, url: str) -> None:
        """Stamp each command when the websocket brings its outcome row; reconnect as the page does."""
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
                if message.type == aiohttp.WSMsgType.TEXT:
                    self.ws_messages += 1
                    for command_id in CMD_ID.findall(message.data):
                        if (record := self.records.get(command_id)) is not None and record.update is None:
                            record.update = now
            self.ws_closes.append((time.perf_counter(), ws.close_code))
            print(f"  websocket closed (code {ws.close_code}); reconnecting", flush=True)
            await asyncio.sleep(0.2)

    async def run_rate(
        self, rate: int, seconds: float, accounts: list[str], args: Any, cpu: Any = None, drain: float | None = None
    ) -> Any:
        """Deposits at `rate`/s for `seconds`, open loop; then wait for answers and updates: (figures, records).

        Answers still missing `drain` seconds after the last send are given up (counted as errors); updates
        get the same deadline, then up to SETTLE more seconds to clear the backlog (counted late).
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
            if (delay := scheduled - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            lag.append((time.perf_counter() - scheduled) * 1000)
            records.append(record := Record(accounts[i % len(accounts)], str(uuid.uuid4()), scheduled))
            self.records[record.command_id] = record
            tasks.append(asyncio.create_task(self.deposit(record)))
        last_scheduled = start + (count - 1) / rate
        cpu_busy = cpu.busy() if cpu else {}
        deadline = last_scheduled + (drain or args.drain)
        _, unanswered = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.perf_counter()))
        for task in unanswered:
            task.cancel()
        await asyncio.gather(*unanswered, return_exceptions=True)
        for record in records:
            record.status = record.status or "unanswered"

        def pending() -> int:
            return sum(1 for r in records if r.status == "202" and r.update is None)

        while pending() and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        load_average = os.getloadavg()[0]
        settle_start = time.perf_counter()
        while pending() and time.perf_counter() < settle_start + SETTLE:
            await asyncio.sleep(0.05)
        settled = time.perf_counter() - settle_start
        late = sum(1 for r in records if r.update is not None and r.update > deadline)
        closes = [code for t, code in self.ws_closes if start <= t <= deadline]
        await asyncio.sleep(0.5)
        figures = evaluate(rate, seconds, records, lag, deadline, last_scheduled, closes, args.held_p99_ms)
        figures |= {"updates_late": late, "backlog_cleared_after_s": round(settled, 2)}
        figures |= {"load_average_1m": round(load_average, 2), "cpu_cores_busy": cpu_busy}
        return figures, records


def evaluate(
    rate: int, seconds: float, records: list[Record], lag: list[float], deadline: float, last: float,
    closes: list[int | None], held_p99_ms: float,
) -> dict[str, Any]:  # fmt: skip
    """A rate's figures, and whether it was held."""
    accepted = [r for r in records if r.status == "202"]
    errors = Counter(r.status for r in records if r.status != "202")
    done = [r for r in accepted if r.update is not None and r.accepted is not None and r.update <= deadline]
    missing = len(accepted) - len(done)
    latency = [(r.update - r.accepted) * 1000 for r in done]  # type: ignore[operator]
    third = max(1, len(done) // 3)
    first = pct([(r.update - r.scheduled) * 1000 for r in done[:third]], 50)  # type: ignore[operator]
    last_third = pct([(r.update - r.scheduled) * 1000 for r in done[-third:]], 50)  # type: ignore[operator]
    tail = max((r.update for r in done if r.update is not None), default=deadline) - last
    answered = [r.accepted for r in accepted if r.accepted is not None]
    span = max(answered) - records[0].scheduled if answered else 0.0
    p99 = pct(latency, 99)
    reasons = [
        reason
        for failed, reason in (
            (errors, f"{sum(errors.values())} not 202"),
            (missing, f"{missing} updates missing after {deadline - last:.0f}s"),
            (
                first and last_third and last_third > 2 * first + 25,
                f"end-to-end p50 grew {ms(first)} → {ms(last_third)} ms",
            ),
            (tail > 1.0, f"last update {tail:.1f}s after the last send"),
            ((pct(lag, 99) or 0) > 100, "the load generator fell behind its schedule"),
            (closes, f"the websocket closed {len(closes)}x (codes {closes})"),
            (p99 is not None and p99 > held_p99_ms, f"p99 {p99 or 0:.0f} ms is above {held_p99_ms:.0f} ms"),
        )
        if failed
    ]
    return {
        "rate": rate,
        "seconds": seconds,
        "commands": len(records),
        "accepted": len(accepted),
        "accepted_per_s": round(len(accepted) / span, 1) if span > 0 else None,
        "errors": dict(errors),
        "updates_missing": missing,
        "latency_ms": quantiles(latency),
        "http_ms": quantiles([(r.accepted - r.scheduled) * 1000 for r in records if r.accepted is not None]),
        "end_to_end_p50_first_third_ms": None if first is None else round(first, 1),
        "end_to_end_p50_last_third_ms": None if last_third is None else round(last_third, 1),
        "last_update_after_last_send_s": round(tail, 3),
        "send_lag_p99_ms": round(pct(lag, 99) or 0.0, 1),
        "websocket_closes": closes,
        "held": not reasons,
        "not_held_because": reasons,
    }


def stages(records: list[Record]) -> dict[str, dict[str, float | None]]:
    """Where the time goes, per stage (p50/p99 ms), over the commands whose every timestamp is known."""
    known = [r for r in records if None not in (r.accepted, r.update, r.issued_at, r.occurred_at, r.readable, r.pushed)]
    parts = [
        [(r.issued_at - (r.scheduled + WALL)) * 1000 for r in known],  # type: ignore[operator]
        [(r.accepted + WALL - r.issued_at) * 1000 for r in known],  # type: ignore[operator]
        [(r.occurred_at - (r.accepted + WALL)) * 1000 for r in known],  # type: ignore[operator]
        [(r.readable + WALL - r.occurred_at) * 1000 for r in known],  # type: ignore[operator]
        [(r.pushed - r.readable) * 1000 for r in known],  # type: ignore[operator]
        [(r.update - r.pushed) * 1000 for r in known],  # type: ignore[operator]
    ]
    return {name: quantiles(values, (50, 99)) for name, values in zip(STAGES, parts, strict=True)}


class Stamps:
    """When each command's event became readable to a read_committed consumer, and when its push reached the
    channel layer: a consumer thread and a channel-layer listener of this process (timing aids only)."""

    def __init__(self, kafka: KafkaSettings, records: dict[str, Record]) -> None:
        from confluent_kafka import OFFSET_END, TopicPartition

        from bank.kafka import reader

        self.records = records
        self.stop = threading.Event()
        # As the projector reads: read_committed, fetches as they come (the reader's defaults, a group of its own).
        self.consumer = reader(kafka, **{"group.id": f"bench-latency-{uuid.uuid4().hex[:8]}"})
        self.consumer.assign([TopicPartition(kafka.events_topic, p, OFFSET_END) for p in range(kafka.partitions)])
        self.thread = threading.Thread(target=self._read, name="bench-readable", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stop.is_set():
            # As the projector's consume_batch: consume(n, t) would wait all of t unless n messages came.
            for message in consume_batch(self.consumer, 1000, 0.05):
                now = time.perf_counter()
                if message.error() is not None:
                    continue
                with contextlib.suppress(messages.PoisonMessage):
                    envelope = messages.decode_event(message.value())
                    if (record := self.records.get(str(envelope.command_id))) is not None and record.readable is None:
                        record.readable = now
        self.consumer.close()

    async def listen_layer(self, prefix: str, accounts: list[str]) -> None:
        from channels_redis.pubsub import RedisPubSubChannelLayer
        from django.conf import settings

        from live.updates import account_group

        layer = RedisPubSubChannelLayer(hosts=[{"address": settings.REDIS_URL, "socket_timeout": None}], prefix=prefix)
        channel = await layer.new_channel()
        for account in accounts:
            await layer.group_add(account_group(account), channel)
        while True:
            message = await layer.receive(channel)
            now = time.perf_counter()
            for command_id in message.get("command_ids", []):
                if (record := self.records.get(command_id)) is not None and record.pushed is None:
                    record.pushed = now

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


def stamp_from_kafka(kafka: KafkaSettings, records: dict[str, Record]) -> None:
    """issued_at of each command and occurred_at of its event, read back from the topics."""
    for topic, decode, field in (
        (kafka.commands_topic, messages.decode_command, "issued_at"),
        (kafka.events_topic, messages.decode_event, "occurred_at"),
    ):
        for batch in read_to_end(kafka, topic):
            for message in batch:
                envelope: Any = decode(message.value())
                if (record := records.get(str(envelope.command_id))) is not None:
                    setattr(record, field, getattr(envelope, field).timestamp())


async def wait_for_accounts(accounts: list[str], workers: list[harness.Process], timeout: float = 120) -> None:
    """Until the accounts are projected (the processor and the projector are both up and working)."""
    from projections.models import Account

    def projected() -> bool:
        if dead := [w for w in workers if not w.alive()]:
            raise SystemExit(f"{dead[0].name} exited:\n{dead[0].tail()}")
        return Account.objects.filter(id__in=accounts).count() == len(accounts)

    await asyncio.to_thread(harness.wait_until, projected, timeout, 0.1, "the accounts projected (logs in var/bench)")


async def measure(args: Any, kafka: KafkaSettings, port: int, workers: list[harness.Process]) -> dict[str, Any]:
    from django.contrib.auth.models import User

    measuring = time.monotonic()
    username = f"latency-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(User.objects.create_user, username, password=PASSWORD)
    cpu = harness.CpuMeter(harness.cpu_pids(workers) | {"load generator": os.getpid()})
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=args.connections),
        cookie_jar=aiohttp.CookieJar(unsafe=True),
        timeout=aiohttp.ClientTimeout(total=60),
    ) as session:
        browser = Browser(f"http://127.0.0.1:{port}", session)
        browser.csrf = await harness.log_in(session, browser.base, username, PASSWORD)
        accounts = [await browser.open_account(f"Latency {i + 1}") for i in range(args.accounts)]
        await wait_for_accounts(accounts, workers)
        ready_s = time.monotonic() - measuring
        listener = asyncio.create_task(browser.listen(f"ws://127.0.0.1:{port}/ws/live/"))
        stamps = Stamps(kafka, browser.records)
        layer_listener = asyncio.create_task(stamps.listen_layer(workers[-1].env["CHANNELS_PREFIX"], accounts))
        await asyncio.wait_for(browser.ws_ready.wait(), 30)
        try:
            await browser.run_rate(50, 1.0, accounts, args, drain=5.0)  # not measured: first renders, connections
            runs = []
            for rate in args.rates:
                runs.append(figures := await browser.run_rate(rate, args.seconds, accounts, args, cpu))
                lat, held = figures[0]["latency_ms"], figures[0]["held"]
                because = "held" if held else "NOT held: " + "; ".join(figures[0]["not_held_because"])
                print(f"  {rate:>5}/s: latency p50 {ms(lat['p50'])} p99 {ms(lat['p99'])} ms, {because}", flush=True)
            if listener.done():
                listener.result()  # raises what stopped it
        finally:
            listener.cancel()
            layer_listener.cancel()
            await asyncio.gather(listener, layer_listener, return_exceptions=True)
            stamps.close()
    return {"ready_s": ready_s, "runs": runs, "records": browser.records, "ws_messages": browser.ws_messages}


def row(figures: dict[str, Any]) -> str:
    lat, http = figures["latency_ms"], figures["http_ms"]
    errors = sum(figures["errors"].values()) + figures["updates_missing"]
    return (
        f"{ms(lat['p50']):>6} {ms(lat['p95']):>6} {ms(lat['p99']):>6} {ms(lat['max']):>6} | "
        f"{ms(http['p50']):>5} {ms(http['p99']):>6} | {figures['accepted_per_s'] or 0:>7.1f} | {errors:>6} | "
        f"{ms(figures['end_to_end_p50_first_third_ms']):>6} → {ms(figures['end_to_end_p50_last_third_ms']):<6} | "
        f"{'held' if figures['held'] else 'NOT held'}"
    )


def run_tier(args: Any, database: str, web_processes: int) -> dict[str, Any]:
    """Every rate against the bank with `web_processes` daphne processes (supervisord, one port); its figures."""
    started = time.monotonic()
    with harness.bank_processes("latency", database, LOGS, web_processes) as (kafka, port, workers):
        print(
            "  workers: " + ", ".join(f"{n} pid {p}" for n, p in harness.cpu_pids(workers).items()) + f"; port {port}"
        )
        result = asyncio.run(measure(args, kafka, port, workers))
        stamp_from_kafka(kafka, result["records"])
    crashed = harness.tracebacks(workers)

    rates = [figures | {"stages_ms": stages(records)} for figures, records in result["runs"]]
    max_held = max((r["rate"] for r in rates if r["held"]), default=0)
    first_failed = min((r["rate"] for r in rates if not r["held"] and r["rate"] > max_held), default=None)
    target = next((r for r in rates if r["rate"] == TARGET_RATE), None)
    target_met = (
        None if target is None else bool(target["held"] and (target["latency_ms"]["p99"] or 1e9) < TARGET_P99_MS)
    )

    print(
        f"end-to-end latency, 202 from the view → outcome on the websocket, {web_processes} daphne "
        f"({args.accounts} accounts, {kafka.partitions} partitions, database {database}, "
        f"load average {os.getloadavg()[0]:.1f})"
    )
    groups = f"{'latency ms, 202 → websocket':^27} | {'http ms':^12} | {'':7} | {'':6} | {'e2e p50, thirds':^15} |"
    columns = f"{'p50':>6} {'p95':>6} {'p99':>6} {'max':>6} | {'p50':>5} {'p99':>6} | {'202/s':>7} | {'errors':>6} | {'first':>6} → {'last':<6} |"
    print(table([("", groups), ("rate", columns)] + [(f"{r['rate']}/s", row(r)) for r in rates]))
    print("CPU while sending, in cores busy (the GIL holds a process's Python near one core):")
    print(table([(f"{r['rate']}/s", "  ".join(f"{n} {b:.2f}" for n, b in r["cpu_cores_busy"].items())) for r in rates]))
    print("where the time goes (p50 / p99 ms):")
    stage = "{} {}/{}".format
    print(
        table(
            [
                (f"{r['rate']}/s", "  ".join(stage(n, ms(v["p50"]), ms(v["p99"])) for n, v in r["stages_ms"].items()))
                for r in rates
            ]
        )
    )
    met = {None: "", True: "met", False: "NOT met"}[target_met]
    print(
        f"highest rate held: {max_held}/s (first not held: {first_failed or '-'}/s); p99 < {TARGET_P99_MS:.0f} ms at {TARGET_RATE}/s: {met or '-'}"
    )
    if crashed:
        print(f"tracebacks in the workers' logs ({LOGS}): {crashed}")
    return {
        "web_processes": web_processes,
        "partitions": kafka.partitions,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "ready_s": round(result["ready_s"], 1),
        "total_s": round(time.monotonic() - started, 1),
        "rates": rates,
        "max_held_rate": max_held,
        "first_rate_not_held": first_failed,
        "target": {"rate": TARGET_RATE, "p99_ms": TARGET_P99_MS, "met": target_met},
        "ws_messages": result["ws_messages"],
        "worker_tracebacks": crashed,
    }


def main() -> None:
    args = harness.arguments(
        __doc__, rates="50,100,150,200,300", seconds=10.0, drain=5.0, held_p99_ms=1000.0, accounts=1,
        connections=32, web_processes="1,auto", database=None,
    )  # fmt: skip
    args.rates = [int(r) for r in args.rates.split(",")]
    harness.setup_django()
    database = args.database or harness.scratch_name("bench")
    counts = [harness.web_processes_default() if x.strip() == "auto" else int(x) for x in args.web_processes.split(",")]
    tiers = [run_tier(args, database, n) for n in dict.fromkeys(counts)]
    first = tiers[0]  # at the top level, as bench/summary.py reads them: the first count (1 process)
    harness.write_results(
        "latency",
        {
            "accounts": args.accounts,
            "connections": args.connections,
            "database": database,
            "worker_settings_from_environment": {k: v for k, v in os.environ.items() if k.startswith(TUNABLES)},
            "cpus": os.cpu_count(),
            **first,
            "by_web_processes": {str(t["web_processes"]): t for t in tiers},
            "stages": STAGES,
        },
    )


if __name__ == "__main__":
    main()
