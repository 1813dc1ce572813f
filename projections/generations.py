"""Projection generations: rebuild read models while the bank runs, then swap them in at once.

How it works
- The live generation of every projection is its table in the `public` schema under its stock name
  (projections_account, ...). Django's models, migrations and admin, the web's queries, the websocket and the
  live projector never learn about generations: they keep reading and writing the stock names.
  `projections_generation` (models.Generation) says which generation number is live: no row means 1 (the
  tables migrations made); `live = 0` is a projection not deployed yet (added to a bank that has history),
  which the projector leaves alone until a rebuild backfills it and swaps it in.
- A rebuild builds generation N in the schema `projections_gN`: the chosen projections' tables under their
  stock names, created LIKE the live ones without indexes, and a projections_checkpoint of its own. Same names
  in another schema, so the writers in store.py run unchanged under `SET LOCAL search_path TO projections_gN`.
- The swap is one transaction holding the live projector's advisory lock (so it falls between two of its
  batches): `ALTER TABLE public.T SET SCHEMA projections_g<old>`, `ALTER TABLE projections_gN.T SET SCHEMA
  public`, and the checkpoint rows moved the same way. Indexes and constraints move with their table and keep
  their names (names are per schema), so later migrations find them by name. The projection tables have no
  sequences (no serial keys) and no foreign keys. PostgreSQL plans a prepared statement again after DDL on a
  table it uses, resolving the names anew, so the web and the projector read the new tables at their next
  query. The projector reads checkpoints and last sequences from the database at every batch and caches
  nothing, so it continues from the new generation's checkpoints right after the swap.

Why rename rather than a schema per generation picked by each connection's search_path: every process (each
web worker, the websocket consumers, the projector, the admin) would have to learn the live generation and
switch at the same moment; a move inside one transaction switches them all at its commit, and a generation
that never commits is never seen.

`rebuild` (the steps):
1. Take the rebuild lock, a session advisory lock on a connection of its own that also writes the progress
   row (RebuildProgress): a second rebuild is refused; a killed one releases it with its connection. Drop what
   a killed rebuild left (schemas of generations neither live nor kept): a rerun starts clean, and says so.
2. Create and fill, in one transaction (killed: rolled back, nothing left): replay's bulk path into
   projections_gN from offset 0 up to the live projector's position: the parking rules in memory, accounts,
   transfers and days folded in memory and COPYed at the end, the audit COPYed per batch into a table without
   indexes; then the indexes and constraints, as the live table has them.
3. Catch up: follow the live projector's position, one transaction per batch (rows and the generation's
   checkpoints together), the same parking rules going on in memory, until within `swap_within` offsets.
4. Swap, in one transaction with the projector's lock: the last events up to the live position exactly, the
   checks (not behind the live generation, not past the log's end: read from another log), the moves, the
   generation rows. The old generation stays in its schema for `--rollback` until `--drop-old`.

Not a generation: the parked accounts (projections_parkedaccount). The live projector parks and releases
for every projection at once; a generation follows the same rules in memory, so it applies what the live
one applies, and a parked account's events released later reach it through the projector like any other.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

import psycopg
from django.db import connection, transaction

from bank import metrics
from bank.config import KafkaSettings
from bank.kafka import end_offsets, read_to_end
from projections import parking, registry, replay, store
from projections.registry import Projection
from projections.tables import CHECKPOINTS, fault_pause

log = logging.getLogger(__name__)

REBUILD_LOCK = 7_263_544_101  # one rebuild (or replay into a generation) at a time
GENERATION_SCHEMA = re.compile(r"^projections_g(\d+)$")
PHASES = ("create", "fill", "catch-up", "swap", "rollback", "done", "failed")
SWAP_LOCK_TIMEOUT = "3s"  # waiting longer for a reader or the projector's batch would hold pages behind the swap


class RebuildRefused(RuntimeError):
    """The rebuild cannot start or swap (another is running, an old generation is kept, the checks failed)."""


def schema_of(generation: int) -> str:
    return f"projections_g{generation}"


# --- which generation is live ---


def generation_rows(cursor: Any) -> dict[str, tuple[int, int | None]]:
    """projection → (live, old) for the projections that have a row (no row: generation 1 live, none kept)."""
    cursor.execute("SELECT projection, live, old FROM projections_generation")
    return {name: (live, old) for name, live, old in cursor.fetchall()}


def deployed(cursor: Any) -> list[Projection]:
    """The projections the live projector writes: all but those not deployed yet (live = 0)."""
    cursor.execute("SELECT projection FROM projections_generation WHERE live = 0")
    waiting = {name for (name,) in cursor.fetchall()}
    return [p for p in registry.PROJECTIONS.values() if p.name not in waiting]


def live_position(kafka: KafkaSettings, cursor: Any) -> dict[int, int]:
    """Per partition, where the live projector stands: the furthest checkpoint of a deployed projection (0: none)."""
    names = [p.name for p in deployed(cursor)]
    position = {p: 0 for p in end_offsets(kafka, kafka.events_topic)}
    for (_, partition), offset in store.load_checkpoints(cursor, kafka.events_topic, names).items():
        position[partition] = max(offset, position.get(partition, 0))
    return position


# --- tables of a generation ---


def checkpoints_of(kafka: KafkaSettings, cursor: Any, schema: str, names: Iterable[str]) -> dict[str, dict[int, int]]:
    cursor.execute(
        f"SELECT projection, partition, next_offset FROM {schema}.{CHECKPOINTS} WHERE topic = %s "
        "AND projection = ANY(%s)",
        [kafka.events_topic, list(names)],
    )
    found: dict[str, dict[int, int]] = {name: {} for name in names}
    for name, partition, offset in cursor.fetchall():
        found[name][partition] = offset
    return found


def advance(kafka: KafkaSettings, cursor: Any, schema: str, names: Iterable[str], ends: dict[int, int]) -> None:
    """Move the generation's checkpoints to `ends`, read to the end: offsets past the last event (transaction
    markers) count as read, as the live projector's consumer position counts them."""
    cursor.executemany(
        f"INSERT INTO {schema}.{CHECKPOINTS} AS c (projection, topic, partition, next_offset) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (projection, topic, partition) DO UPDATE SET next_offset = GREATEST(c.next_offset, EXCLUDED.next_offset)",
        [(name, kafka.events_topic, p, offset) for name in names for p, offset in ends.items() if offset > 0],
    )


