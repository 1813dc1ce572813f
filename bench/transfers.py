"""Transfers: saga throughput through the processor against deposits, and the payee's live latency.

Two measurements in one run, on fresh topics:

1. Throughput (the processor in this process, as bench/processor.py runs it): `--accounts` EUR
   accounts are opened and funded, then `--deposits` Deposit commands are decided (deposits/s,
   the baseline), then `--transfers` TransferMoney commands between random pairs of them, each
   one cent so that none is refused; deposits and transfers alternate twice (the mean of each is
   reported, and each round's ratio). A transfer counts once its third step (TransferCompleted
   on the source) is decided: debit, credit and completion are three decisions, usually on two
   partitions, with two trips through bank.commands in between, and five messages encoded
   against a deposit's one. Goal: transfers/s >= 0.4x deposits/s.
2. Latency (the whole bank as processes: processor, projector, daphne, as bench/latency.py runs
   them): a payer POSTs transfers to the payee's account number at `--rate`/s, open loop, for
   `--seconds`; the payee's authenticated websocket is watched. Per transfer:

       latency = t_update - t_accepted
       t_accepted  when the 202 answer of POST /accounts/<id>/transfer arrived
       t_update    when the payee's websocket brought the credit's row (<li id="cmd-<account>-<credit step id>">;
                   the payee's socket watches that step id, as a page watches its pending rows)

   Goal: p99 < 150 ms at 50 transfers/s. The baseline, in the same run at the same rate: the
   payer's deposits, 202 → the outcome row on the payer's own websocket (one decision instead of
   two on two partitions with a trip through bank.commands between them). Where a transfer's
   time goes comes from the events' times read back from Kafka: view → debit decided → credit
   decided → payee's websocket.

    .venv/bin/python -m bench.transfers [--transfers 4000] [--rate 50 --seconds 10]
    .venv/bin/python -m bench.transfers --accounts 20 --deposits 200 --transfers 100 --seconds 2   # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import secrets
import time
import uuid
from typing import Any

import aiohttp

from bank import domain, messages
from bank.account_number import account_number
from bank.config import KafkaSettings
from bank.kafka import read_to_end
from bench import harness
from bench.harness import table, write_results
from bench.latency import PASSWORD, WALL, Browser, Record, pct, wait_for_accounts
from bench.processor import produce_all
from devservices.process import free_port

LOGS = harness.ROOT / "var" / "bench" / "transfers"
TARGET_RATIO, TARGET_P99_MS = 0.4, 150.0


# --- 1. throughput ---


def decide_until(processor: Any, total: int, timeout: float = 600.0) -> float:
    """Seconds until the processor has decided `total` commands in all (saga steps included)."""
    started = time.perf_counter()
    while processor.decided < total:
        processor.process_batch()
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"only {processor.decided} of {total} commands decided after {timeout:.0f}s")
    return time.perf_counter() - started


def encoded(commands: list[domain.Command]) -> list[tuple[bytes, bytes, messages.Headers]]:
    out = []
    for command in commands:
        command_id = command.transfer_id if isinstance(command, domain.TransferMoney) else uuid.uuid4()
        out.append(messages.encode(messages.CommandEnvelope.new(command, "user:bench", command_id)))
    return out


def throughput(kafka: KafkaSettings, accounts: int, deposits: int, transfers: int) -> dict[str, Any]:
    rng = random.Random(7)
    ids = [uuid.uuid4() for _ in range(accounts)]
    setup = [domain.OpenAccount(a, "bench", "Bench", "EUR") for a in ids] + [
        domain.Deposit(a, 1_000_000_00) for a in ids
    ]
    from consumers.processor import Processor

    processor = Processor(kafka, instance=f"bench-{uuid.uuid4().hex[:6]}", group=f"tx-{uuid.uuid4().hex[:6]}")
    processor.start()
    while not processor.consumer.assignment():
        processor.process_batch()
    produce_all(kafka, kafka.commands_topic, encoded(setup))  # type: ignore[arg-type]
    decide_until(processor, len(setup))

    # Deposits and transfers alternate, twice: a shared machine drifts, and the pairs show by how much.
    done = len(setup)
    rounds: list[tuple[float, float]] = []
    for _ in range(2):
        produce_all(
            kafka, kafka.commands_topic, encoded([domain.Deposit(ids[i % accounts], 1_00) for i in range(deposits)])
        )
        deposit_s = decide_until(processor, done + deposits)
        done += deposits
        pairs = [rng.sample(ids, 2) for _ in range(transfers)]
        produce_all(
            kafka, kafka.commands_topic, encoded([domain.TransferMoney(s, uuid.uuid4(), d, 1) for s, d in pairs])
        )
        transfer_s = decide_until(processor, done + 3 * transfers)
        done += 3 * transfers
        rounds.append((deposits / deposit_s, transfers / transfer_s))
    processor.close()
    deposits_per_s = sum(d for d, _ in rounds) / len(rounds)
    transfers_per_s = sum(t for _, t in rounds) / len(rounds)
    ratio = transfers_per_s / deposits_per_s
    return {
        "accounts": accounts,
        "deposits": deposits,
        "transfers": transfers,
        "rounds": [
            {"deposits_per_s": round(d), "transfers_per_s": round(t), "ratio": round(t / d, 3)} for d, t in rounds
        ],
        "deposits_per_s": round(deposits_per_s),
        "transfers_completed_per_s": round(transfers_per_s),
        "decisions_per_s_during_transfers": round(3 * transfers_per_s),
        "ratio_to_deposits": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "met": ratio >= TARGET_RATIO,
    }


# --- 2. latency ---


async def post(browser: Browser, url: str, data: dict[str, str]) -> tuple[int, str]:
    headers = {"X-CSRFToken": browser.csrf, "HX-Request": "true"}
    async with browser.session.post(f"{browser.base}{url}", data=data, headers=headers) as response:
        return response.status, await response.text()


def stages(kafka: KafkaSettings, by_transfer: dict[str, Record]) -> dict[str, dict[str, float | None]]:
    """p50/p99 of each leg of a transfer, from the events' occurred_at (wall clock) read back from Kafka."""
    debited: dict[str, float] = {}
    credited: dict[str, float] = {}
    for batch in read_to_end(kafka, kafka.events_topic):
        for message in batch:
            event = messages.decode_event(message.value())
            if isinstance(event.event, domain.TransferDebited):
                debited[str(event.event.transfer_id)] = event.occurred_at.timestamp()
            elif isinstance(event.event, domain.TransferCredited):
                credited[str(event.event.transfer_id)] = event.occurred_at.timestamp()
    legs: dict[str, list[float]] = {"202 → debit decided": [], "debit → credit decided": [], "credit → payee ws": []}
    for transfer_id, r in by_transfer.items():
        if r.accepted is None or r.update is None or transfer_id not in debited or transfer_id not in credited:
            continue
        legs["202 → debit decided"].append((debited[transfer_id] - (r.accepted + WALL)) * 1000)
        legs["debit → credit decided"].append((credited[transfer_id] - debited[transfer_id]) * 1000)
        legs["credit → payee ws"].append((r.update + WALL - credited[transfer_id]) * 1000)
    return {name: {"p50": _r(pct(v, 50)), "p99": _r(pct(v, 99))} for name, v in legs.items()}


