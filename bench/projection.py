"""Read-side throughput: the live projector and replay against the raw consume-and-decode ceiling.

Produces `--events` event envelopes, decided by the domain from random commands (`bench.harness.generate`:
openings, deposits, withdrawals, some rejected), straight to a fresh events topic, then measures on it:

1. ceiling: a plain read_committed consumer reading every event from offset 0 and decoding
   it with `messages.decode_event` (no database);
2. live projector: `consumers.projector.Projector` applying them into PostgreSQL from an
   empty state (joining the group is not timed);
3. replay: `projections.replay.replay` rebuilding the projections from the same events.

The projector runs with push=False by default (no channel-layer messages): the figure is the
database side. `--push` turns live updates on (through Redis); it needs a batch to touch at
most ~100 accounts (the channel layer's Redis pool), so use it with few `--accounts`.

The projector and replay write the projection tables, so by default they run in a database
of their own (`--database`, default `bank_bench_projection` beside `bank`, created with the DATABASE_URL role and migrated).

    .venv/bin/python -m bench.projection [--events 1000000] [--accounts 10000] [--push]
"""

from __future__ import annotations

import argparse
import time
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, Message, TopicPartition

from bank import messages
from bank.config import KafkaSettings
from bank.kafka import end_offsets, producer, reading
from bench.harness import (
    Expected,
    fresh_kafka,
    generate,
    scratch_name,
    setup_django,
    table,
    use_bench_database,
    write_results,
)

PROJECTION_TABLES = "projections_account, projections_auditentry, projections_checkpoint, projections_deadletter"


def produce_events(kafka: KafkaSettings, events: int, accounts: int) -> tuple[Expected, float]:
    """Encode and produce the events with an idempotent, batching producer. (expected state, seconds)."""
    expected = Expected()
    failures: list[str] = []

    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            failures.append(error.str())

    out = producer(kafka, **{"linger.ms": 50, "batch.size": 1_000_000, "queue.buffering.max.messages": 500_000})
    topic = kafka.events_topic
    started = time.perf_counter()
    for envelope in generate(events, accounts, expected):
        key, value, headers = messages.encode(envelope)
        while True:
            try:
                out.produce(topic, key=key, value=value, headers=headers, on_delivery=delivered)
                break
            except BufferError:
                out.poll(0.05)
        out.poll(0)
    left = out.flush(120)
    seconds = time.perf_counter() - started
    if left or failures:
        raise SystemExit(f"producing failed: {left} undelivered, {len(failures)} errors ({failures[:3]})")
    return expected, seconds


# --- the database ---


def empty_projections() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {PROJECTION_TABLES}")


