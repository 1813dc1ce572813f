"""Parked accounts: the rules that hold one account's projection back, shared by the projector and replay.

An account is parked at the offset of its first record that was not applied: a sequence gap, a poison
record naming it, or (live only) a row the database refused. While parked, its events are skipped (the
checkpoints still move); when the processor writes AccountReleased for it, its events from that offset
up to the release are applied, accepting what parked it (`accepted`), and it is unparked.

`Parking.decide` is the one place these rules live. The live projector runs it over each batch (the
spots and last sequences from the database, a released account's held-back events read again from
Kafka); replay runs it over the whole log (all in memory). Both see each partition's records in the
same order, so they apply, park and release the same events, whatever the batch boundaries.

The parked table is replayed like a projection (a full replay, `--until` and `--verify` rebuild it; a
replay of some projections leaves it to the others, which stay at the live position): its spots are a
fold of the log under these rules, and they are part of the projections' state. Rows rebuilt without
their spot would leave a parked account's history stopped at the gap with nothing saying why; the live
projector would park it again at its next event, not where its history stopped, and a release would
then miss the events between. Two things are not facts of the log and are not replayed: `since` (when
the projector parked it; a replay keeps the live one of an unchanged spot, verify leaves it out) and a
spot for a row the database refused (the database's doing, and where the projector parks it depends
on its batches; a replay that meets such a row still fails as a whole).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from uuid import UUID

from projections.apply import gap
from projections.store import Positioned

log = logging.getLogger(__name__)

TABLE = "projections_parkedaccount"
RELEASED = "AccountReleased"


@dataclass(frozen=True)
class Parked:
    account_id: UUID
    partition: int
    offset: int
    reason: str


@dataclass(frozen=True)
class Poison:
    """A record of bank.events that cannot be read: where it is, and the account it names, if any."""

    partition: int
    offset: int
    account_id: UUID | None
    error: str


Record = Positioned | Poison
# A parked account's events from where it parked up to (not including) an offset, read again from the log.
Reread = Callable[[Parked, int], list[Positioned]]


@dataclass
class Plan:
    """What the rules decided for some records."""

    apply: list[Positioned] = field(default_factory=list)  # in log order; a released account's are marked released
    parked: list[Parked] = field(default_factory=list)
    released: list[tuple[Parked, int]] = field(default_factory=list)  # the spot lifted, how many events it applied


@dataclass
class Parking:
    """The parking rules over records in log order: which events apply, which accounts park, which are released.

    `spots` (the parked accounts) and `last` (the last sequence applied, per account) are the state,
    updated in place. A released account's held-back events come from `reread` (the live projector:
    they were skipped, possibly batches ago) or, without it, from `held`, where `decide` keeps them
    as they pass (replay: it sees the whole log). Either way they are the records a re-read finds: the
    account's events on the spot's partition, keyed by the account, from the spot on.
    """

    spots: dict[UUID, Parked] = field(default_factory=dict)
    last: dict[UUID, int] = field(default_factory=dict)
    reread: Reread | None = None
    held: dict[UUID, list[Positioned]] = field(default_factory=dict)

    def decide(self, records: Iterable[Record]) -> Plan:
        """Go through `records` in log order (per partition):

        1. Poison naming an account that is not parked parks it there.
        2. An event of a parked account is held back, unless it is AccountReleased: then the held-back
           events are applied, accepting what parked it, the account is unparked, and the release
           itself goes on as any event.
        3. An event whose sequence jumps parks its account there (held back, for the release to judge);
           the next sequence applies, and so does a duplicate (each projection skips and counts it).
        """
        plan = Plan()
        spots, last = self.spots, self.last
        for record in records:
            if isinstance(record, Poison):
                if record.account_id is not None and record.account_id not in spots:
                    why = f"poison: {record.error}"
                    self._park(plan, Parked(record.account_id, record.partition, record.offset, why))
                continue
            envelope = record.envelope
            account = envelope.account_id
            if spots and account in spots:
                if envelope.type != RELEASED:
                    self._hold(record)
                    continue
                self._release(plan, spots.pop(account), record.offset)
            previous = last.get(account, 0)
            if envelope.sequence > previous + 1:
                self._park(
                    plan, Parked(account, record.partition, record.offset, f"sequence gap: {gap(envelope, previous)}")
                )
                self._hold(record)
                continue
            if envelope.sequence > previous:
                last[account] = envelope.sequence
            plan.apply.append(record)
        return plan

    def _park(self, plan: Plan, spot: Parked) -> None:
        self.spots[spot.account_id] = spot
        plan.parked.append(spot)

    def _hold(self, record: Positioned) -> None:
        if self.reread is not None:
            return  # read again at the release
        account = record.envelope.account_id
        spot = self.spots[account]
        if record.partition == spot.partition and record.key == str(account).encode():
            self.held.setdefault(account, []).append(record)

    def _release(self, plan: Plan, spot: Parked, at: int) -> None:
        account = spot.account_id
        events = self.reread(spot, at) if self.reread is not None else self.held.pop(account, [])
        chosen = accepted(events, self.last.get(account, 0))
        plan.apply.extend(replace(e, released=True) for e in chosen)
        plan.released.append((spot, len(chosen)))
        if chosen:
            self.last[account] = chosen[-1].envelope.sequence


def accepted(events: Sequence[Positioned], last_sequence: int) -> list[Positioned]:
    """The events of one released account to apply, given the last sequence its projection has.

    The operator's release accepts what caused the parking. A gap is either events that are
    missing for good (later events go on from the jump: accept the jump) or a foreign record
    with a made-up sequence (later events go on from `last_sequence`: leave the record out).
    Duplicates are dropped here too.
    """
    kept = []
    for i, event in enumerate(events):
        envelope = event.envelope
        if envelope.sequence <= last_sequence:
            continue
        expected = last_sequence + 1
        if envelope.sequence != expected and any(later.envelope.sequence == expected for later in events[i + 1 :]):
            log.warning(
                "released account %s: leaving out event %s (sequence %d, the history goes on from %d)",
                envelope.account_id,
                envelope.event_id,
                envelope.sequence,
                expected,
            )
            continue
        kept.append(event)
        last_sequence = envelope.sequence
    return kept


# --- the parked table, in the caller's transaction ---


def parked(cursor: Any, topic: str, ids: Iterable[UUID]) -> dict[UUID, Parked]:
    cursor.execute(
        f'SELECT account_id, partition, "offset", reason FROM {TABLE} WHERE topic = %s AND account_id = ANY(%s)',
        [topic, list(ids)],
    )
    return {row[0]: Parked(*row) for row in cursor.fetchall()}


def park(cursor: Any, topic: str, spot: Parked) -> None:
    """Park an account; if it is parked already, it stays parked at the earlier offset."""
    log.warning("parking account %s at %s[%d]@%d: %s", spot.account_id, topic, spot.partition, spot.offset, spot.reason)
    cursor.execute(
        f'INSERT INTO {TABLE} AS p (account_id, topic, partition, "offset", reason, since) '
        "VALUES (%s, %s, %s, %s, %s, now()) ON CONFLICT (account_id) DO UPDATE "
        'SET "offset" = EXCLUDED."offset", reason = EXCLUDED.reason '
        'WHERE p.topic = EXCLUDED.topic AND p.partition = EXCLUDED.partition AND EXCLUDED."offset" < p."offset"',
        [spot.account_id, topic, spot.partition, spot.offset, spot.reason[:2000]],
    )


def unpark(cursor: Any, account_id: UUID) -> None:
    cursor.execute(f"DELETE FROM {TABLE} WHERE account_id = %s", [account_id])


def save(cursor: Any, topic: str, before: dict[UUID, Parked], after: dict[UUID, Parked]) -> None:
    """Write what `decide` changed: the spots lifted or moved, then the new ones."""
    for account, spot in before.items():
        if after.get(account) != spot:
            unpark(cursor, account)
    for account, spot in after.items():
        if before.get(account) != spot:
            park(cursor, topic, spot)


def rebuild(cursor: Any, topic: str, spots: Iterable[Parked]) -> None:
    """The end of a replay: the topic's parked table is `spots`, each keeping the `since` it had if unchanged."""
    cursor.execute(f'SELECT account_id, partition, "offset", reason, since FROM {TABLE} WHERE topic = %s', [topic])
    since = {Parked(*row[:4]): row[4] for row in cursor.fetchall()}
    cursor.execute(f"DELETE FROM {TABLE} WHERE topic = %s", [topic])
    cursor.executemany(
        f'INSERT INTO {TABLE} (account_id, topic, partition, "offset", reason, since) '
        "VALUES (%s, %s, %s, %s, %s, coalesce(%s, now())) ON CONFLICT (account_id) DO UPDATE "
        'SET topic = EXCLUDED.topic, partition = EXCLUDED.partition, "offset" = EXCLUDED."offset", '
        "reason = EXCLUDED.reason, since = EXCLUDED.since",
        [(s.account_id, topic, s.partition, s.offset, s.reason[:2000], since.get(s)) for s in spots],
    )
