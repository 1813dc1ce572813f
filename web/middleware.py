"""Per-request middleware: the browser's time zone for the times on the pages."""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable, Mapping
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

ZONE_COOKIE = "tz"


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
