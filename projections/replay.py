"""Rebuilding projections from bank.events: the event log is the truth, the tables are disposable."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from django.db import connection, transaction
from tqdm import tqdm

from bank import messages, metrics
from bank.config import KafkaSettings
from bank.kafka import end_offsets, offsets_at, read_to_end
from projections import registry, store
from projections.registry import Projection

log = logging.getLogger("bank.replay")

CHECKPOINT_TABLE = "projections_checkpoint"
SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass
class ReplayResult:
    projections: tuple[str, ...]
    ends: dict[int, int]
    events: int = 0
    poison: int = 0
    seconds: float = 0.0
    schema: str = "public"

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


@dataclass
class TableDifference:
    table: str
    live_rows: int
    replayed_rows: int
    live_checksum: str
    replayed_checksum: str
    samples: list[str] = field(default_factory=list)


def plan(kafka: KafkaSettings, until: datetime | None = None) -> dict[int, int]:
    """The offsets to replay up to: the current end of each partition, or the first event at/after `until`."""
    if until is None:
        return end_offsets(kafka, kafka.events_topic)
    return offsets_at(kafka, kafka.events_topic, int(until.timestamp() * 1000))


def replay(
    kafka: KafkaSettings,
    projections: Iterable[str] | None = None,
    ends: dict[int, int] | None = None,
    schema: str | None = None,
    progress: bool = True,
    batch_size: int = 20_000,
    progress_file: IO[str] | None = None,
) -> ReplayResult:
    """Rebuild `projections` (default: every one in the registry) from offset 0 up to `ends` (default: now).

    All in one database transaction:

    1. Take the advisory lock: the live projector waits until the replay has committed.
    2. Into the live tables: empty them and their checkpoints. Into `schema`: create it
       afresh with empty copies of the tables, and write there instead.
    3. Read bank.events from the start in large batches and apply them with the live
       projector's own code (`store.apply_batch`), without pushing live updates.
    4. Let each projection finish (write what it kept in memory), and move its checkpoints to `ends`.
    5. Commit: readers see the old projections until the new ones are complete.

    The progress bar counts the events read; its total starts as the offsets to read, an upper bound
    (transaction markers take offsets too), and is set to the events read when the replay ends.
    """
    chosen = registry.chosen(projections)
    ends = plan(kafka) if ends is None else ends
    result = ReplayResult(tuple(p.name for p in chosen), ends, schema=schema or "public")
    started = time.monotonic()
    with transaction.atomic(), connection.cursor() as cursor:
        store.take_lock(cursor)
        if schema:
            use_scratch_schema(cursor, schema)
        else:
            for projection in chosen:
                cursor.execute(f"TRUNCATE {projection.table}")
            cursor.execute(f"DELETE FROM {CHECKPOINT_TABLE} WHERE projection = ANY(%s)", [list(result.projections)])
        memory = store.Memory()
        bar = tqdm(
            total=sum(ends.values()),
            unit="ev",
            unit_scale=True,
            desc="replay",
            disable=not progress,
            mininterval=0.5,
            file=progress_file,
        )
        with bar:
            for batch in read_to_end(kafka, kafka.events_topic, ends=ends, batch_size=batch_size):
                events = []
                for message in batch:
                    try:
                        envelope = messages.decode_event(message.value())
                    except messages.PoisonMessage:
                        result.poison += 1  # dead-lettered by the live projector already
                        continue
                    events.append(store.Positioned(message.partition() or 0, message.offset() or 0, envelope))
                batch_ends = {p: o for p, o in ((m.partition() or 0, (m.offset() or 0) + 1) for m in batch)}
                store.apply_batch(cursor, kafka.events_topic, events, batch_ends, chosen, memory)
                result.events += len(events)
                bar.update(len(batch))
                metrics.replay_events.inc(len(events))
                # Offsets are an upper bound of the events (transaction markers take offsets too).
                metrics.replay_progress.set(min(1.0, bar.n / bar.total) if bar.total else 1.0)
                metrics.replay_rate.set(result.events / max(time.monotonic() - started, 1e-9))
            bar.total = bar.n  # the events there were: the bar ends at 100%
            metrics.replay_progress.set(1.0)
        for projection in chosen:
            if projection.finish is not None:
                projection.finish(cursor, memory)
            # Offsets past the last event (transaction markers) count as read too.
            store.save_checkpoints(
                cursor, kafka.events_topic, projection.name, {p: o for p, o in ends.items() if o > 0}
            )
        if schema:
            cursor.execute("SET LOCAL search_path TO public")
    result.seconds = time.monotonic() - started
    log.info(
        "replayed %d events into %s in %.1fs (%.0f events/s)", result.events, result.schema, result.seconds, result.rate
    )
    return result


def use_scratch_schema(cursor: Any, schema: str) -> None:
    """Empty copies of the projection tables in `schema`, which later statements of the transaction write to."""
    if not SCHEMA_NAME.match(schema) or schema == "public":
        raise ValueError(f"not a usable scratch schema name: {schema!r}")
    cursor.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    cursor.execute(f"CREATE SCHEMA {schema}")
    for table in (*(p.table for p in registry.PROJECTIONS.values()), CHECKPOINT_TABLE):
        cursor.execute(f"CREATE TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL)")
    cursor.execute(f"SET LOCAL search_path TO {schema}")


def live_checkpoints(kafka: KafkaSettings, cursor: Any, projection: str) -> dict[int, int]:
    positions = store.load_checkpoints(cursor, kafka.events_topic, [projection])
    return {partition: offset for (_, partition), offset in positions.items()}


def verify(
    kafka: KafkaSettings, projections: Iterable[str] | None = None, progress: bool = True
) -> list[TableDifference]:
    """Rebuild into a scratch schema up to the live checkpoints and compare, table by table.

    The advisory lock is held throughout, so the live projector cannot move meanwhile.
    """
    differences: list[TableDifference] = []
    with transaction.atomic(), connection.cursor() as cursor:
        store.take_lock(cursor)
        for projection in registry.chosen(projections):
            ends = live_checkpoints(kafka, cursor, projection.name)
            replay(
                kafka,
                [projection.name],
                ends=ends or {p: 0 for p in end_offsets(kafka, kafka.events_topic)},
                schema="replay_verify",
                progress=progress,
            )
            difference = compare(cursor, projection, "public", "replay_verify")
            if difference is not None:
                differences.append(difference)
        cursor.execute("DROP SCHEMA IF EXISTS replay_verify CASCADE")
    return differences


def table_summary(cursor: Any, schema: str, projection: Projection) -> tuple[int, str]:
    table, key = projection.table, projection.key
    cursor.execute(
        f"SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t.{key}), '')) FROM {schema}.{table} t"
    )
    count, checksum = cursor.fetchone()
    return int(count), str(checksum)


def compare(cursor: Any, projection: Projection, live: str, replayed: str) -> TableDifference | None:
    table = projection.table
    live_rows, live_sum = table_summary(cursor, live, projection)
    replayed_rows, replayed_sum = table_summary(cursor, replayed, projection)
    if (live_rows, live_sum) == (replayed_rows, replayed_sum):
        return None
    cursor.execute(
        f"(SELECT 'live only: ' || t::text FROM {live}.{table} t EXCEPT SELECT 'live only: ' || r::text FROM {replayed}.{table} r) "
        f"UNION ALL (SELECT 'replay only: ' || r::text FROM {replayed}.{table} r EXCEPT SELECT 'replay only: ' || t::text FROM {live}.{table} t) "
        "LIMIT 10"
    )
    return TableDifference(
        table, live_rows, replayed_rows, live_sum, replayed_sum, [row[0] for row in cursor.fetchall()]
    )


def dump(cursor: Any, projection: Projection, schema: str = "public") -> bytes:
    """A projection's table, full contents in primary-key order, as PostgreSQL's text COPY format."""
    raw = getattr(cursor, "cursor", cursor)
    out = bytearray()
    with raw.copy(f"COPY (SELECT * FROM {schema}.{projection.table} ORDER BY {projection.key}) TO STDOUT") as copy:
        for chunk in copy:
            out += chunk
    return bytes(out)
