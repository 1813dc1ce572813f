"""Transfers: saga throughput through the processor against deposits, and the payee's live latency.

1. Throughput (the processor in this process, as bench/processor.py runs it): `--accounts` funded EUR accounts,
   then `--deposits` Deposit commands (deposits/s, the baseline), then `--transfers` one-cent TransferMoney
   commands between random pairs; deposits and transfers alternate twice (means and each round's ratio). A
   transfer counts once its third decision (TransferCompleted on the source) is made: debit, credit and
   completion, with two trips through bank.commands. Goal: transfers/s >= 0.4x deposits/s.
2. Latency (processor, projector, daphne as processes, as bench/latency.py runs them): a payer POSTs transfers
   to the payee's account number at `--rate`/s, open loop, for `--seconds`; per transfer, the 202 of
   POST /accounts/<id>/transfer → the credit's row (<li id="cmd-<account>-<credit step id>">) on the payee's
   websocket. Goal: p99 < 150 ms at 50/s. Baseline at the same rate: the payer's deposits, 202 → the outcome
   row on the payer's own websocket. The legs (view → debit → credit → payee's websocket) come from the
   events' times read back from Kafka.

   With `--profile` (py-spy on PATH or in the venv), py-spy samples daphne and the projector during the measured
   transfers; the heaviest functions are printed and written with the results.

    .venv/bin/python -m bench.transfers [--transfers 4000] [--rate 50 --seconds 10] [--profile]
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp

from bank import domain, messages
from bank.account_number import account_number
from bank.config import KafkaSettings
from bank.kafka import read_to_end
from bench import harness
from bench.latency import PASSWORD, WALL, Browser, Record, pct, quantiles, wait_for_accounts
from bench.processor import send_commands
from consumers.processor import Processor, ProcessorConfig

LOGS = harness.ROOT / "var" / "bench" / "transfers"
TARGET_RATIO, TARGET_P99_MS = 0.4, 150.0


def encoded(commands: list[domain.Command]) -> list[tuple[bytes, bytes, messages.Headers]]:
    """Encoded commands; a transfer's command id is its transfer id, as the view sends it."""
    return [
        messages.encode(messages.CommandEnvelope.new(c, "user:bench", getattr(c, "transfer_id", None) or uuid.uuid4()))
        for c in commands
    ]


def throughput(kafka: KafkaSettings, accounts: int, deposits: int, transfers: int) -> dict[str, Any]:
    rng = random.Random(7)
    ids = [uuid.uuid4() for _ in range(accounts)]
    processor = Processor(
        kafka, ProcessorConfig(instance=f"bench-{uuid.uuid4().hex[:6]}", group=f"tx-{uuid.uuid4().hex[:6]}")
    )
    processor.start()

    def decide(commands: list[domain.Command], decisions: int) -> float:
        total = processor.decided + decisions
        send_commands(kafka, encoded(commands))
        return harness.time_until(processor.process_batch, lambda: processor.decided >= total, "processor")

    decide([domain.OpenAccount(a, "bench", "Bench", "EUR") for a in ids], accounts)
    decide([domain.Deposit(a, 1_000_000_00) for a in ids], accounts)
    rounds = []  # deposits and transfers alternate, twice: a shared machine drifts, and the pairs show how much
    for _ in range(2):
        deposit_s = decide([domain.Deposit(ids[i % accounts], 1_00) for i in range(deposits)], deposits)
        pairs = [rng.sample(ids, 2) for _ in range(transfers)]
        transfer_s = decide([domain.TransferMoney(s, uuid.uuid4(), d, 1) for s, d in pairs], 3 * transfers)
        rounds.append((deposits / deposit_s, transfers / transfer_s))
    processor.close()
    deposits_per_s, transfers_per_s = (sum(r[i] for r in rounds) / len(rounds) for i in (0, 1))
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


def latencies(records: list[Record]) -> list[float]:
    return [(r.update - r.accepted) * 1000 for r in records if r.update is not None and r.accepted is not None]