def move_checkpoints(cursor: Any, names: list[str], source: str, target: str) -> None:
    columns = "projection, topic, partition, next_offset"
    cursor.execute(f"DELETE FROM {target}.{CHECKPOINTS} WHERE projection = ANY(%s)", [names])
    cursor.execute(
        f"INSERT INTO {target}.{CHECKPOINTS} ({columns}) SELECT {columns} FROM {source}.{CHECKPOINTS} "
        "WHERE projection = ANY(%s)",
        [names],
    )
    cursor.execute(f"DELETE FROM {source}.{CHECKPOINTS} WHERE projection = ANY(%s)", [names])


# --- the rebuild's lock and progress, on a connection of its own ---


@dataclass
class Progress:
    """The rebuild's figures, written to the progress row (at most twice a second) and the metrics."""

    conn: psycopg.Connection[Any]
    generation: int = 0
    projections: tuple[str, ...] = ()
    phase: str = "create"
    events_read: int = 0
    events_total: int = 0
    rate: float = 0.0
    eta: float | None = None
    lag: int | None = None
    message: str = ""
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    written: float = 0.0

    def set(self, force: bool = False, **changes: Any) -> None:
        for name, value in changes.items():
            setattr(self, name, value)
        for phase in PHASES:
            metrics.rebuild_phase.labels(phase).set(1 if phase == self.phase else 0)
        metrics.rebuild_events.set(self.events_read)
        metrics.rebuild_rate.set(self.rate)
        metrics.rebuild_lag.set(self.lag or 0)
        now = time.monotonic()
        if not force and now - self.written < 0.5:
            return
        self.written = now
        self.conn.execute(
            "INSERT INTO projections_rebuildprogress (id, generation, projections, phase, events_read, events_total, "
            "rate, eta_seconds, lag, message, started_at, updated_at) "
            "VALUES (1, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now()) ON CONFLICT (id) DO UPDATE SET "
            "generation = EXCLUDED.generation, projections = EXCLUDED.projections, phase = EXCLUDED.phase, "
            "events_read = EXCLUDED.events_read, events_total = EXCLUDED.events_total, rate = EXCLUDED.rate, "
            "eta_seconds = EXCLUDED.eta_seconds, lag = EXCLUDED.lag, message = EXCLUDED.message, "
            "started_at = EXCLUDED.started_at, updated_at = now()",
            [
                self.generation,
                ", ".join(self.projections)[:200],
                self.phase,
                self.events_read,
                self.events_total,
                self.rate,
                self.eta,
                self.lag,
                self.message,
                self.started,
            ],
        )