async def latency(
    args: argparse.Namespace, kafka: KafkaSettings, port: int, workers: list[harness.Process]
) -> dict[str, Any]:
    from django.contrib.auth.models import User

    base = f"http://127.0.0.1:{port}"
    names = [f"payer-{uuid.uuid4().hex[:6]}", f"payee-{uuid.uuid4().hex[:6]}"]
    for name in names:
        await asyncio.to_thread(User.objects.create_user, name, password=PASSWORD)
    jar = aiohttp.CookieJar
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32), cookie_jar=jar(unsafe=True)) as payer_session,
        aiohttp.ClientSession(cookie_jar=jar(unsafe=True)) as payee_session,
    ):
        payer, payee = Browser(base, payer_session), Browser(base, payee_session)
        await payer.login(names[0])
        await payee.login(names[1])
        source = await payer.open_account("Payer")
        destination = await payee.open_account("Payee")
        await wait_for_accounts([source, destination], workers, timeout=120)
        status, body = await post(
            payer, f"/accounts/{source}/deposit", {"deposit-amount": "100000", "deposit-command_id": str(uuid.uuid4())}
        )
        if status != 202:
            raise SystemExit(f"deposit answered {status}: {body[:300]}")
        number = account_number(uuid.UUID(destination))
        listeners = [asyncio.create_task(b.listen(f"ws://127.0.0.1:{port}/ws/live/")) for b in (payer, payee)]
        await asyncio.wait_for(payee.ws_ready.wait(), 30)
        await asyncio.wait_for(payer.ws_ready.wait(), 30)
        by_transfer: dict[str, Record] = {}

        async def deposits(rate: int, seconds: float) -> list[Record]:
            count, tasks, records = max(1, round(rate * seconds)), [], []
            start = time.perf_counter() + 0.05
            for i in range(count):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                record = Record(rate, source, str(uuid.uuid4()), start + i / rate)
                payer.records[record.command_id] = record
                records.append(record)
                tasks.append(asyncio.create_task(payer.deposit(record)))
            await asyncio.gather(*tasks)
            deadline = time.monotonic() + args.drain
            while any(r.status == "202" and r.update is None for r in records) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            return records

        async def send(record: Record, transfer_id: str) -> None:
            data = {"transfer-command_id": transfer_id, "transfer-to_number": number, "transfer-amount": "0.01"}
            try:
                status, _ = await post(payer, f"/accounts/{source}/transfer", data)
                record.status = str(status)
            except (aiohttp.ClientError, TimeoutError) as error:
                record.status = type(error).__name__
            record.accepted = time.perf_counter()
            if record.status == "202" and payee.ws is not None and not payee.ws.closed:
                watch = {"type": "watch", "account": destination, "command": record.command_id}
                with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                    await payee.ws.send_str(json.dumps(watch))

        async def run(rate: int, seconds: float) -> list[Record]:
            count, tasks, records = max(1, round(rate * seconds)), [], []
            start = time.perf_counter() + 0.05
            for i in range(count):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                transfer_id = str(uuid.uuid4())
                # The payee's page learns of the credit: its row is named by the credit step's command id.
                credit_id = str(domain.step_id(uuid.UUID(transfer_id), "credit"))
                record = Record(rate, destination, credit_id, start + i / rate)
                payee.records[credit_id] = record
                by_transfer[transfer_id] = record
                records.append(record)
                tasks.append(asyncio.create_task(send(record, transfer_id)))
            await asyncio.gather(*tasks)
            deadline = time.monotonic() + args.drain
            while any(r.status == "202" and r.update is None for r in records) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            return records

        try:
            await run(10, 1.0)  # warm-up, not measured
            await deposits(10, 1.0)
            records = await run(args.rate, args.seconds)
            await asyncio.sleep(1.0)
            baseline = await deposits(args.rate, args.seconds)
        finally:
            for listener in listeners:
                listener.cancel()
            await asyncio.gather(*listeners, return_exceptions=True)
    latencies = [(r.update - r.accepted) * 1000 for r in records if r.update is not None and r.accepted is not None]
    deposit_latencies = [
        (r.update - r.accepted) * 1000 for r in baseline if r.update is not None and r.accepted is not None
    ]
    answers = [(r.accepted - r.scheduled) * 1000 for r in records if r.accepted is not None]
    statuses: dict[str, int] = {}
    for r in records:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    p99 = pct(latencies, 99)
    return {
        "rate": args.rate,
        "seconds": args.seconds,
        "transfers": len(records),
        "answers": statuses,
        "updates_seen": len(latencies),
        "latency_ms": {"p50": _r(pct(latencies, 50)), "p99": _r(p99), "max": _r(max(latencies, default=None))},
        "http_answer_ms": {"p50": _r(pct(answers, 50)), "p99": _r(pct(answers, 99))},
        "stages_ms": stages(kafka, by_transfer),
        "baseline_deposits": {
            "updates_seen": f"{len(deposit_latencies)} of {len(baseline)}",
            "latency_ms": {"p50": _r(pct(deposit_latencies, 50)), "p99": _r(pct(deposit_latencies, 99))},
        },
        "target_p99_ms": TARGET_P99_MS,
        "met": p99 is not None and p99 < TARGET_P99_MS and len(latencies) == len(records),
    }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=600)
    parser.add_argument("--deposits", type=int, default=15_000)
    parser.add_argument("--transfers", type=int, default=4_000)
    parser.add_argument("--rate", type=int, default=50, help="transfers/s for the latency run")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--drain", type=float, default=5.0, help="seconds after the last send an update may take")
    parser.add_argument("--database", help="scratch database, made and migrated (default: DATABASE_URL's + _bench)")
    args = parser.parse_args()
    harness.setup_django()
    logging.getLogger().setLevel(logging.WARNING)
    args.database = args.database or harness.scratch_name("bench")
    from django.conf import settings

    kafka = harness.fresh_kafka("transfers")
    flow = throughput(kafka, args.accounts, args.deposits, args.transfers)
    print(f"saga throughput, {args.transfers} transfers vs {args.deposits} deposits, {kafka.partitions} partitions")
    print(
        table(
            [
                ("deposits decided (baseline)", f"{flow['deposits_per_s']:>8,} /s"),
                ("transfers completed (3 decisions each)", f"{flow['transfers_completed_per_s']:>8,} /s"),
                ("transfers / deposits", f"{flow['ratio_to_deposits']:.2f}x (goal >= {TARGET_RATIO}x)"),
                ("  per round", "  ".join(f"{r['ratio']:.2f}x" for r in flow["rounds"])),
            ]
        ),
        flush=True,
    )

    live_kafka = harness.fresh_kafka("transfers-live")
    database_url = harness.use_bench_database(args.database)
    env = harness.worker_env(
        live_kafka, database_url, settings.REDIS_URL, CHANNELS_PREFIX=f"bench-transfers-{uuid.uuid4().hex[:8]}"
    )
    env |= {"DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": secrets.token_hex(32), "LOG_LEVEL": "WARNING"}
    port = free_port()
    workers: list[harness.Process] = []
    try:
        for name, argv in (
            ("processor", harness.manage("run_processor", "--instance", f"transfers-{port}")),
            ("projector", harness.manage("run_projector")),
            ("daphne", harness.daphne(port)),
        ):
            workers.append(harness.Process(name, argv, env, LOGS))
        harness.serving(f"http://127.0.0.1:{port}", workers[-1])
        live = asyncio.run(latency(args, live_kafka, port, workers))
    finally:
        for worker in workers:
            worker.stop()
    crashed = {w.name: n for w in workers if (n := w.log().count("Traceback"))}
    print(f"payee's live update, 202 from the transfer view → credit row on the payee's websocket, at {args.rate}/s")
    baseline = live["baseline_deposits"]
    print(
        table(
            [
                ("answers", ", ".join(f"{k}: {v}" for k, v in live["answers"].items())),
                ("updates seen", f"{live['updates_seen']} of {live['transfers']}"),
                ("latency p50 / p99", f"{live['latency_ms']['p50']} / {live['latency_ms']['p99']} ms (goal p99 < 150)"),
                ("HTTP answer p50 / p99", f"{live['http_answer_ms']['p50']} / {live['http_answer_ms']['p99']} ms"),
                *((f"  {name}", f"{v['p50']} / {v['p99']} ms") for name, v in live["stages_ms"].items()),
                (
                    "baseline: deposit → own ws p50 / p99",
                    f"{baseline['latency_ms']['p50']} / {baseline['latency_ms']['p99']} ms ({baseline['updates_seen']} seen)",
                ),
            ]
        )
    )
    if crashed:
        print(f"tracebacks in the workers' logs ({LOGS}): {crashed}")
    write_results(
        "transfers",
        {
            "partitions": kafka.partitions,
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "throughput": flow,
            "latency": live,
            "worker_tracebacks": crashed,
        },
    )


if __name__ == "__main__":
    main()