def stages(kafka: KafkaSettings, by_transfer: dict[str, Record]) -> dict[str, dict[str, float | None]]:
    """p50/p99 of each leg of a transfer, from the events' occurred_at (wall clock) read back from Kafka."""
    decided: dict[type, dict[str, float]] = {domain.TransferDebited: {}, domain.TransferCredited: {}}
    for batch in read_to_end(kafka, kafka.events_topic):
        for message in batch:
            envelope = messages.decode_event(message.value())
            if isinstance(event := envelope.event, domain.TransferDebited | domain.TransferCredited):
                decided[type(event)][str(event.transfer_id)] = envelope.occurred_at.timestamp()
    debited, credited = decided[domain.TransferDebited], decided[domain.TransferCredited]
    legs: dict[str, list[float]] = {"202 → debit decided": [], "debit → credit decided": [], "credit → payee ws": []}
    for t, r in by_transfer.items():
        if r.accepted is not None and r.update is not None and t in debited and t in credited:
            legs["202 → debit decided"].append((debited[t] - (r.accepted + WALL)) * 1000)
            legs["debit → credit decided"].append((credited[t] - debited[t]) * 1000)
            legs["credit → payee ws"].append((r.update + WALL - credited[t]) * 1000)
    return {name: quantiles(values, (50, 99)) for name, values in legs.items()}


async def open_loop(
    rate: int, seconds: float, drain: float, start: Callable[[float], Coroutine[Any, Any, Record]]
) -> list[Record]:
    """`start(scheduled)` `rate` times a second for `seconds`; then up to `drain` s for the accepted ones' updates."""
    begin = time.perf_counter() + 0.05
    tasks: list[asyncio.Task[Record]] = []
    for i in range(max(1, round(rate * seconds))):
        if (delay := begin + i / rate - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(start(begin + i / rate)))
    records = await asyncio.gather(*tasks)
    deadline = time.monotonic() + drain
    while any(r.status == "202" and r.update is None for r in records) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return records


async def latency(args: Any, kafka: KafkaSettings, port: int, workers: list[harness.Process]) -> dict[str, Any]:
    from django.contrib.auth.models import User

    base, names = f"http://127.0.0.1:{port}", [f"{who}-{uuid.uuid4().hex[:6]}" for who in ("payer", "payee")]
    for name in names:
        await asyncio.to_thread(User.objects.create_user, name, password=PASSWORD)
    jar = aiohttp.CookieJar
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32), cookie_jar=jar(unsafe=True)) as payer_session,
        aiohttp.ClientSession(cookie_jar=jar(unsafe=True)) as payee_session,
    ):
        payer, payee = Browser(base, payer_session), Browser(base, payee_session)
        for browser, name in ((payer, names[0]), (payee, names[1])):
            browser.csrf = await harness.log_in(browser.session, base, name, PASSWORD)
        source, destination = await payer.open_account("Payer"), await payee.open_account("Payee")
        await wait_for_accounts([source, destination], workers)
        data = {"deposit-amount": "100000", "deposit-command_id": str(uuid.uuid4())}
        if (status := await payer.post(f"/accounts/{source}/deposit", data)) != 202:
            raise SystemExit(f"the payer's deposit answered {status}")
        number = account_number(uuid.UUID(destination))
        listeners = [asyncio.create_task(b.listen(f"ws://127.0.0.1:{port}/ws/live/")) for b in (payer, payee)]
        for browser in (payer, payee):
            await asyncio.wait_for(browser.ws_ready.wait(), 30)
        by_transfer: dict[str, Record] = {}

        async def deposit(scheduled: float) -> Record:
            record = Record(source, str(uuid.uuid4()), scheduled)
            payer.records[record.command_id] = record
            await payer.deposit(record)
            return record

        async def transfer(scheduled: float) -> Record:
            transfer_id = str(uuid.uuid4())  # the payee's page learns of the credit by the credit step's id
            credit = domain.step_id(uuid.UUID(source), uuid.UUID(transfer_id), "credit")
            record = Record(destination, str(credit), scheduled)
            payee.records[record.command_id] = by_transfer[transfer_id] = record
            data = {"transfer-command_id": transfer_id, "transfer-to_number": number, "transfer-amount": "0.01"}
            try:
                record.status = str(await payer.post(f"/accounts/{source}/transfer", data))
            except (aiohttp.ClientError, TimeoutError) as error:
                record.status = type(error).__name__
            record.accepted = time.perf_counter()
            if record.status == "202":
                await payee.watch(destination, record.command_id)
            return record

        profile: dict[str, dict[str, list[str]]] = {}
        try:
            await open_loop(10, 1.0, args.drain, transfer)  # warm-up, not measured
            await open_loop(10, 1.0, args.drain, deposit)
            by_transfer.clear()
            spies = []
            if args.profile:
                pids = harness.cpu_pids([w for w in workers if w.name in ("daphne", "projector")])
                out = LOGS / "profile"
                spies = [(name, harness.py_spy([pid], args.seconds, out), out.with_name(f"profile-{pid}.txt"))
                         for name, pid in pids.items()]  # fmt: skip
            records = await open_loop(args.rate, args.seconds, args.drain, transfer)
            for name, started, path in spies:
                for spy in started:
                    await asyncio.to_thread(spy.wait, 30)
                profile[name] = harness.profile_top([path])
            await asyncio.sleep(1.0)
            baseline = await open_loop(args.rate, args.seconds, args.drain, deposit)
        finally:
            for listener in listeners:
                listener.cancel()
            await asyncio.gather(*listeners, return_exceptions=True)
    transfer_ms, deposit_ms = latencies(records), latencies(baseline)
    http_ms, p99 = [(r.accepted - r.scheduled) * 1000 for r in records if r.accepted is not None], pct(transfer_ms, 99)
    deposit_http_ms = [(r.accepted - r.scheduled) * 1000 for r in baseline if r.accepted is not None]
    return {
        "rate": args.rate,
        "seconds": args.seconds,
        "transfers": len(records),
        "answers": dict(Counter(r.status for r in records)),
        "updates_seen": len(transfer_ms),
        "latency_ms": quantiles(transfer_ms, (50, 99)) | {"max": round(max(transfer_ms), 1) if transfer_ms else None},
        "http_answer_ms": quantiles(http_ms, (50, 99)),
        "stages_ms": stages(kafka, by_transfer),
        "baseline_deposits": {
            "updates_seen": f"{len(deposit_ms)} of {len(baseline)}",
            "latency_ms": quantiles(deposit_ms, (50, 99)),
            "http_answer_ms": quantiles(deposit_http_ms, (50, 99)),
        },
        "profile": profile,
        "target_p99_ms": TARGET_P99_MS,
        "met": p99 is not None and p99 < TARGET_P99_MS and len(transfer_ms) == len(records),
    }