def own_connection() -> psycopg.Connection[Any]:
    """A second connection to the bank's database, autocommit: its session lock and progress rows are not
    part of the rebuild's long transactions (the progress is seen while they run; the lock dies with it)."""
    params = connection.get_connection_params()
    kept = {k: v for k, v in params.items() if k in ("dbname", "user", "password", "host", "port", "sslmode")}
    return psycopg.connect(**kept, autocommit=True, application_name="bank rebuild")


@contextmanager
def rebuild_lock(what: str) -> Iterator[Progress]:
    """The one rebuild at a time: refused at once (RebuildRefused, one line) if another holds the lock."""
    conn = own_connection()
    try:
        if not conn.execute("SELECT pg_try_advisory_lock(%s)", [REBUILD_LOCK]).fetchone()[0]:  # type: ignore[index]
            row = conn.execute(
                "SELECT generation, projections, phase, started_at FROM projections_rebuildprogress WHERE id = 1"
            ).fetchone()
            running = f" (g{row[0]} of {row[1]}: {row[2]} since {row[3]:%H:%M:%S})" if row else ""
            raise RebuildRefused(f"another rebuild is running{running}; {what} not started")
        yield Progress(conn)
    finally:
        conn.close()


def previous_run(progress: Progress) -> str | None:
    """What the last rebuild left unfinished (its progress row says a phase before done), if anything."""
    row = progress.conn.execute(
        "SELECT generation, projections, phase FROM projections_rebuildprogress WHERE id = 1"
    ).fetchone()
    if row is None or row[2] in ("done", "failed"):
        return None
    return f"g{row[0]} of {row[1]} stopped in {row[2]}"


