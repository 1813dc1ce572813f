"""Per-request middleware: the browser's time zone for the times on the pages."""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone


def zone_from_cookie(value: str | None) -> zoneinfo.ZoneInfo | None:
    if not value:
        return None
    try:
        return zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


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
        activate_zone(request)
        if iscoroutinefunction(self):
            return self._acall(request)
        return self.get_response(request)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        return await self.get_response(request)  # type: ignore[no-any-return]


def activate_zone(request: HttpRequest) -> None:
    zone = zone_from_cookie(request.COOKIES.get("tz"))
    if zone is not None:
        timezone.activate(zone)
    else:
        timezone.deactivate()
