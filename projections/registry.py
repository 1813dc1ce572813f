"""The registry of projections: every read model built from bank.events, in one list.

The live projector (through `store.apply_batch`), `replay`, `replay --verify` and `bank_status`
all read `PROJECTIONS`; none of them names a projection. Adding a projection is its model (with
a migration), its apply function and writer, and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bank.messages import EventEnvelope
from projections import store
from projections.models import Account, AuditEntry, DailyBalance, Transfer


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
    apply: Callable[[Any, list[EventEnvelope], store.Outcome, store.Memory | None, bool], None]
    finish: Callable[[Any, store.Memory], None] | None = None
    # With a `memory`, the writer needs no index of its table (it only COPYs): a rebuild fills the table without
    # them and builds them after the rows. Otherwise (it upserts) the table gets its indexes before the fill.
    bulk: bool = False


PROJECTIONS: dict[str, Projection] = {
    p.name: p
    for p in (
        Projection("accounts", Account._meta.db_table, "id", store.apply_accounts, store.finish_accounts, bulk=True),
        Projection("audit", AuditEntry._meta.db_table, "event_id", store.apply_audit, bulk=True),
        Projection(
            "transfers", Transfer._meta.db_table, "id", store.apply_transfers, store.finish_transfers, bulk=True
        ),
        Projection(
            "daily_balances",
            DailyBalance._meta.db_table,
            "account_id, day",
            store.apply_daily_balances,
            store.finish_daily_balances,
            bulk=True,
        ),
    )
}


def chosen(names: Iterable[str] | None = None) -> list[Projection]:
    """The named projections (all when None), in registry order; an unknown name is a ValueError."""
    if names is None:
        return list(PROJECTIONS.values())
    wanted = set(names)
    unknown = wanted - set(PROJECTIONS)
    if unknown:
        raise ValueError(f"unknown projection(s): {', '.join(sorted(unknown))}; known: {', '.join(PROJECTIONS)}")
    return [p for p in PROJECTIONS.values() if p.name in wanted]
