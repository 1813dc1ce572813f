"""The registry of projections: every read model built from bank.events, in one list.

The live projector (through `store.apply_batch`), `replay`, `replay --verify` and `bank_status`
all read `PROJECTIONS`; none of them names a projection. Adding a projection is its model (with
a migration), its apply function and writer, and one entry here.
"""

from __future__ import annotations

from collections.abc import Iterable

from projections import store
from projections.models import Account, AuditEntry, DailyBalance, Transfer
from projections.store import Projection

__all__ = ["PROJECTIONS", "Projection", "chosen"]


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