def check_projections(expected: Expected, what: str) -> None:
    """The projections hold exactly the produced events: row counts, per-type counts, balances."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), coalesce(sum(balance), 0) FROM projections_account")
        accounts, total = cursor.fetchone()
        cursor.execute("SELECT type, count(*) FROM projections_auditentry GROUP BY type")
        types = dict(cursor.fetchall())
    want = (len(expected.balances), sum(expected.balances.values()), expected.types)
    if (accounts, total, types) != want:
        raise SystemExit(f"{what}: projections do not match the events: got {(accounts, total, types)}, want {want}")


# --- the three measurements ---


@dataclass
class Ceiling:
    seconds: float
    decode_seconds: float


def ceiling(kafka: KafkaSettings, events: int) -> Ceiling:
    """Seconds for a plain read_committed consumer to read and decode every event from offset 0."""
    topic = kafka.events_topic
    with reading(kafka, **{"group.id": f"bench-ceiling-{uuid.uuid4().hex[:8]}"}) as reader:
        partitions = reader.list_topics(topic, timeout=10).topics[topic].partitions
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        seen = 0
        decoding = 0.0
        decode = messages.decode_event
        started = time.perf_counter()
        while seen < events:
            batch = reader.consume(10_000, 0.2)
            t = time.perf_counter()
            for m in batch:
                if m.error() is None:
                    decode(m.value())
                    seen += 1
            decoding += time.perf_counter() - t
        return Ceiling(time.perf_counter() - started, decoding)


def projector_run(kafka: KafkaSettings, events: int, push: bool) -> tuple[float, int]:
    """(seconds from the poll that returned the first events until every event is applied, events applied)."""
    from django.conf import settings

    from consumers.projector import Projector

    projector = Projector(
        kafka,
        group=f"bench-projector-{uuid.uuid4().hex[:8]}",
        batch_size=settings.PROJECTOR_BATCH_SIZE,
        batch_wait=settings.PROJECTOR_BATCH_WAIT,
        push=push,
    )
    projector.start()
    # Joining the group is not what we measure: the clock starts with the poll that returned the first events.
    started: float | None = None
    deadline = time.monotonic() + 60
    idle = 0
    while projector.applied < events:
        polled = time.perf_counter()
        if projector.process_batch():
            idle = 0
            if started is None:
                started = polled
        elif started is None and time.monotonic() > deadline:
            raise SystemExit("projector: no events after 60s (no partitions assigned?)")
        elif started is not None and (idle := idle + 1) > 200:  # 10 s of empty polls
            raise SystemExit(f"projector stalled at {projector.applied} of {events} events")
    assert started is not None
    elapsed = time.perf_counter() - started
    projector.close()
    return elapsed, projector.applied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--database", help="scratch database of its own (default: DATABASE_URL's + _bench_projection)")
    parser.add_argument(
        "--push", action="store_true", help="projector pushes live updates through Redis (few --accounts only)"
    )
    args = parser.parse_args()
    setup_django()
    args.database = args.database or scratch_name("bench_projection")
    from django.conf import settings

    from projections.replay import replay

    run_started = time.perf_counter()

    kafka = fresh_kafka("projection")
    use_bench_database(args.database)
    database = args.database
    empty_projections()

    expected, produce_seconds = produce_events(kafka, args.events, args.accounts)
    ends = end_offsets(kafka, kafka.events_topic)
    if sum(ends.values()) != args.events:
        raise SystemExit(f"the events topic holds {sum(ends.values())} messages, not {args.events}")

    raw = ceiling(kafka, args.events)

    projector_seconds, projected = projector_run(kafka, args.events, args.push)
    check_projections(expected, "live projector")

    empty_projections()
    replayed = replay(kafka, progress=False)
    if replayed.events != args.events:
        raise SystemExit(f"replay applied {replayed.events} events, not {args.events}")
    check_projections(expected, "replay")
    # The balances projection alone: what the eventsourcing comparison rebuilds.
    balances_only = replay(kafka, ["accounts"], progress=False)
    check_projections(expected, "replay of accounts")

    ceiling_rate = args.events / raw.seconds
    consume_only_rate = args.events / max(raw.seconds - raw.decode_seconds, 1e-9)
    projector_rate = projected / projector_seconds
    figures: dict[str, Any] = {
        "replay_accounts_per_s": round(balances_only.rate),
        "events": args.events,
        "accounts": args.accounts,
        "partitions": len(ends),
        "event_types": expected.types,
        "database": database,
        "produce_seconds": round(produce_seconds, 2),
        "produce_per_s": round(args.events / produce_seconds),
        "ceiling_consume_decode_per_s": round(ceiling_rate),
        "ceiling_consume_only_per_s": round(consume_only_rate),
        "projector_per_s": round(projector_rate),
        "projector_push": args.push,
        "projector_batch_size": settings.PROJECTOR_BATCH_SIZE,
        "replay_per_s": round(replayed.rate),
        "replay_seconds": round(replayed.seconds, 2),
        "projector_vs_ceiling": round(projector_rate / ceiling_rate, 3),
        "replay_vs_projector": round(replayed.rate / projector_rate, 3),
        "run_seconds": round(time.perf_counter() - run_started, 1),
    }
    print(
        f"projection, {args.events:,} events over {args.accounts:,} accounts, {len(ends)} partitions, "
        f"database {database}"
    )
    rate = "{:>9,} events/s".format
    rows = [
        ("encode + produce (set-up, not a figure)", f"{rate(figures['produce_per_s'])} ({produce_seconds:.1f}s)"),
        ("ceiling: consume only (decode time subtracted)", rate(figures["ceiling_consume_only_per_s"])),
        ("ceiling: consume + decode_event", rate(figures["ceiling_consume_decode_per_s"]) + " (baseline)"),
        (f"live projector (push={'on' if args.push else 'off'})", rate(figures["projector_per_s"])),
        ("replay", f"{rate(figures['replay_per_s'])} ({replayed.seconds:.1f}s)"),
        ("projector / ceiling", f"{figures['projector_vs_ceiling']:.2f}x"),
        ("replay / projector", f"{figures['replay_vs_projector']:.2f}x"),
        ("replay --projection accounts (balances)", rate(figures["replay_accounts_per_s"])),
    ]
    print(table(rows))
    print(f"  (whole run {figures['run_seconds']:.0f}s)")
    write_results("projection", figures)


if __name__ == "__main__":
    main()
