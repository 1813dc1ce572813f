"""Per-request middleware: the browser's time zone for the times on the pages; a 503 while the database is down."""

from __future__ import annotations

import functools
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


# The longest IANA zone name is 32 characters ("America/Argentina/ComodRivadavia").
MAX_ZONE_NAME = 64


@functools.cache
def known_zones() -> frozenset[str]:
    """The zone names of the system's tz database, read once: a cookie must name one of them exactly."""
    return frozenset(zoneinfo.available_timezones())


def zone_from_cookie(value: str | None) -> zoneinfo.ZoneInfo | None:
    """The zone a browser's cookie names, or None (UTC) for anything else.

    The cookie is the client's text: only a name in the tz database's own list is handed to zoneinfo
    (a long "a/a/a/..." made zoneinfo recurse until RecursionError, a 500 on every page).
    """
    if not value or len(value) > MAX_ZONE_NAME or value not in known_zones():
        return None
    try:
        return zoneinfo.ZoneInfo(value)
    except Exception:  # a tz file that cannot be read is UTC, never an error page
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


TECHNICAL_PAGE = b'<meta name="robots" content="NONE,NOARCHIVE">'  # in Django's debug 404 and 500 pages only


class DebugPagesForLoopbackOnly:
    """With DEBUG on, Django's debug pages (the URL patterns on a 404; settings and variables on a 500) go only
    to clients in INTERNAL_IPS (this machine); anyone else gets the plain page. Not in the chain with DEBUG off."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        from django.conf import settings
        from django.core.exceptions import MiddlewareNotUsed

        if not settings.DEBUG:
            raise MiddlewareNotUsed
        self.get_response = get_response
        self.internal = set(settings.INTERNAL_IPS)
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self._acall(request)
        return self._plain(request, self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        return self._plain(request, await self.get_response(request))  # type: ignore[no-any-return]

    def _plain(self, request: HttpRequest, response: Any) -> Any:
        if (
            response.status_code in (404, 500)
            and not getattr(response, "streaming", False)
            and request.META.get("REMOTE_ADDR") not in self.internal
            and TECHNICAL_PAGE in response.content
        ):
            title = "Not Found" if response.status_code == 404 else "Server Error"
            return HttpResponse(f"<h1>{title}</h1>", status=response.status_code)
        return response
