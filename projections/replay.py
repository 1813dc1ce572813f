"""Rebuilding projections from bank.events: the event log is the truth, the tables are disposable."""

from __future__ import annotations

import gc
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from django.db import connection, transaction
from tqdm import tqdm

from bank import messages, metrics
from bank.config import KafkaSettings
from bank.kafka import end_offsets, offsets_at, read_to_end
from projections import parking, registry, store, tables
from projections.registry import Projection

log = logging.getLogger(__name__)

CHECKPOINT_TABLE = "projections_checkpoint"
SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass
class ReplayResult:
    projections: tuple[str, ...]
    ends: dict[int, int]
    events: int = 0
    poison: int = 0
    parked: int = 0
    seconds: float = 0.0
    schema: str = "public"
    rules: parking.Parking = field(default_factory=parking.Parking)  # as the log's end left them

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
    lock: bool | None = None,
    on_batch: Callable[[ReplayResult, int], None] | None = None,
    desc: str = "replay",
) -> ReplayResult:
    """Rebuild `projections` (default: every one in the registry) from offset 0 up to `ends` (default: now).

    All in one database transaction:

    1. Into the live tables: take the advisory lock (the live projector waits until the replay has
       committed), empty them and their checkpoints. Into `schema` (a generation that is not live,
       projections/tables.py): no lock; create the schema afresh with empty copies of the chosen
       tables without their indexes, and write there instead; the indexes are built after the rows.
    3. Read bank.events from the start in large batches; the live projector's parking rules
       (`parking.Parking`, in memory) say which events apply, which accounts park at a gap or a
       poison record naming them, and which are released with what; apply with the live
       projector's own code (`store.apply_batch`), without pushing live updates.
    4. Let each projection finish (write what it kept in memory), and move its checkpoints to `ends`.
    5. Unless only some projections were rebuilt (the others, at the live position, own the spots
       too): write the parked accounts as the rules left them (see projections/parking.py for why).
    6. Commit. Into a schema, the live projector and every reader went on meanwhile; into the live tables,
       TRUNCATE held them all until now (`rebuild` is the way on a running bank).

    `on_batch(result, offsets read)` is called after each batch (progress for bank_status and the admin).

    The progress bar counts the events read; its total starts as the offsets to read, an upper bound
    (transaction markers take offsets too), and is set to the events read when the replay ends.
    """
    chosen = registry.chosen(projections)
    ends = plan(kafka) if ends is None else ends
    result = ReplayResult(tuple(p.name for p in chosen), ends, schema=schema or "public")
    started = time.monotonic()
    if lock is None:
        lock = not schema
    with fewer_collections(), transaction.atomic(), connection.cursor() as cursor:
        if lock:
            store.take_lock(cursor)
        if schema:
            use_scratch_schema(cursor, schema, chosen)
        else:
            for projection in chosen:
                cursor.execute(f"TRUNCATE {projection.table}")
            cursor.execute(f"DELETE FROM {CHECKPOINT_TABLE} WHERE projection = ANY(%s)", [list(result.projections)])
            # A projection not deployed yet (projections/tables.py) is live once rebuilt from the whole log.
            cursor.execute(
                "DELETE FROM projections_generation WHERE live = 0 AND projection = ANY(%s)", [list(result.projections)]
            )
        memory = store.Memory()
        rules = parking.Parking()
        bar = tqdm(
            total=sum(ends.values()),
            unit="ev",
            unit_scale=True,
            desc=desc,
            disable=not progress,
            mininterval=0.5,
            file=progress_file,
        )
        with bar:
            for batch in read_to_end(kafka, kafka.events_topic, ends=ends, batch_size=batch_size):
                records, poison = records_of(batch)
                batch_ends = {p: o for p, o in ((m.partition() or 0, (m.offset() or 0) + 1) for m in batch)}
                decided = rules.decide(records)
                store.apply_batch(cursor, kafka.events_topic, decided.apply, batch_ends, chosen, memory, lock=False)
                events = len(records) - poison
                result.events += events
                result.poison += poison
                bar.update(len(batch))
                metrics.replay_events.inc(events)
                # Offsets are an upper bound of the events (transaction markers take offsets too).
                metrics.replay_progress.set(min(1.0, bar.n / bar.total) if bar.total else 1.0)
                metrics.replay_rate.set(result.events / max(time.monotonic() - started, 1e-9))
                if on_batch is not None:
                    result.seconds = time.monotonic() - started
                    on_batch(result, bar.n)
                if schema:
                    tables.fault_pause("fill")
            bar.total = bar.n  # the events there were: the bar ends at 100%
            metrics.replay_progress.set(1.0)
        for projection in chosen:
            if projection.finish is not None:
                projection.finish(cursor, memory)
        if schema:
            tables.build_indexes(cursor, schema, [p for p in chosen if p.bulk])
        for projection in chosen:
            # Offsets past the last event (transaction markers) count as read too.
            store.save_checkpoints(
                cursor, kafka.events_topic, projection.name, {p: o for p, o in ends.items() if o > 0}
            )
        result.parked = len(rules.spots)
        result.rules = rules
        if schema or set(result.projections) == set(registry.PROJECTIONS):
            parking.rebuild(cursor, kafka.events_topic, rules.spots.values())
        for spot in rules.spots.values():
            log.warning(
                "replay: account %s is parked at %s[%d]@%d: %s",
                spot.account_id,
                kafka.events_topic,
                spot.partition,
                spot.offset,
                spot.reason,
            )
        if schema:
            cursor.execute("SET LOCAL search_path TO public")
    result.seconds = time.monotonic() - started
    log.info(
        "replayed %d events into %s in %.1fs (%.0f events/s)", result.events, result.schema, result.seconds, result.rate
    )
    return result


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Fewer passes of the cycle collector while replaying; the thresholds as they were after.

    Replay makes millions of small objects that reference counting frees (no cycles), but each batch's
    live long enough to leave the youngest generation, so with the default thresholds the collector
    keeps running full passes over the whole process. Measured on 300,000 events, CPU time of the
    replaying process: 16.7 → 11.8 µs an event for `--projection accounts`, 24.5 → 18.3 for all.
    """
    before = gc.get_threshold()
    gc.set_threshold(50_000, 20, 20)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def use_scratch_schema(cursor: Any, schema: str, chosen: list[Projection]) -> None:
    """Empty copies of the chosen tables in `schema` (no indexes yet), which later statements of the transaction
    write to; the checkpoints and parked accounts there too."""
    if not SCHEMA_NAME.match(schema) or schema == "public":
        raise ValueError(f"not a usable scratch schema name: {schema!r}")
    cursor.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    cursor.execute(f"CREATE SCHEMA {schema}")
    tables.empty_tables(cursor, schema, chosen)
    cursor.execute(f"SET LOCAL search_path TO {schema}")


def records_of(batch: Iterable[Any]) -> tuple[list[parking.Record], int]:
    """Messages of bank.events as the parking rules take them (events and poison, in log order); how many poison."""
    records: list[parking.Record] = []
    poison = 0
    for message in batch:
        try:
            envelope = messages.decode_event(message.value())
        except messages.PoisonMessage as bad:
            poison += 1  # dead-lettered by the live projector already; it may park an account
            named = messages.named_account(message.key(), message.value())
            records.append(parking.Poison(message.partition() or 0, message.offset() or 0, named, str(bad)))
            continue
        records.append(store.Positioned(message.partition() or 0, message.offset() or 0, envelope, message.key()))
    return records, poison


def live_checkpoints(kafka: KafkaSettings, cursor: Any, projection: str) -> dict[int, int]:
    positions = store.load_checkpoints(cursor, kafka.events_topic, [projection])
    return {partition: offset for (_, partition), offset in positions.items()}


def projector_position(kafka: KafkaSettings, cursor: Any) -> dict[int, int]:
    """How far the live projector has read, per partition: the furthest checkpoint of any projection."""
    position: dict[int, int] = {}
    for (_, partition), offset in store.load_checkpoints(cursor, kafka.events_topic, registry.PROJECTIONS).items():
        position[partition] = max(offset, position.get(partition, 0))
    return position


# The parked accounts are compared without `since`: when the projector parked one is not in the log.
PARKED_COLUMNS = ("account_id", "topic", "partition", '"offset"', "reason")


def verify(
    kafka: KafkaSettings,
    projections: Iterable[str] | None = None,
    progress: bool = True,
    compared: list[str] | None = None,
) -> list[TableDifference]:
    """Build a generation that never goes live, up to the live checkpoints, and compare it table by table.

    One REPEATABLE READ transaction: its snapshot holds the live tables as of their checkpoints (written
    together), while the live projector goes on committing; the generation is built to those checkpoints in
    a scratch schema of the same transaction, compared, and dropped. No lock is taken: live updates never stop.
    Projections at the same checkpoints are rebuilt together, in one read of the log. The parked accounts are
    compared after the rebuild that reached the projector's position (normally every projection's).
    `compared` gets the names of the tables compared.
    """
    differences: list[TableDifference] = []
    scratch = f"replay_verify_{os.getpid()}"
    snapshot = not connection.in_atomic_block  # inside a caller's transaction: hold the projector instead
    with transaction.atomic(), connection.cursor() as cursor:
        if snapshot:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        else:
            store.take_lock(cursor)
        groups: dict[tuple[tuple[int, int], ...], list[Projection]] = {}
        for projection in registry.chosen(projections):
            ends = live_checkpoints(kafka, cursor, projection.name)
            groups.setdefault(tuple(sorted(ends.items())), []).append(projection)
        position = tuple(sorted(projector_position(kafka, cursor).items()))
        for key, group in groups.items():
            replay(
                kafka,
                [p.name for p in group],
                ends=dict(key) or {p: 0 for p in end_offsets(kafka, kafka.events_topic)},
                schema=scratch,
                progress=progress,
                lock=False,
                desc="verify",
            )
            tables: list[tuple[str, str, tuple[str, ...] | None]] = [(p.table, p.key, None) for p in group]
            if key == position:
                tables.append((parking.TABLE, "account_id", PARKED_COLUMNS))
            for table, order, columns in tables:
                difference = compare(cursor, table, order, "public", scratch, columns)
                if compared is not None:
                    compared.append(table)
                if difference is not None:
                    differences.append(difference)
        cursor.execute(f"DROP SCHEMA IF EXISTS {scratch} CASCADE")
    return differences


def row_text(alias: str, columns: Iterable[str] | None) -> str:
    """A row as text, for checksums and samples: all of it, or only `columns`."""
    if columns is None:
        return f"{alias}::text"
    return f"ROW({', '.join(f'{alias}.{c}' for c in columns)})::text"


def table_summary(
    cursor: Any, schema: str, table: str, key: str, columns: Iterable[str] | None = None
) -> tuple[int, str]:
    cursor.execute(
        f"SELECT count(*), md5(coalesce(string_agg({row_text('t', columns)}, E'\\n' ORDER BY t.{key}), '')) "
        f"FROM {schema}.{table} t"
    )
    count, checksum = cursor.fetchone()
    return int(count), str(checksum)


def compare(
    cursor: Any, table: str, key: str, live: str, replayed: str, columns: Iterable[str] | None = None
) -> TableDifference | None:
    live_rows, live_sum = table_summary(cursor, live, table, key, columns)
    replayed_rows, replayed_sum = table_summary(cursor, replayed, table, key, columns)
    if (live_rows, live_sum) == (replayed_rows, replayed_sum):
        return None
    t, r = row_text("t", columns), row_text("r", columns)
    cursor.execute(
        f"(SELECT 'live only: ' || {t} FROM {live}.{table} t EXCEPT SELECT 'live only: ' || {r} FROM {replayed}.{table} r) "
        f"UNION ALL (SELECT 'replay only: ' || {r} FROM {replayed}.{table} r EXCEPT SELECT 'replay only: ' || {t} FROM {live}.{table} t) "
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
