"""Processor recovery: the state store (bank.account-state + the tail of events) against the full-history fold.

Prints, in one run:
- recovery time and peak memory of a processor loading all partitions, for histories of
  `--sizes` events over `--accounts` accounts, in mode "full" (fold every event: the baseline,
  what the processor did before the state topic) and mode "state"; each load runs in a fresh
  process, so its peak RSS is its own;
- the processor's commands/s with the state store against the same loop without it
  (mode "full" writes no state), and how many state records a load reads right after that
  run and once the log cleaner has compacted the state topic.

The histories are written fast with a plain producer (lz4): events built with domain.decide
and evolve, the state of every account as the processor writes it (one record per account,
the shape compaction converges to), reflecting all but the last `--tail` events, which a load
must fold.

    .venv/bin/python -m bench.recovery [--sizes 100000,1000000,5000000] [--accounts 10000]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import time
import uuid
from collections import deque

import orjson
from confluent_kafka import Producer
from django.conf import settings

from bank import domain, messages
from bank.config import KafkaSettings
from bench.harness import ROOT, fresh_kafka, setup_django, table, write_results
from consumers.recovery import AccountRecord, Loader, encode_state

OCCURRED = "2026-11-27T10:00:00.000000Z"


def fake_uuid(kind: int, n: int) -> str:
    return f"{kind:08x}-0000-4000-8000-{n:012x}"


def event_value(account: str, sequence: int, n: int, event: domain.Event) -> bytes:
    """The event as the processor encodes it (checked against the schema for the first few)."""
    name = type(event).__name__
    return (
        (
            f'{{"event_id":"{fake_uuid(1, n)}","type":"{name}","version":{messages.EVENTS[name].version},'
            f'"account_id":"{account}","sequence":{sequence},"occurred_at":"{OCCURRED}",'
            f'"command_id":"{fake_uuid(2, n)}","actor":"user:bench","data":'
        ).encode()
        + orjson.dumps(dict(vars(event)))
        + b"}"
    )


def write_history(kafka: KafkaSettings, events: int, accounts: int, tail: int) -> dict[str, int]:
    """`events` events over `accounts` accounts on bank.events, and the state of every account as of
    `events - tail` on bank.account-state. Returns what was written."""
    out = Producer(
        kafka.client_config()
        | {
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "acks": "all",
            "queue.buffering.max.messages": 500_000,
        }
    )
    ids = [uuid.UUID(fake_uuid(3, a)) for a in range(accounts)]
    keys = [str(a).encode() for a in ids]
    partition_of = [a % kafka.partitions for a in range(accounts)]
    states = [domain.Account.new(a) for a in ids]
    recent: list[deque[bytes]] = [deque(maxlen=20) for _ in ids]
    offsets = [0] * kafka.partitions

    def produce(topic: str, key: bytes, value: bytes, partition: int) -> None:
        while True:
            try:
                out.produce(topic, key=key, value=value, partition=partition)
                return
            except BufferError:
                out.poll(0.05)

    def snapshot() -> None:
        for a, state in enumerate(states):
            record = AccountRecord(state, recent[a])
            produce(kafka.state_topic, keys[a], encode_state(record, offsets[partition_of[a]]), partition_of[a])

    for n in range(events):
        if n == events - tail:
            snapshot()
        a = n % accounts
        state = states[a]
        command: domain.Command
        if state.status is domain.Status.NONE:
            command = domain.OpenAccount(ids[a], "bench", "Bench", "EUR")
        elif n % 4:
            command = domain.Deposit(ids[a], 1_00)
        else:
            command = domain.Withdraw(ids[a], 50)
        [event] = domain.decide(state, command)
        states[a] = domain.evolve(state, event)
        value = event_value(str(ids[a]), states[a].version, n, event)
        if n < 3:
            messages.decode_event(value)  # the fast encoding is the real wire format
        produce(kafka.events_topic, keys[a], value, partition_of[a])
        recent[a].append(uuid.UUID(fake_uuid(2, n)).bytes)
        offsets[partition_of[a]] += 1
    if tail >= events:
        snapshot()
    assert out.flush(300) == 0
    return {"events": events, "accounts": accounts, "tail": min(tail, events)}


def measure_load(kafka: KafkaSettings, mode: str) -> dict[str, float | int]:
    """Load every partition in a fresh process: seconds, counts and peak memory."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.recovery", "--load", mode, "--prefix", kafka.topic_prefix],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def peak_rss_kb() -> int:
    """This process's peak resident memory. Not getrusage's ru_maxrss: Linux carries that over from
    the parent across fork and exec, so a child would report the benchmark's own peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def load_here(mode: str, prefix: str) -> None:
    kafka = dataclasses.replace(settings.KAFKA, topic_prefix=prefix)
    before = peak_rss_kb()
    loader = Loader(kafka, "full" if mode == "full" else "state")
    _, counts = loader.load(range(kafka.partitions))
    peak = peak_rss_kb()
    print(
        json.dumps(
            {
                "seconds": round(counts.seconds, 3),
                "states_read": counts.states,
                "events_read": counts.events,
                "accounts": counts.accounts,
                "peak_rss_mb": round(peak / 1024, 1),
                "load_rss_mb": round((peak - before) / 1024, 1),
            }
        )
    )


def throughput(commands: int, accounts: int, batch_size: int, compaction_wait: float) -> dict[str, float | int]:
    """Commands/s of the processor with the state store and without it (mode "full" writes none)."""
    from bench.processor import make_commands, produce_all, run_loop
    from consumers.processor import Processor

    payload = make_commands(accounts, commands)
    figures: dict[str, float | int] = {"commands": commands, "accounts": accounts}
    last: KafkaSettings | None = None
    for mode in ("full", "state", "full", "state"):  # interleaved twice: the machine's load drifts
        kafka = fresh_kafka("recovery")
        produce_all(kafka, kafka.commands_topic, payload)
        seconds = run_loop(
            Processor(
                kafka,
                instance=f"bench-{uuid.uuid4().hex[:6]}",
                group=f"rec-{uuid.uuid4().hex[:6]}",
                batch_size=batch_size,
                recovery=mode,  # type: ignore[arg-type]
            ),
            len(payload),
        )
        key = "with_state_per_s" if mode == "state" else "without_state_per_s"
        figures[key] = max(figures.get(key, 0), round(len(payload) / seconds))
        if mode == "state":
            last = kafka
    figures["ratio"] = round(figures["with_state_per_s"] / figures["without_state_per_s"], 3)
    assert last is not None
    right_after = measure_load(last, "state")
    figures["states_read_right_after"] = right_after["states_read"]
    # The cleaner compacts closed segments only: roll them (segment.ms) and let it run, then load again.
    deadline = time.monotonic() + compaction_wait
    later = right_after
    while time.monotonic() < deadline and later["states_read"] > 1.5 * accounts:
        time.sleep(10)
        later = measure_load(last, "state")
    figures["states_read_after_compaction"] = later["states_read"]
    figures["compaction_waited_s"] = round(compaction_wait - max(0.0, deadline - time.monotonic()))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000,5000000")
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--tail", type=int, default=5_000, help="events after the states (a load folds them)")
    parser.add_argument("--commands", type=int, default=50_000, help="for the throughput comparison")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--compaction-wait", type=float, default=150.0)
    parser.add_argument("--load", choices=["full", "state"], help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args()
    setup_django()
    if args.load:
        load_here(args.load, args.prefix)
        return
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rows: list[tuple[str, str]] = []
    results = []
    for size in sizes:
        kafka = fresh_kafka("recovery")
        started = time.monotonic()
        written = write_history(kafka, size, args.accounts, args.tail)
        written_in = time.monotonic() - started
        full = measure_load(kafka, "full")
        # The state load is short, so the machine's drift weighs more: the median of three.
        state = sorted((measure_load(kafka, "state") for _ in range(3)), key=lambda r: r["seconds"])[1]
        results.append({**written, "written_in_s": round(written_in, 1), "full": full, "state": state})
        rows.append(
            (
                f"{size:>9,} events",
                f"full fold {full['seconds']:6.2f}s, peak {full['peak_rss_mb']:6.1f} MB | "
                f"state store {state['seconds']:5.2f}s, peak {state['peak_rss_mb']:6.1f} MB "
                f"({state['states_read']:,} states + {state['events_read']:,} events read)",
            )
        )
        print(rows[-1][0], rows[-1][1], flush=True)
    speed = throughput(args.commands, min(args.accounts, 500), args.batch_size, args.compaction_wait)
    by_size = {r["events"]: r for r in results}
    figures = {"accounts": args.accounts, "tail": args.tail, "sizes": results, "throughput": speed}
    if 1_000_000 in by_size and 5_000_000 in by_size:
        figures["state_5m_over_1m"] = round(
            by_size[5_000_000]["state"]["seconds"] / by_size[1_000_000]["state"]["seconds"], 2
        )
    if 100_000 in by_size and 1_000_000 in by_size:
        figures["state_peak_rss_1m_over_100k"] = round(
            by_size[1_000_000]["state"]["peak_rss_mb"] / by_size[100_000]["state"]["peak_rss_mb"], 2
        )
        figures["full_peak_rss_1m_over_100k"] = round(
            by_size[1_000_000]["full"]["peak_rss_mb"] / by_size[100_000]["full"]["peak_rss_mb"], 2
        )
    rows += [
        ("processor without state store", f"{speed['without_state_per_s']:>8,} commands/s"),
        (
            "processor with state store",
            f"{speed['with_state_per_s']:>8,} commands/s ({speed['ratio']:.2f}x, goal >= 0.8x)",
        ),
        (
            "state records a load reads",
            f"{speed['states_read_right_after']:,} right after {speed['commands']:,} commands over "
            f"{speed['accounts']} accounts, {speed['states_read_after_compaction']:,} after compaction "
            f"(waited {speed['compaction_waited_s']}s)",
        ),
    ]
    print(f"processor recovery, {args.accounts:,} accounts, {settings.KAFKA.partitions} partitions")
    print(table(rows))
    write_results("recovery", figures)


if __name__ == "__main__":
    main()
