"""Processor recovery: the state store (bank.account-state + the tail of events) against the full-history fold.

Per history of `--sizes` events over `--accounts` accounts: the load time and peak memory of a processor
(each load in a fresh process) folding every event (mode "full", the baseline) and reading the states plus
the last `--tail` events (mode "state"). Then the processor's commands/s with the state store against the
same loop without it, and the state records a load reads right after that run and after compaction.

    .venv/bin/python -m bench.recovery [--sizes 100000,1000000,5000000] [--accounts 10000]
"""

from __future__ import annotations

import dataclasses
import json
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
from bench.harness import ROOT, arguments, fresh_kafka, send, setup_django, table, write_results
from consumers.recovery import AccountRecord, Loader, encode_state

OCCURRED = "2026-11-27T10:00:00.000000Z"


def fake_uuid(kind: int, n: int) -> str:
    return f"{kind:08x}-0000-4000-8000-{n:012x}"


def event_value(account: str, sequence: int, n: int, event: domain.Event) -> bytes:
    """The event as the processor encodes it (checked against the decoder for the first few)."""
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
    """`events` events on bank.events, and every account's state as of `events - tail` on bank.account-state."""
    options = {"linger.ms": 50, "batch.size": 1_000_000, "compression.type": "lz4", "acks": "all"}
    out = Producer(kafka.client_config() | options | {"queue.buffering.max.messages": 500_000})
    ids = [uuid.UUID(fake_uuid(3, a)) for a in range(accounts)]
    keys = [str(a).encode() for a in ids]
    partition_of = [a % kafka.partitions for a in range(accounts)]
    states = [domain.Account.new(a) for a in ids]
    recent: list[deque[bytes]] = [deque(maxlen=20) for _ in ids]
    offsets = [0] * kafka.partitions

    def snapshot() -> None:
        for a, state in enumerate(states):
            value = encode_state(AccountRecord(state, recent[a]), offsets[partition_of[a]])
            send(out, kafka.state_topic, keys[a], value, partition=partition_of[a])

    for n in range(events):
        if n == events - tail:
            snapshot()
        a = n % accounts
        state = states[a]
        command: domain.Command = domain.Deposit(ids[a], 1_00) if n % 4 else domain.Withdraw(ids[a], 50)
        if state.status is domain.Status.NONE:
            command = domain.OpenAccount(ids[a], "bench", "Bench", "EUR")
        [event] = domain.decide(state, command)
        states[a] = domain.evolve(state, event)
        value = event_value(str(ids[a]), states[a].version, n, event)
        if n < 3:
            messages.decode_event(value)  # the fast encoding is the real wire format
        send(out, kafka.events_topic, keys[a], value, partition=partition_of[a])
        recent[a].append(uuid.UUID(fake_uuid(2, n)).bytes)
        offsets[partition_of[a]] += 1
    if tail >= events:
        snapshot()
    assert out.flush(300) == 0
    return {"events": events, "accounts": accounts, "tail": min(tail, events)}


def measure_load(kafka: KafkaSettings, mode: str) -> dict[str, float | int]:
    """Load every partition in a fresh process: seconds, counts and peak memory."""
    argv = [sys.executable, "-m", "bench.recovery", "--load", mode, "--prefix", kafka.topic_prefix]
    done = subprocess.run(argv, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def peak_rss_kb() -> int:
    """This process's peak resident memory. Not getrusage's ru_maxrss: Linux carries that over from
    the parent across fork and exec, so a child would report the benchmark's own peak."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def load_here(mode: str, prefix: str) -> None:
    kafka = dataclasses.replace(settings.KAFKA, topic_prefix=prefix)
    before = peak_rss_kb()
    _, counts = Loader(kafka, "full" if mode == "full" else "state").load(range(kafka.partitions))
    peak = peak_rss_kb()
    figures = {"seconds": round(counts.seconds, 3), "states_read": counts.states, "events_read": counts.events}
    figures |= {"accounts": counts.accounts, "peak_rss_mb": round(peak / 1024, 1)}
    print(json.dumps(figures | {"load_rss_mb": round((peak - before) / 1024, 1)}))


def throughput(commands: int, accounts: int, batch_size: int, compaction_wait: float) -> dict[str, float | int]:
    """Commands/s of the processor with the state store and without it (mode "full" writes none)."""
    from bench.processor import make_commands, run_loop, send_commands
    from consumers.processor import Processor, ProcessorConfig

    payload = make_commands(accounts, commands)
    figures: dict[str, float | int] = {"commands": commands, "accounts": accounts}
    for mode in ("full", "state", "full", "state"):  # interleaved twice: the machine's load drifts
        kafka = fresh_kafka("recovery")
        send_commands(kafka, payload)
        name = f"rec-{uuid.uuid4().hex[:6]}"
        processor = Processor(kafka, ProcessorConfig(instance=name, group=name, batch_size=batch_size, recovery=mode))  # type: ignore[arg-type]
        key = "with_state_per_s" if mode == "state" else "without_state_per_s"
        figures[key] = max(figures.get(key, 0), round(len(payload) / run_loop(processor, len(payload))))
    figures["ratio"] = round(figures["with_state_per_s"] / figures["without_state_per_s"], 3)
    later = right_after = measure_load(kafka, "state")  # the topics of the last run, mode "state"
    figures["states_read_right_after"] = right_after["states_read"]
    # The cleaner compacts closed segments only: roll them (segment.ms) and let it run, then load again.
    deadline = time.monotonic() + compaction_wait
    while time.monotonic() < deadline and later["states_read"] > 1.5 * accounts:
        time.sleep(10)
        later = measure_load(kafka, "state")
    figures["states_read_after_compaction"] = later["states_read"]
    figures["compaction_waited_s"] = round(compaction_wait - max(0.0, deadline - time.monotonic()))
    return figures


def main() -> None:
    args = arguments(
        __doc__, sizes="100000,1000000,5000000", accounts=10_000, tail=5_000, commands=50_000,
        batch_size=500, compaction_wait=150.0, load=None, prefix=None,
    )  # fmt: skip
    setup_django()
    if args.load:  # the child process of measure_load
        return load_here(args.load, args.prefix)
    rows: list[tuple[str, str]] = []
    results = []
    for size in [int(s) for s in args.sizes.split(",") if s]:
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
        print(*rows[-1], flush=True)
    speed = throughput(args.commands, min(args.accounts, 500), args.batch_size, args.compaction_wait)
    by = {r["events"]: r for r in results}
    figures = {"accounts": args.accounts, "tail": args.tail, "sizes": results, "throughput": speed}
    for name, mode, key, small, large in (
        ("state_5m_over_1m", "state", "seconds", 1_000_000, 5_000_000),
        ("state_peak_rss_1m_over_100k", "state", "peak_rss_mb", 100_000, 1_000_000),
        ("full_peak_rss_1m_over_100k", "full", "peak_rss_mb", 100_000, 1_000_000),
    ):
        if small in by and large in by:
            figures[name] = round(by[large][mode][key] / by[small][mode][key], 2)
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
