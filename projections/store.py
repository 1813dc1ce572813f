"""Writing projection rows and checkpoints to PostgreSQL, in bulk, inside the caller's transaction.

`apply_batch` runs the writers of the projections it is given (`Projection`s, listed in `projections.registry`);
the writers of the bank's projections (`apply_accounts`, `apply_audit`, `apply_transfers`) are here too.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import date
from itertools import groupby
from operator import attrgetter
from typing import Any
from uuid import UUID

from bank.messages import EventEnvelope
from projections.apply import (
    AccountRow,
    AuditRow,
    DailyRow,
    TransferRow,
    apply_account,
    apply_daily,
    apply_transfer,
    audit_row,
    day_of,
    is_next,
    transfer_key_of,
)

log = logging.getLogger(__name__)

# The PostgreSQL advisory lock the live projector and replay share, so that they never write at once.
LOCK_KEY = 7_263_544_100
ACCOUNT_COLUMNS = [f.name for f in fields(AccountRow)]
AUDIT_COLUMNS = [f.name for f in fields(AuditRow)]
TRANSFER_COLUMNS = [f.name for f in fields(TransferRow)]
DAILY_COLUMNS = [f.name for f in fields(DailyRow)]
DAILY_TYPES = ["uuid", "date", "bigint", "bigint", "bigint", "integer", "integer"]
ACCOUNT_TYPES = ["uuid", "text", "text", "text", "bigint", "text", "timestamptz", "integer", "timestamptz", "bigint"]
TRANSFER_TYPES = ["uuid", "uuid", "uuid", "uuid", "bigint", "text", "text", "text", *["timestamptz"] * 5]
# attrgetter, not dataclasses.astuple: astuple deep-copies every UUID and datetime (100x slower).
account_values = attrgetter(*ACCOUNT_COLUMNS)
is_released = attrgetter("released")
audit_values = attrgetter(*AUDIT_COLUMNS)
transfer_values = attrgetter(*TRANSFER_COLUMNS)
daily_values = attrgetter(*DAILY_COLUMNS)


@dataclass(frozen=True)
class Positioned:
    """An event with where it was read from."""

    partition: int
    offset: int
    envelope: EventEnvelope
    key: bytes | None = None
    # Read again for a released account (parking.Parking): applied below the checkpoints, its jump accepted.
    released: bool = False


@dataclass
class BatchChanges:
    """What a batch changed: what the live updates need."""

    accounts: dict[UUID, AccountRow] = field(default_factory=dict)
    opened: set[UUID] = field(default_factory=set)
    audit: dict[UUID, list[AuditRow]] = field(default_factory=lambda: defaultdict(list))
    applied: int = 0
    duplicates: int = 0
    # The audit's last sequence per account before the batch, if the caller has read them already (the
    # projector does, for the parking rules): apply_audit then starts from these instead of reading them again.
    last_sequences: dict[UUID, int] | None = None


@dataclass
class Memory:
    """What a replay knows without asking the database: it starts from empty tables and is their only writer.

    Accounts are folded here for the whole replay and written once at the end (`finish_accounts`).
    """

    accounts: dict[UUID, AccountRow] = field(default_factory=dict)
    last_sequence: dict[UUID, int] = field(default_factory=dict)
    transfers: dict[UUID, TransferRow] = field(default_factory=dict)
    # Keyed by the account id's int: UUID's hash and == are Python code, an int's are not.
    days: dict[tuple[int, date], DailyRow] = field(default_factory=dict)
    latest_day: dict[int, DailyRow] = field(default_factory=dict)  # per account: the row of its last event


@dataclass(frozen=True)
class Projection:
    """One read model: its name (checkpoints, `--projection`), table, primary key column, and writer.

    `apply(cursor, envelopes, outcome, memory, lenient)` writes a batch of fresh events, in order, inside the
    caller's transaction; with a `memory` (a replay, from empty tables) it may keep rows there
    instead and write them in `finish(cursor, memory)` at the end of the replay. `lenient` lets
    the sequence guard accept a jump (a released account's events, re-read from the log).
    """

    name: str
    table: str
    key: str
    apply: Callable[[Any, list[EventEnvelope], BatchChanges, Memory | None, bool], None]
    finish: Callable[[Any, Memory], None] | None = None
    # With a `memory`, the writer needs no index of its table (it only COPYs): a rebuild fills the table without
    # them and builds them after the rows. Otherwise (it upserts) the table gets its indexes before the fill.
    bulk: bool = False


def take_lock(cursor: Any) -> None:
    """Wait for the live projector's current batch (or a replay) to commit; held until this transaction ends."""
    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])


