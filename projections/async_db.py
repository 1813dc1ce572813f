"""PostgreSQL from the event loop, for the one query of the command path (psycopg 3's async pool).

Django's async ORM runs every query through `sync_to_async`: a hop to a worker thread and back,
and under ASGI the first hop of a request starts a thread of its own. The command views ask one
question per command (whose account is it, was the form sent before) and then only wait for
Kafka, so that question is asked here on the process's event loop instead, with no thread.

One pool per process, on the loop of the process's main thread (daphne's: it lives as long as the
process). Anywhere else (Django's sync test client runs each async view on a new loop in a new
thread) `fetch_one` runs the same SQL through Django's connection in a thread, as before.
Errors come out as Django's `OperationalError`/`InterfaceError`, so a database that is down or
restarting is answered with the same 503 as on every other path (web.middleware); a connection
broken by a restart is dropped and the read made once more.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import psycopg
from asgiref.sync import sync_to_async
from django import db
from django.conf import settings
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool, PoolTimeout

log = logging.getLogger(__name__)

APPLICATION_NAME = "bank-web-async"
_pool: AsyncConnectionPool | None = None
_pool_loop: asyncio.AbstractEventLoop | None = None
_opening = threading.Lock()


def _conninfo() -> str:
    db_settings = settings.DATABASES["default"]
    return make_conninfo(
        dbname=db_settings["NAME"],
        user=db_settings.get("USER") or None,
        password=db_settings.get("PASSWORD") or None,
        host=db_settings.get("HOST") or None,
        port=str(db_settings["PORT"]) if db_settings.get("PORT") else None,
        application_name=APPLICATION_NAME,  # in pg_stat_activity
    )


async def _the_pool(loop: asyncio.AbstractEventLoop) -> AsyncConnectionPool | None:
    """The process's pool, if `loop` is the main thread's loop it belongs to (made on first use)."""
    global _pool, _pool_loop
    if threading.current_thread() is not threading.main_thread():
        return None
    if _pool is not None:
        return _pool if _pool_loop is loop else None
    with _opening:  # one loop per main thread: only a first call racing another loop's could meet here
        if _pool is None:
            _pool_loop = loop
            _pool = AsyncConnectionPool(
                _conninfo(),
                # As many as the sync pool of the process (DATABASE_POOL_SIZE): a burst of commands
                # queues for them, up to DATABASE_POOL_TIMEOUT seconds, then the view answers 503.
                min_size=1,
                max_size=max(1, settings.DATABASE_POOL_SIZE),
                timeout=settings.DATABASE_POOL_TIMEOUT,
                kwargs={"autocommit": True},
                # Not checked when lent out (a round trip per command): fetch_one retries a read that met a
                # connection broken since (PostgreSQL restarted), after the pool has dropped the broken ones.
                name="bank-async",
                open=False,
            )
    await _pool.open(wait=False)
    return _pool


async def fetch_one(sql: str, params: list[Any]) -> tuple[Any, ...] | None:
    """The first row of one read-only query: on the event loop when it can, else in a thread."""
    rows = await fetch_all(sql, params, first=True)
    return rows[0] if rows else None


async def fetch_all(sql: str, params: list[Any], first: bool = False) -> list[tuple[Any, ...]]:
    """The rows of one read-only query (only the first with `first`): on the event loop when it can, else in
    a thread."""
    loop = asyncio.get_running_loop()
    pool = await _the_pool(loop)
    if pool is None:
        return await sync_to_async(_fetch_sync)(sql, params, first)
    for attempt in (1, 2):
        try:
            async with pool.connection() as connection:
                cursor = await connection.execute(sql, params, prepare=True)
                if first:
                    row = await cursor.fetchone()
                    return [row] if row is not None else []
                return await cursor.fetchall()
        except psycopg.InterfaceError as error:
            raise db.InterfaceError(str(error)) from error
        except psycopg.OperationalError as error:  # includes the pool's timeout
            if attempt == 1 and not isinstance(error, PoolTimeout):
                log.warning("database connection lost (%s); checking the pool and reading again", str(error).strip())
                await pool.check()  # drops every idle connection that is broken too
                continue
            raise db.OperationalError(str(error)) from error
    raise AssertionError("unreachable")


def _fetch_sync(sql: str, params: list[Any], first: bool) -> list[tuple[Any, ...]]:
    with db.connection.cursor() as cursor:
        cursor.execute(sql, params)
        if first:
            row: tuple[Any, ...] | None = cursor.fetchone()
            return [row] if row is not None else []
        rows: list[tuple[Any, ...]] = cursor.fetchall()
        return rows


async def close() -> None:
    """Close the pool (tests that ran the fast path on a loop of their own, before that loop ends)."""
    global _pool, _pool_loop
    pool, _pool, _pool_loop = _pool, None, None
    if pool is not None:
        await pool.close()
