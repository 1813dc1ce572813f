"""Parked accounts: accounts whose projection the projector holds back, in the caller's transaction.

An account is parked at the offset of its first event that was not applied (a sequence gap, a
poison record naming it, a row the database refused). While parked, its events are skipped (the
checkpoints still move); when the processor writes AccountReleased for it, the projector reads
the account's events again from that offset, applies them and unparks it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from bank.messages import EventEnvelope

log = logging.getLogger("bank.projector")


@dataclass(frozen=True)
class Parked:
    account_id: UUID
    partition: int
    offset: int
    reason: str


def parked(cursor: Any, topic: str, ids: Iterable[UUID]) -> dict[UUID, Parked]:
    cursor.execute(
        'SELECT account_id, partition, "offset", reason FROM projections_parkedaccount '
        "WHERE topic = %s AND account_id = ANY(%s)",
        [topic, list(ids)],
    )
    return {row[0]: Parked(*row) for row in cursor.fetchall()}


def park(cursor: Any, topic: str, spot: Parked) -> None:
    """Park an account; if it is parked already, it stays parked where it was (the earlier offset)."""
    log.warning("parking account %s at %s[%d]@%d: %s", spot.account_id, topic, spot.partition, spot.offset, spot.reason)
    cursor.execute(
        'INSERT INTO projections_parkedaccount (account_id, topic, partition, "offset", reason, since) '
        "VALUES (%s, %s, %s, %s, %s, now()) ON CONFLICT (account_id) DO NOTHING",
        [spot.account_id, topic, spot.partition, spot.offset, spot.reason[:2000]],
    )


def reason(cursor: Any, account_id: UUID, why: str) -> None:
    cursor.execute("UPDATE projections_parkedaccount SET reason = %s WHERE account_id = %s", [why[:2000], account_id])


def unpark(cursor: Any, account_id: UUID) -> None:
    cursor.execute("DELETE FROM projections_parkedaccount WHERE account_id = %s", [account_id])


def accepted(envelopes: Sequence[EventEnvelope], last_sequence: int) -> list[EventEnvelope]:
    """The events of one released account to apply, given the last sequence its projection has.

    The operator's release accepts what caused the parking. A gap is either events that are
    missing for good (later events go on from the jump: accept the jump) or a foreign record
    with a made-up sequence (later events go on from `last_sequence`: leave the record out).
    Duplicates are dropped here too.
    """
    kept = []
    for i, envelope in enumerate(envelopes):
        if envelope.sequence <= last_sequence:
            continue
        expected = last_sequence + 1
        if envelope.sequence != expected and any(later.sequence == expected for later in envelopes[i + 1 :]):
            log.warning(
                "released account %s: leaving out event %s (sequence %d, the history goes on from %d)",
                envelope.account_id,
                envelope.event_id,
                envelope.sequence,
                expected,
            )
            continue
        kept.append(envelope)
        last_sequence = envelope.sequence
    return kept
