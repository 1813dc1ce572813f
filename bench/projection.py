"""Read-side throughput: the live projector and replay against the raw consume-and-decode ceiling.

Produces `--events` envelopes decided by the domain to fresh topics, then measures a plain read_committed
consumer decoding them (the ceiling; also without the decode time), the live projector into PostgreSQL
(`--push` for live updates, few `--accounts` only) and replay (also of the balances alone), each checked
against the generator's expected rows in a scratch database.

    .venv/bin/python -m bench.projection [--events 1000000] [--accounts 10000] [--push]
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from bank import messages
from bank.config import KafkaSettings
from bank.kafka import end_offsets, producer, reading
from bench import harness
from bench.harness import Expected, generate, table

PROJECTION_TABLES = "projections_account, projections_auditentry, projections_checkpoint, projections_deadletter"


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


def ceiling(kafka: KafkaSettings, events: int) -> tuple[float, float]:
    """(seconds, of which decoding) for a plain read_committed consumer to read and decode every event."""
    topic = kafka.events_topic
    with reading(kafka, **{"group.id": f"bench-ceiling-{uuid.uuid4().hex[:8]}"}) as reader:
        partitions = reader.list_topics(topic, timeout=10).topics[topic].partitions
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        seen, decoding = 0, 0.0
        started = time.perf_counter()
        while seen < events:
            batch = reader.consume(10_000, 0.2)
            t = time.perf_counter()
            for m in batch:
                if m.error() is None:
                    messages.decode_event(m.value())
                    seen += 1
            decoding += time.perf_counter() - t
        return time.perf_counter() - started, decoding


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
    seconds = harness.time_until(projector.process_batch, lambda: projector.applied >= events, "projector")
    projector.close()
    return seconds, projector.applied


def main() -> None:
    args = harness.arguments(__doc__, events=1_000_000, accounts=10_000, database=None, push=False)
    harness.setup_django()
    database = args.database or harness.scratch_name("bench_projection")
    from django.conf import settings

    from projections.replay import replay

    run_started = time.perf_counter()
    kafka = harness.fresh_kafka("projection")
    harness.use_bench_database(database)
    empty_projections()

    expected = Expected()
    started = time.perf_counter()
    envelopes = (messages.encode(e) for e in generate(args.events, args.accounts, expected))
    out = producer(kafka, **{"linger.ms": 50, "batch.size": 1_000_000, "queue.buffering.max.messages": 500_000})
    harness.produce_all(out, kafka.events_topic, envelopes)
    produce_seconds = time.perf_counter() - started
    ends = end_offsets(kafka, kafka.events_topic)
    if sum(ends.values()) != args.events:
        raise SystemExit(f"the events topic holds {sum(ends.values())} messages, not {args.events}")

    raw_seconds, decode_seconds = ceiling(kafka, args.events)
    projector_seconds, projected = projector_run(kafka, args.events, args.push)
    check_projections(expected, "live projector")
    empty_projections()
    replayed = replay(kafka, progress=False)
    if replayed.events != args.events:
        raise SystemExit(f"replay applied {replayed.events} events, not {args.events}")
    check_projections(expected, "replay")
    balances_only = replay(kafka, ["accounts"], progress=False)
    check_projections(expected, "replay of accounts")

    ceiling_rate = args.events / raw_seconds
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
        "ceiling_consume_only_per_s": round(args.events / max(raw_seconds - decode_seconds, 1e-9)),
        "projector_per_s": round(projector_rate),
        "projector_push": args.push,
        "projector_batch_size": settings.PROJECTOR_BATCH_SIZE,
        "replay_per_s": round(replayed.rate),
        "replay_seconds": round(replayed.seconds, 2),
        "projector_vs_ceiling": round(projector_rate / ceiling_rate, 3),
        "replay_vs_projector": round(replayed.rate / projector_rate, 3),
        "run_seconds": round(time.perf_counter() - run_started, 1),
    }
    print(f"projection, {args.events:,} events over {args.accounts:,} accounts, {len(ends)} partitions, {database}")
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
    print(table(rows) + f"\n  (whole run {figures['run_seconds']:.0f}s)")
    harness.write_results("projection", figures)


if __name__ == "__main__":
    main()