def load_checkpoints(cursor: Any, topic: str, projections: Iterable[str]) -> dict[tuple[str, int], int]:
    cursor.execute(
        "SELECT projection, partition, next_offset FROM projections_checkpoint WHERE topic = %s AND projection = ANY(%s)",
        [topic, list(projections)],
    )
    return {(projection, partition): offset for projection, partition, offset in cursor.fetchall()}


def save_checkpoints(cursor: Any, topic: str, projection: str, next_offsets: dict[int, int]) -> None:
    cursor.executemany(
        "INSERT INTO projections_checkpoint (projection, topic, partition, next_offset) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (projection, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset",
        [(projection, topic, partition, offset) for partition, offset in next_offsets.items()],
    )


def apply_batch(
    cursor: Any,
    topic: str,
    events: Sequence[Positioned],
    ends: dict[int, int],
    projections: Sequence[Projection],
    memory: Memory | None = None,
    sequences: dict[UUID, int] | None = None,
    lock: bool = True,
) -> BatchChanges:
    """Apply a batch of events to the projections, with their checkpoints, in the caller's transaction.

    1. Take the advisory lock (replay holds it for as long as it rewrites the tables).
    2. Read each projection's checkpoints: events below them were applied before, skip them.
       (`sequences`: the audit's last sequences of the batch's accounts, if the caller read them.)
    3. Fold the rest into the projection's rows (the sequence guard skips duplicates and
       stops at a gap; a released account's events, marked by parking.Parking, are applied
       whatever the checkpoints, accepting their jump), write the rows in bulk, then move the checkpoints to `ends` (per
       partition, the offset after the batch's last message, poison messages included).

    `lock=False`: a generation that is not live (projections/generations.py) has no other writer.
    """
    if lock:
        take_lock(cursor)
    outcome = BatchChanges(last_sequences=None if sequences is None else dict(sequences))
    checkpoints = load_checkpoints(cursor, topic, [p.name for p in projections])
    for projection in projections:
        floor = {partition: offset for (name, partition), offset in checkpoints.items() if name == projection.name}
        fresh = [e for e in events if e.released or e.offset >= floor.get(e.partition, 0)]
        # In runs: a released account's events (lenient) between the others, in log order.
        for lenient, run in groupby(fresh, key=is_released):
            projection.apply(cursor, [e.envelope for e in run], outcome, memory, lenient)
        moved = {p: end for p, end in ends.items() if end > checkpoints.get((projection.name, p), 0)}
        save_checkpoints(cursor, topic, projection.name, moved)
    return outcome


def apply_accounts(
    cursor: Any, envelopes: list[EventEnvelope], outcome: BatchChanges, memory: Memory | None, lenient: bool = False
) -> None:
    """Fold the events into account rows and upsert the changed ones (in a replay: keep them in `memory`).

    `lenient`: a released account's events, re-read from the log, may jump a sequence the operator accepted.
    """
    if memory is not None:
        rows = memory.accounts
    else:
        ids = list({e.account_id for e in envelopes})
        cursor.execute(f"SELECT {', '.join(ACCOUNT_COLUMNS)} FROM projections_account WHERE id = ANY(%s)", [ids])
        rows = {r[0]: AccountRow(*r) for r in cursor.fetchall()}
    changed: dict[UUID, AccountRow] = {}
    for envelope in envelopes:
        row = rows.get(envelope.account_id)
        if row is not None and not is_next(row.last_sequence, envelope, lenient):
            continue
        new = apply_account(row, envelope)
        if new is not None:
            if row is None:
                outcome.opened.add(new.id)
            rows[new.id] = changed[new.id] = new
    if changed and memory is None:
        upsert_accounts(cursor, list(changed.values()))
    outcome.accounts.update(changed)


