"""Per-request middleware: the browser's time zone for the times on the pages; a 503 while the database is down."""

from __future__ import annotations

import logging
import zoneinfo
from collections.abc import Callable, Mapping
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.utils import timezone

ZONE_COOKIE = "tz"
log = logging.getLogger(__name__)


def zone_from_cookie(value: str | None) -> zoneinfo.ZoneInfo | None:
    if not value:
        return None
    try:
        return zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


def browser_zone(cookies: Mapping[str, str]) -> timezone.override:
    """The one place that picks the zone times are shown in: the browser's, from its cookie, else UTC.

    A context manager (`with browser_zone(request.COOKIES):`), for the middleware and the websocket consumer.
    """
    return timezone.override(zone_from_cookie(cookies.get(ZONE_COOKIE)))


class TimezoneMiddleware:
    """Show times in the browser's time zone, which a tiny script puts in the `tz` cookie.

    Sync and async capable: a sync-only middleware makes every async view hop threads twice.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self._acall(request)
        with browser_zone(request.COOKIES):
            return self.get_response(request)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        with browser_zone(request.COOKIES):
            return await self.get_response(request)  # type: ignore[no-any-return]


class DatabaseUnavailableMiddleware:
    """While PostgreSQL is down or restarting, answer a clear 503 (a fragment for htmx) instead of a 500.

    Exceptions from inner middleware never reach an outer one's __call__ (Django turns them into
    responses at each layer), so this catches them where they happen: loading the session and
    user (process_view, placed before LoginRequiredMiddleware, which would load them) and in the
    view (process_exception). The pool checks connections, so the first request after a restart
    gets a fresh one.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self._acall(request)
        return self.get_response(request)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        return await self.get_response(request)  # type: ignore[no-any-return]

    def process_view(self, request: HttpRequest, view: Any, args: Any, kwargs: Any) -> HttpResponse | None:
        try:
            request.user.is_authenticated  # noqa: B018 - loads the session and the user now, where this can catch it
        except DATABASE_DOWN as error:
            return database_unavailable(request, error)
        return None

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, DATABASE_DOWN):
            return database_unavailable(request, exception)
        return None


DATABASE_DOWN = (OperationalError, InterfaceError)


def database_unavailable(request: HttpRequest, error: Exception) -> HttpResponse:
    log.warning("database unavailable for %s %s: %s", request.method, request.path, str(error).strip())
    # No request context: the context processors would ask the database for the user again.
    partial = "#fragment" if request.headers.get("HX-Request") else ""
    response = HttpResponse(render_to_string(f"bank/unavailable.html{partial}"), status=503)
    response["Retry-After"] = "5"
    return response
