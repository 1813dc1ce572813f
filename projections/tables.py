"""The tables of a generation that is not live (projections/generations.py explains generations): created like
the live ones without indexes, their indexes built after the rows. Shared by `rebuild` and `replay` into a schema."""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Any

from django.conf import settings

from projections import parking
from projections.store import Projection

log = logging.getLogger(__name__)

CHECKPOINTS = "projections_checkpoint"


def fault_pause(phase: str) -> None:
    """Tests only (REBUILD_FAULT_PAUSE): stop in `phase` for a while, saying so, so a test can SIGKILL us there."""
    if phase == settings.REBUILD_FAULT_PAUSE:
        log.warning("REBUILD_FAULT_PAUSE: pausing in %s for %.0fs", phase, settings.REBUILD_FAULT_SECONDS)
        print(f"REBUILD_FAULT_PAUSE: pausing in {phase}", file=sys.stderr, flush=True)
        time.sleep(settings.REBUILD_FAULT_SECONDS)


def empty_tables(cursor: Any, schema: str, chosen: list[Projection]) -> None:
    """The chosen projections' tables in `schema`, empty, like the live ones but without indexes (built after the
    rows: `build_indexes`); a checkpoint table and a parked table of the schema's own (small, indexed)."""
    for projection in chosen:
        cursor.execute(
            f"CREATE TABLE {schema}.{projection.table} "
            f"(LIKE public.{projection.table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED)"
        )
    for table in (CHECKPOINTS, parking.TABLE):
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {schema}.{table} (LIKE public.{table} INCLUDING ALL)")
    build_indexes(cursor, schema, [p for p in chosen if not p.bulk])  # writers that upsert need them


def build_indexes(cursor: Any, schema: str, chosen: Iterable[Projection]) -> None:
    """The live tables' primary keys, unique constraints and indexes, with the same names, on `schema`'s copies."""
    for projection in chosen:
        table = projection.table
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(c.oid) FROM pg_constraint c "
            "WHERE conrelid = %s::regclass AND contype IN ('p', 'u', 'x') ORDER BY contype",
            [f"public.{table}"],
        )
        constraints = cursor.fetchall()
        for name, definition in constraints:
            cursor.execute(f'ALTER TABLE {schema}.{table} ADD CONSTRAINT "{name}" {definition}')
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = %s "
            "AND indexname <> ALL(%s)",
            [table, [name for name, _ in constraints]],
        )
        for _, definition in cursor.fetchall():
            moved, found = re.subn(rf" ON (public\.)?{table} ", f" ON {schema}.{table} ", definition, count=1)
            if not found:
                raise RuntimeError(f"cannot place index {definition!r} on {schema}.{table}")
            cursor.execute(moved)
        cursor.execute(f"ANALYZE {schema}.{table}")