def upsert_accounts(cursor: Any, rows: list[AccountRow]) -> None:
    upsert(cursor, "projections_account", ACCOUNT_COLUMNS, ACCOUNT_TYPES, map(account_values, rows))


def upsert(
    cursor: Any, table: str, columns: Sequence[str], types: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """One statement for all the rows, keyed by the first column: unnest() turns column arrays back into rows."""
    arrays = ", ".join(f"%s::{t}[]" for t in types)
    assignments = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns[1:])
    cursor.execute(
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM unnest({arrays}) "
        f"ON CONFLICT ({columns[0]}) DO UPDATE SET {assignments}",
        [list(column) for column in zip(*rows, strict=True)],
    )


def finish_accounts(cursor: Any, memory: Memory) -> None:
    """The end of a replay: COPY the account rows folded in `memory` into the empty table."""
    raw = getattr(cursor, "cursor", cursor)
    with raw.copy(f"COPY projections_account ({', '.join(ACCOUNT_COLUMNS)}) FROM STDIN") as copy:
        for row in memory.accounts.values():
            copy.write_row(account_values(row))


def apply_transfers(
    cursor: Any, envelopes: list[EventEnvelope], outcome: BatchChanges, memory: Memory | None, lenient: bool = False
) -> None:
    """Merge the transfer events into transfer rows and upsert the changed ones (in a replay: keep them in `memory`).

    No sequence guard needed: applying a transfer event twice sets the same column to the same time.
    """
    keyed = [(key, e) for e in envelopes if (key := transfer_key_of(e)) is not None]
    if not keyed:
        return
    if memory is not None:
        rows = memory.transfers
    else:
        ids = list({key for key, _ in keyed})
        cursor.execute(f"SELECT {', '.join(TRANSFER_COLUMNS)} FROM projections_transfer WHERE id = ANY(%s)", [ids])
        rows = {r[0]: TransferRow(*r) for r in cursor.fetchall()}
    changed: dict[UUID, TransferRow] = {}
    for key, envelope in keyed:
        new = apply_transfer(rows.get(key), envelope)
        if new is not None:
            rows[key] = changed[key] = new
    if changed and memory is None:
        upsert(cursor, "projections_transfer", TRANSFER_COLUMNS, TRANSFER_TYPES, map(transfer_values, changed.values()))


def finish_transfers(cursor: Any, memory: Memory) -> None:
    """COPY the transfer rows a replay kept in memory into the (empty) table."""
    raw = getattr(cursor, "cursor", cursor)
    with raw.copy(f"COPY projections_transfer ({', '.join(TRANSFER_COLUMNS)}) FROM STDIN") as copy:
        for row in memory.transfers.values():
            copy.write_row(transfer_values(row))