def running_rebuild() -> dict[str, Any] | None:
    """The progress row, and whether its rebuild still runs (holds the lock): for bank_status and the admin."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT generation, projections, phase, events_read, events_total, rate, eta_seconds, lag, message, "
            "started_at, updated_at FROM projections_rebuildprogress WHERE id = 1"
        )
        row = cursor.fetchone()
        if row is None:
            return None
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = %s AND granted",
            [REBUILD_LOCK >> 32, REBUILD_LOCK & 0xFFFFFFFF],
        )
        running = cursor.fetchone()[0] > 0
    keys = ("generation", "projections", "phase", "events_read", "events_total", "rate", "eta", "lag", "message")
    found = dict(zip(keys, row[:9], strict=True)) | {"started_at": row[9], "updated_at": row[10], "running": running}
    if not running and found["phase"] not in ("done", "failed"):
        found["phase"] = f"stopped in {found['phase']}"
    return found


def drop_leftovers(cursor: Any) -> list[str]:
    """Schemas of generations neither live nor kept (a rebuild was killed after its fill): dropped."""
    kept = {old for _, old in generation_rows(cursor).values() if old is not None}
    cursor.execute("SELECT nspname FROM pg_namespace WHERE nspname ~ '^projections_g[0-9]+$'")
    dropped = []
    for (name,) in cursor.fetchall():
        match = GENERATION_SCHEMA.match(name)
        if match and int(match[1]) not in kept:
            cursor.execute(f"DROP SCHEMA {name} CASCADE")
            dropped.append(name)
    return dropped


def next_generation(cursor: Any) -> int:
    numbers = [1]
    for live, old in generation_rows(cursor).values():
        numbers += [live, old or 0]
    cursor.execute("SELECT nspname FROM pg_namespace WHERE nspname ~ '^projections_g[0-9]+$'")
    numbers += [int(GENERATION_SCHEMA.match(name)[1]) for (name,) in cursor.fetchall()]  # type: ignore[index]
    return max(numbers) + 1


# --- rebuild ---


@dataclass
class RebuildResult:
    generation: int
    projections: tuple[str, ...]
    events: int = 0  # read by the fill
    fill_seconds: float = 0.0
    caught_up: int = 0  # events applied after the fill
    seconds: float = 0.0
    swapped: bool = False
    started: str = "clean"  # or what a previous run left and was dropped
    notes: list[str] = field(default_factory=list)

    @property
    def fill_rate(self) -> float:
        return self.events / self.fill_seconds if self.fill_seconds else 0.0


def rebuild(
    kafka: KafkaSettings,
    projections: Iterable[str] | None = None,
    progress: bool = True,
    progress_file: IO[str] | None = None,
    batch_size: int = 20_000,
    swap_within: int = 2_000,
    say: Callable[[str], None] = log.info,
    before_swap: Callable[[], None] | None = None,
) -> RebuildResult:
    """Build the next generation of `projections` (default: all) from the log and swap it in (the steps are in
    the module's docstring). `before_swap` is called once caught up (tests stop the rebuild there)."""
    chosen = registry.chosen(projections)
    names = [p.name for p in chosen]
    started = time.monotonic()
    with rebuild_lock("rebuild") as status, connection.cursor() as cursor:
        rows = generation_rows(cursor)
        kept = [f"{n} (g{rows[n][1]})" for n in names if n in rows and rows[n][1] is not None]
        if kept:
            raise RebuildRefused(
                f"the previous generation of {', '.join(kept)} is kept for --rollback: "
                "`manage.py rebuild --drop-old` first"
            )
        stopped = previous_run(status)
        dropped = drop_leftovers(cursor)
        generation = next_generation(cursor)
        result = RebuildResult(generation, tuple(names))
        if stopped or dropped:
            result.started = f"clean: the previous rebuild ({stopped or 'unfinished'}) left {', '.join(dropped) or 'nothing'}, dropped"
        say(f"rebuild g{generation} of {', '.join(names)}: starting {result.started}")
        schema = schema_of(generation)
        status.set(force=True, generation=generation, projections=tuple(names), phase="fill", message=result.started)
        try:
            ends = live_position(kafka, cursor)
            status.set(force=True, events_total=sum(ends.values()))

            def on_batch(done: replay.ReplayResult, offsets: int) -> None:
                rate = done.events / done.seconds if done.seconds else 0.0
                left = max(0, status.events_total - offsets)
                status.set(events_read=done.events, rate=rate, eta=left / rate if rate else None)

            filled = replay.replay(
                kafka,
                names,
                ends=ends,
                schema=schema,
                progress=progress,
                batch_size=batch_size,
                progress_file=progress_file,
                lock=False,
                on_batch=on_batch,
                desc=f"rebuild g{generation}",
            )
            result.events, result.fill_seconds = filled.events, filled.seconds
            say(
                f"filled g{generation}: {filled.events} events in {filled.seconds:.1f}s "
                f"({filled.rate:,.0f} events/s), indexes built"
            )
            rules = filled.rules
            status.set(force=True, phase="catch-up", events_read=filled.events, rate=filled.rate, eta=0.0)
            result.caught_up = catch_up(kafka, chosen, schema, rules, status, swap_within, batch_size)
            if before_swap is not None:
                before_swap()
            status.set(force=True, phase="swap")
            result.caught_up += swap(kafka, chosen, schema, rules, generation, say)
            result.swapped = True
            result.seconds = time.monotonic() - started
            status.set(force=True, phase="done", lag=0, message=f"g{generation} live after {result.seconds:.1f}s")
        except BaseException as error:
            status.set(force=True, phase="failed", message=str(error)[:500] or type(error).__name__)
            raise
    return result


def apply_to(
    kafka: KafkaSettings,
    chosen: list[Projection],
    schema: str,
    rules: parking.Parking,
    batch: list[Any],
) -> int:
    """One batch of bank.events into generation `schema`, in the caller's transaction (its checkpoints too)."""
    records, poison = replay.records_of(batch)
    ends: dict[int, int] = {}
    for message in batch:
        ends[message.partition() or 0] = (message.offset() or 0) + 1
    decided = rules.decide(records)
    with connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL search_path TO {schema}, public")
        store.apply_batch(cursor, kafka.events_topic, decided.apply, ends, chosen, lock=False)
        cursor.execute("SET LOCAL search_path TO public")
    return len(records) - poison


def lag_of(
    kafka: KafkaSettings, cursor: Any, chosen: list[Projection], schema: str
) -> tuple[dict[int, int], dict[int, int]]:
    """(where the generation stands, where the live projector stands), per partition."""
    live = live_position(kafka, cursor)
    own = checkpoints_of(kafka, cursor, schema, [p.name for p in chosen])
    position = {p: min(own[name].get(p, 0) for name in own) for p in live}
    return position, live


def catch_up(
    kafka: KafkaSettings,
    chosen: list[Projection],
    schema: str,
    rules: parking.Parking,
    status: Progress,
    swap_within: int,
    batch_size: int,
) -> int:
    """Follow the live projector until the generation is within `swap_within` offsets of it; one transaction a
    batch. Returns how many events it applied."""
    applied = 0
    fault_pause("catch-up")
    while True:
        with connection.cursor() as cursor:
            position, live = lag_of(kafka, cursor, chosen, schema)
        lag = sum(max(0, live[p] - position.get(p, 0)) for p in live)
        status.set(force=True, lag=lag)
        if lag <= swap_within:
            return applied
        for batch in read_to_end(kafka, kafka.events_topic, ends=live, starts=position, batch_size=batch_size):
            with transaction.atomic():
                applied += apply_to(kafka, chosen, schema, rules, batch)
            status.set(events_read=status.events_read + len(batch))
        with connection.cursor() as cursor:
            advance(kafka, cursor, schema, [p.name for p in chosen], live)


def swap(
    kafka: KafkaSettings,
    chosen: list[Projection],
    schema: str,
    rules: parking.Parking,
    generation: int,
    say: Callable[[str], None],
    attempts: int = 10,
) -> int:
    """Make `schema`'s tables live, in one transaction at a batch boundary of the live projector; retried if a
    lock was not granted within SWAP_LOCK_TIMEOUT. Returns the events applied inside the swap."""
    for attempt in range(1, attempts + 1):
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'")
                store.take_lock(cursor)  # the projector is between two batches until the commit
                applied = 0
                position, live = lag_of(kafka, cursor, chosen, schema)
                behind = {p: live[p] for p in live if position.get(p, 0) < live[p]}
                if behind:
                    starts = {p: position.get(p, 0) for p in behind}
                    for batch in read_to_end(kafka, kafka.events_topic, ends=behind, starts=starts):
                        applied += apply_to(kafka, chosen, schema, rules, batch)
                    advance(kafka, cursor, schema, [p.name for p in chosen], behind)
                    position, live = lag_of(kafka, cursor, chosen, schema)
                check_swappable(kafka, position, live)
                move_in(cursor, chosen, schema, generation)
                fault_pause("swap")  # the tables moved, not committed: a kill here must leave the live ones
            say(f"swapped: g{generation} of {', '.join(p.name for p in chosen)} is live ({applied} events in the swap)")
            return applied
        except psycopg.errors.LockNotAvailable as error:
            say(f"swap attempt {attempt}: a lock was not granted within {SWAP_LOCK_TIMEOUT} ({error}); trying again")
        except Exception as error:
            if isinstance(getattr(error, "__cause__", None), psycopg.errors.LockNotAvailable):
                say(f"swap attempt {attempt}: a lock was not granted within {SWAP_LOCK_TIMEOUT}; trying again")
                continue
            raise
    raise RebuildRefused(
        f"could not swap in {attempts} attempts: the tables stayed busy; the live generation is untouched"
    )


def check_swappable(kafka: KafkaSettings, position: dict[int, int], live: dict[int, int]) -> None:
    """Never swap in a generation behind the live one, or one that read another log (past this log's end)."""
    behind = {p: (position.get(p, 0), live[p]) for p in live if position.get(p, 0) < live[p]}
    if behind:
        raise RebuildRefused(
            f"the new generation is behind the live one (partition: (new, live)) {behind}; not swapped"
        )
    ends = end_offsets(kafka, kafka.events_topic)
    ahead = {p: (offset, ends.get(p, 0)) for p, offset in position.items() if offset > ends.get(p, 0)}
    if ahead:
        raise RebuildRefused(
            f"the new generation is past the end of {kafka.events_topic} (partition: (new, log end)) {ahead}: "
            "it read another log; not swapped"
        )


def move_in(cursor: Any, chosen: list[Projection], schema: str, generation: int) -> None:
    """The swap's moves, in the caller's transaction: each live table (and its checkpoints) out to its own
    generation's schema, the new one in; the generation rows."""
    rows = generation_rows(cursor)
    for projection in chosen:
        live, _ = rows.get(projection.name, (1, None))
        out = schema_of(live)
        cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {out}")
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {out}.{CHECKPOINTS} (LIKE public.{CHECKPOINTS} INCLUDING ALL)")
        cursor.execute(f"ALTER TABLE public.{projection.table} SET SCHEMA {out}")
        cursor.execute(f"ALTER TABLE {schema}.{projection.table} SET SCHEMA public")
        move_checkpoints(cursor, [projection.name], "public", out)
        move_checkpoints(cursor, [projection.name], schema, "public")
        cursor.execute(
            "INSERT INTO projections_generation (projection, live, old, swapped_at) VALUES (%s, %s, %s, now()) "
            "ON CONFLICT (projection) DO UPDATE SET live = EXCLUDED.live, old = EXCLUDED.old, swapped_at = now()",
            [projection.name, generation, live],
        )


# --- rollback and drop-old ---


def rollback(
    kafka: KafkaSettings,
    projections: Iterable[str] | None = None,
    say: Callable[[str], None] = log.info,
    batch_size: int = 20_000,
) -> list[str]:
    """Swap the kept generation of `projections` (default: every one that has one) back in: first caught up to the
    live position (the parking rules from the live parked table, as the projector runs them), then swapped. The
    generation swapped out is kept in its turn."""
    with rebuild_lock("rollback") as status, connection.cursor() as cursor:
        rows = generation_rows(cursor)
        wanted = [p.name for p in registry.chosen(projections)] if projections else list(rows)
        todo = [p for p in registry.chosen(wanted) if p.name in rows and rows[p.name][1] is not None]
        if not todo:
            raise RebuildRefused("no previous generation is kept: nothing to roll back to")
        done = []
        for old in sorted({rows[p.name][1] for p in todo}):  # type: ignore[type-var]
            group = [p for p in todo if rows[p.name][1] == old]
            schema = schema_of(old)  # type: ignore[arg-type]
            status.set(force=True, generation=old, projections=tuple(p.name for p in group), phase="rollback")
            rules = live_rules(kafka, cursor)
            catch_up(kafka, group, schema, rules, status, batch_size, batch_size)
            swap(kafka, group, schema, rules, old, say)  # type: ignore[arg-type]
            done += [f"{p.name}: g{old} live again" for p in group]
        status.set(force=True, phase="done", message="; ".join(done))
    return done


def live_rules(kafka: KafkaSettings, cursor: Any) -> parking.Parking:
    """The parking rules as the live projector stands now: its parked accounts and the audit's last sequences (a
    kept generation behind these applies each event its own rows lack; each writer's sequence guard decides)."""
    cursor.execute(
        f'SELECT account_id, partition, "offset", reason FROM {parking.TABLE} WHERE topic = %s', [kafka.events_topic]
    )
    spots = {row[0]: parking.Parked(*row) for row in cursor.fetchall()}
    cursor.execute("SELECT account_id, max(sequence) FROM projections_auditentry GROUP BY account_id")
    last = dict(cursor.fetchall())
    return parking.Parking(spots, last)


def drop_old(projections: Iterable[str] | None = None) -> list[str]:
    """Drop the kept generations of `projections` (default: all): no rollback to them after this."""
    with rebuild_lock("drop-old"), transaction.atomic(), connection.cursor() as cursor:
        rows = generation_rows(cursor)
        wanted = [p.name for p in registry.chosen(projections)] if projections else list(rows)
        dropped = []
        for projection in registry.chosen(wanted):
            live, old = rows.get(projection.name, (1, None))
            if old is None:
                continue
            schema = schema_of(old)
            cursor.execute(f"DROP TABLE IF EXISTS {schema}.{projection.table}")
            cursor.execute(f"DELETE FROM {schema}.{CHECKPOINTS} WHERE projection = %s", [projection.name])
            cursor.execute("UPDATE projections_generation SET old = NULL WHERE projection = %s", [projection.name])
            dropped.append(f"{projection.name}: g{old} dropped (g{live} live)")
            cursor.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = %s AND tablename <> ALL(%s)",
                [schema, [CHECKPOINTS, parking.TABLE]],
            )
            if cursor.fetchone()[0] == 0:
                cursor.execute(f"DROP SCHEMA {schema} CASCADE")
    return dropped


def describe(kafka: KafkaSettings) -> list[str]:
    """One line per projection: its live generation and the one kept, if any."""
    with connection.cursor() as cursor:
        rows = generation_rows(cursor)
    lines = []
    for name in registry.PROJECTIONS:
        live, old = rows.get(name, (1, None))
        state = "not deployed (rebuild it to backfill)" if live == 0 else f"g{live} live"
        lines.append(f"{name}: {state}" + (f", g{old} kept for --rollback" if old is not None else ""))
    return lines