def main() -> None:
    args = harness.arguments(
        __doc__,
        accounts=600,
        deposits=15_000,
        transfers=4_000,
        rate=50,
        seconds=10.0,
        drain=5.0,
        database=None,
        profile=False,
    )
    harness.setup_django()
    kafka = harness.fresh_kafka("transfers")
    flow = throughput(kafka, args.accounts, args.deposits, args.transfers)
    print(f"saga throughput, {args.transfers} transfers vs {args.deposits} deposits, {kafka.partitions} partitions")
    print(
        harness.table(
            [
                ("deposits decided (baseline)", f"{flow['deposits_per_s']:>8,} /s"),
                ("transfers completed (3 decisions each)", f"{flow['transfers_completed_per_s']:>8,} /s"),
                ("transfers / deposits", f"{flow['ratio_to_deposits']:.2f}x (goal >= {TARGET_RATIO}x)"),
                ("  per round", "  ".join(f"{r['ratio']:.2f}x" for r in flow["rounds"])),
            ]
        ),
        flush=True,
    )
    with harness.bank_processes("transfers-live", args.database, LOGS) as (live_kafka, port, workers):
        live = asyncio.run(latency(args, live_kafka, port, workers))
    crashed = harness.tracebacks(workers)
    lat, http, baseline = live["latency_ms"], live["http_answer_ms"], live["baseline_deposits"]
    print(f"payee's live update, 202 from the transfer view → credit row on the payee's websocket, at {args.rate}/s")
    print(
        harness.table(
            [
                ("answers", ", ".join(f"{k}: {v}" for k, v in live["answers"].items())),
                ("updates seen", f"{live['updates_seen']} of {live['transfers']}"),
                ("latency p50 / p99", f"{lat['p50']} / {lat['p99']} ms (goal p99 < 150)"),
                ("HTTP answer p50 / p99", f"{http['p50']} / {http['p99']} ms"),
                *((f"  {name}", f"{v['p50']} / {v['p99']} ms") for name, v in live["stages_ms"].items()),
                (
                    "baseline: deposit → own ws p50 / p99",
                    f"{baseline['latency_ms']['p50']} / {baseline['latency_ms']['p99']} ms "
                    f"({baseline['updates_seen']} seen)",
                ),
                (
                    "baseline: deposit view's answer p50 / p99",
                    f"{baseline['http_answer_ms']['p50']} / {baseline['http_answer_ms']['p99']} ms",
                ),
                ("load average (1 min)", f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"),
            ]
        )
    )
    for name, top in live["profile"].items():
        print(f"profile of {name} during the transfers ({top.get('samples', ['0'])[0]} samples), inclusive:")
        print("\n".join(f"  {line}" for line in top["inclusive"]))
    if crashed:
        print(f"tracebacks in the workers' logs ({LOGS}): {crashed}")
    harness.write_results(
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