def apply_daily_balances(
    cursor: Any, envelopes: list[EventEnvelope], outcome: BatchChanges, memory: Memory | None, lenient: bool = False
) -> None:
    """Fold the events into one row per account and UTC day, upserted (in a replay: kept in `memory`).

    The sequence guard reads each account's row of its last event (`last_sequence`): duplicates are skipped.
    """
    if memory is not None:
        days, latest = memory.days, memory.latest_day
    else:
        ids = list({e.account_id for e in envelopes})
        keys = list({(e.account_id, day_of(e)) for e in envelopes})
        columns = ", ".join(DAILY_COLUMNS)
        cursor.execute(
            f"SELECT DISTINCT ON (account_id) {columns} FROM projections_dailybalance WHERE account_id = ANY(%s) "
            "ORDER BY account_id, last_sequence DESC",
            [ids],
        )
        latest = {r[0].int: DailyRow(*r) for r in cursor.fetchall()}
        cursor.execute(
            f"SELECT {', '.join('d.' + c for c in DAILY_COLUMNS)} FROM projections_dailybalance d "
            "JOIN unnest(%s::uuid[], %s::date[]) AS k(account_id, day) USING (account_id, day)",
            [[k[0] for k in keys], [k[1] for k in keys]],
        )
        days = {(r[0].int, r[1]): DailyRow(*r) for r in cursor.fetchall()}
    changed: dict[tuple[int, date], DailyRow] = {}
    for envelope in envelopes:
        account = envelope.account_id.int
        previous = latest.get(account)
        if not is_next(previous.last_sequence if previous is not None else 0, envelope, lenient):
            continue
        day = day_of(envelope)
        key = (account, day)
        new = apply_daily(days.get(key), previous, envelope, day)
        days[key] = latest[account] = changed[key] = new
    if changed and memory is None:
        arrays = ", ".join(f"%s::{t}[]" for t in DAILY_TYPES)
        assignments = ", ".join(f"{c} = EXCLUDED.{c}" for c in DAILY_COLUMNS[2:])
        cursor.execute(
            f"INSERT INTO projections_dailybalance ({', '.join(DAILY_COLUMNS)}) SELECT * FROM unnest({arrays}) "
            f"ON CONFLICT (account_id, day) DO UPDATE SET {assignments}",
            [list(column) for column in zip(*map(daily_values, changed.values()), strict=True)],
        )


def finish_daily_balances(cursor: Any, memory: Memory) -> None:
    """COPY the day rows a replay kept in memory into the (empty) table."""
    raw = getattr(cursor, "cursor", cursor)
    with raw.copy(f"COPY projections_dailybalance ({', '.join(DAILY_COLUMNS)}) FROM STDIN") as copy:
        for row in memory.days.values():
            copy.write_row(daily_values(row))


def last_sequences(cursor: Any, ids: list[UUID]) -> dict[UUID, int]:
    # One index-only backward scan per account; max() over a GROUP BY would read all their history.
    cursor.execute(
        "SELECT i.id, (SELECT max(a.sequence) FROM projections_auditentry a WHERE a.account_id = i.id) "
        "FROM unnest(%s::uuid[]) AS i(id)",
        [ids],
    )
    return {account_id: last for account_id, last in cursor.fetchall() if last is not None}


def apply_audit(
    cursor: Any, envelopes: list[EventEnvelope], outcome: BatchChanges, memory: Memory | None, lenient: bool = False
) -> None:
    """One history row per event, COPYed; the sequence guard skips duplicates and stops at a gap."""
    if memory is not None:
        last = memory.last_sequence
    elif outcome.last_sequences is not None:
        last = outcome.last_sequences
    else:
        last = last_sequences(cursor, list({e.account_id for e in envelopes}))
    new_rows: list[AuditRow] = []
    for envelope in envelopes:
        if not is_next(last.get(envelope.account_id, 0), envelope, lenient):
            outcome.duplicates += 1
            log.info("skipping duplicate event %s (sequence %d)", envelope.event_id, envelope.sequence)
            continue
        last[envelope.account_id] = envelope.sequence
        row = audit_row(envelope)
        new_rows.append(row)
        outcome.audit[row.account_id].append(row)
    if new_rows:
        # COPY: one round trip for the whole batch, the fastest way into PostgreSQL.
        raw = getattr(cursor, "cursor", cursor)
        with raw.copy(f"COPY projections_auditentry ({', '.join(AUDIT_COLUMNS)}) FROM STDIN") as copy:
            for row in new_rows:
                copy.write_row(audit_values(row))
    outcome.applied += len(new_rows)


def record_dead_letter(
    cursor: Any, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, error: str
) -> None:
    cursor.execute(
        'INSERT INTO projections_deadletter (topic, partition, "offset", key, value, error, created_at) '
        'VALUES (%s, %s, %s, %s, %s, %s, now()) ON CONFLICT (topic, partition, "offset") DO NOTHING',
        [topic, partition, offset, key, value, error],
    )
