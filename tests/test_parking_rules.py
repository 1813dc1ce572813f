"""The parking rules alone (projections/parking.py): pure, no service.

Replay decides over the whole log at once, keeping held-back events in memory; the live projector
decides batch by batch, its state read back from the database and a released account's events read
again from the log. The rules must come to the same events and spots whatever the batch boundaries.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from itertools import pairwise
from uuid import UUID

from hypothesis import given, settings
from hypothesis import strategies as st

from bank import domain
from bank.messages import EventEnvelope
from projections.parking import Parked, Parking, Poison, Record
from projections.store import Positioned

ACCOUNTS = [UUID(int=1), UUID(int=2)]
PARTITION = 3
AT = datetime(2026, 11, 27, tzinfo=UTC)


def event(account: UUID, sequence: int, offset: int, released: bool = False, key: bool = True) -> Positioned:
    what: domain.Event = domain.AccountReleased() if released else domain.MoneyDeposited(1, sequence)
    envelope = EventEnvelope(what, uuid.uuid4(), account, sequence, AT, uuid.uuid4(), "user:alice")
    return Positioned(PARTITION, offset, envelope, str(account).encode() if key else None)


STEPS = st.lists(
    st.tuples(
        st.sampled_from(ACCOUNTS),
        st.sampled_from(["next", "next", "next", "release", "foreign", "missing", "duplicate", "poison", "unkeyed"]),
        st.integers(1, 4),
    ),
    max_size=40,
)


def log_of(steps: list[tuple[UUID, str, int]]) -> list[Record]:
    """Records as the processor and foreign clients write them: the processor's sequences have no holes unless
    events went missing; foreign records jump, repeat or cannot be read."""
    written = dict.fromkeys(ACCOUNTS, 0)
    records: list[Record] = []
    for offset, (account, kind, size) in enumerate(steps):
        match kind:
            case "next" | "release":
                written[account] += 1
                records.append(event(account, written[account], offset, released=kind == "release"))
            case "missing":  # the processor's events that never reached the log
                written[account] += size
                records.append(event(account, written[account] + 1, offset))
                written[account] += 1
            case "foreign":  # a made-up sequence ahead
                records.append(event(account, written[account] + 1 + size, offset))
            case "duplicate":
                records.append(event(account, max(written[account] - size, 1), offset))
            case "poison":
                records.append(Poison(PARTITION, offset, account, "bad envelope"))
            case "unkeyed":  # readable, but its key is not the account's
                written[account] += 1
                records.append(event(account, written[account], offset, key=False))
    return records


def project(applied: list[Positioned], last: dict[UUID, int], history: dict[UUID, list[UUID]]) -> None:
    """A hand fold of what the projections do with the events they are given: skip duplicates, apply the next
    sequence (any jump for a released account's events); a jump in the others is a bug of the rules."""
    for e in applied:
        account, sequence = e.envelope.account_id, e.envelope.sequence
        if sequence <= last.get(account, 0):
            continue
        assert e.released or sequence == last.get(account, 0) + 1, f"a gap given to the strict guard: {e}"
        last[account] = sequence
        history.setdefault(account, []).append(e.envelope.event_id)


def replayed(records: list[Record]) -> tuple[dict[UUID, list[UUID]], dict[UUID, Parked]]:
    rules = Parking()
    history: dict[UUID, list[UUID]] = {}
    project(rules.decide(records).apply, {}, history)
    return history, rules.spots


def live(records: list[Record], cuts: list[int]) -> tuple[dict[UUID, list[UUID]], dict[UUID, Parked]]:
    def reread(spot: Parked, until: int) -> list[Positioned]:
        key = str(spot.account_id).encode()
        return [
            r
            for r in records
            if isinstance(r, Positioned)
            and r.partition == spot.partition
            and spot.offset <= r.offset < until
            and r.key == key
            and r.envelope.account_id == spot.account_id
        ]

    spots: dict[UUID, Parked] = {}  # the parked table
    last: dict[UUID, int] = {}  # the projections' last sequences
    history: dict[UUID, list[UUID]] = {}
    bounds = [0, *sorted(set(cuts)), len(records)]
    for start, end in pairwise(bounds):
        rules = Parking(dict(spots), dict(last), reread=reread)
        project(rules.decide(records[start:end]).apply, last, history)
        spots = rules.spots
    return history, spots


@settings(max_examples=300, deadline=None)
@given(STEPS, st.lists(st.integers(0, 40), max_size=8))
def test_it_decides_the_same_in_one_pass_as_batch_by_batch(steps: list[tuple[UUID, str, int]], cuts: list[int]) -> None:
    records = log_of(steps)
    assert live(records, [c for c in cuts if c < len(records)]) == replayed(records)


def test_it_parks_at_a_foreign_jump_and_leaves_the_record_out_on_release() -> None:
    a = ACCOUNTS[0]
    records: list[Record] = [event(a, 1, 0), event(a, 5, 1), event(a, 2, 2), event(a, 3, 3, released=True)]
    history, spots = replayed(records)
    assert spots == {}
    assert history[a] == [r.envelope.event_id for r in records if isinstance(r, Positioned) and r.offset != 1]

    rules = Parking()
    plan = rules.decide(records[:3])
    assert [e.offset for e in plan.apply] == [0]
    assert plan.parked == [Parked(a, PARTITION, 1, plan.parked[0].reason)]
    assert plan.parked[0].reason.startswith(f"sequence gap: account {a}: event ")
    assert plan.parked[0].reason.endswith("has sequence 5, expected 2")


def test_it_parks_at_poison_naming_the_account_and_applies_what_it_held_back_on_release() -> None:
    a, b = ACCOUNTS
    records: list[Record] = [
        event(a, 1, 0),
        Poison(PARTITION, 1, a, "bad envelope: MoneyPrinted"),
        event(b, 1, 2),
        event(a, 2, 3),
        Poison(PARTITION, 4, a, "not JSON"),  # parked already: nothing new
        event(a, 3, 5, released=True),
    ]
    rules = Parking()
    plan = rules.decide(records[:5])
    assert [e.offset for e in plan.apply] == [0, 2]
    assert rules.spots == {a: Parked(a, PARTITION, 1, "poison: bad envelope: MoneyPrinted")}
    plan = rules.decide(records[5:])
    assert [(e.offset, e.released) for e in plan.apply] == [(3, True), (5, False)]
    assert rules.spots == {}
