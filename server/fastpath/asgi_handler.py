"""Django's ASGI handler, without a worker thread for a request that runs no sync code (the command views).

Django 5.2 sends `request_started` through `Signal.asend`, which runs the sync receivers in a thread,
and closes every response with `sync_to_async(response.close)`, which sends `request_finished` in a
thread: two hops per request, and under ASGI the first hop of a request starts a thread of its own
(asgiref's ThreadSensitiveContext). The receivers are Django's `reset_queries`,
`close_old_connections`, `close_caches` and `reset_urlconf`; the database ones act on the
connections of the thread they run in. A request that never left the event loop has no such
thread, hence nothing for them to do there, so here:

- `request_started` is sent inline on the event loop, where (as in the request's fresh thread)
  no connection is open: the same no-ops, without a hop;
- the response is closed in the request's thread when the request had one (a sync view, the sync
  ORM, a session write: its connection goes back to the pool there, as in Django), else inline.

Everything else is Django's `ASGIHandler.handle` as of 5.2 (kept in step with it).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from asgiref.sync import SyncToAsync, sync_to_async
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler as DjangoASGIHandler
from django.core.handlers.asgi import get_script_prefix
from django.db import connections
from django.http import HttpResponseBase
from django.urls import set_script_prefix


def request_had_a_thread() -> bool:
    """Whether sync code of this request ran in a thread of its own (its ThreadSensitiveContext's executor)."""
    context = SyncToAsync.thread_sensitive_context.get(None)
    return context is not None and context in SyncToAsync.context_to_thread_executor


def loop_thread_is_clean() -> bool:
    """No database connection open in this (the event loop's) thread: the receivers have nothing to do here.
    Were one open (code that ran before the loop), Django's way is kept: closing it here would be refused."""
    return not connections.all(initialized_only=True)


async def send_request_started(sender: type, scope: dict[str, Any]) -> None:
    if loop_thread_is_clean():
        signals.request_started.send(sender=sender, scope=scope)
    else:
        await signals.request_started.asend(sender=sender, scope=scope)


async def close_response(response: HttpResponseBase) -> None:
    if request_had_a_thread() or not loop_thread_is_clean():
        await sync_to_async(response.close)()
    else:
        response.close()


class ASGIHandler(DjangoASGIHandler):
    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        await send_request_started(self.__class__, scope)  # inline: see the module's docstring
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            assert error_response is not None
            body_file.close()
            await self.send_response(error_response, send)
            await close_response(error_response)
            return

        async def process_request(request: Any, send: Any) -> HttpResponseBase:
            response = await self.run_get_response(request)
            with contextlib.suppress(asyncio.CancelledError):  # the client disconnected during send_response
                await self.send_response(response, send)
            return response

        tasks: list[asyncio.Task[Any]] = [
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(process_request(request, send)),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass
                except AssertionError:
                    body_file.close()
                    raise
            else:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:
            response: HttpResponseBase = tasks[1].result()
        except asyncio.CancelledError:
            await signals.request_finished.asend(sender=self.__class__)
        else:
            await close_response(response)
        body_file.close()
