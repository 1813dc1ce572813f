"""Django's middleware without a thread hop per hook: the chain of the async views.

Under ASGI, Django runs every `process_request`/`process_view`/`process_response` of a
`MiddlewareMixin` middleware through `sync_to_async`: some fifteen hops to a worker thread and
back per request, more CPU than the command view's own work. The hooks of the middleware below
do no I/O (headers, cookies, the CSRF check, a redirect to the login page), so they run inline
in the event loop. The two that do I/O get an async path of their own: the session is saved
in a thread only when it changed (log in, log out), and the user is loaded once, natively async
(`request.auser()`, from the cache: `web.auth`), for both `request.user` and `request.auser()`.
In sync mode (WSGI, Django's test client) all of them are Django's own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any, cast

from asgiref.sync import iscoroutinefunction, sync_to_async
from channels import auth as channels_auth
from channels.sessions import CookieMiddleware
from channels.sessions import SessionMiddleware as ChannelsSessionMiddleware
from django.conf import settings
from django.contrib import auth as django_auth
from django.contrib.auth import middleware as auth
from django.contrib.auth.models import AnonymousUser
from django.contrib.messages.middleware import MessageMiddleware as DjangoMessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.middleware.clickjacking import XFrameOptionsMiddleware as DjangoXFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware as DjangoCommonMiddleware
from django.middleware.csrf import CsrfViewMiddleware as DjangoCsrfViewMiddleware
from django.middleware.security import SecurityMiddleware as DjangoSecurityMiddleware
from redis.exceptions import RedisError

from web import middleware
from web.middleware import DATABASE_DOWN, database_unavailable


class InlineHooks:
    """Mixin for a `MiddlewareMixin` middleware whose hooks do no I/O: in async mode, call them inline."""

    async_mode: bool
    get_response: Callable[[HttpRequest], Any]

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        super().__init__(get_response)  # type: ignore[call-arg]
        view_hook = getattr(self, "process_view", None)
        if self.async_mode and view_hook is not None:
            # Django adapts a sync process_view with sync_to_async; a coroutine function it calls as is.
            async def process_view(*args: Any) -> Any:
                return view_hook(*args)

            setattr(self, "process_view", process_view)  # noqa: B010 - an instance attribute on purpose

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.process_request(request) if hasattr(self, "process_request") else None
        response = response or await self.get_response(request)
        if hasattr(self, "process_response"):
            response = self.process_response(request, response)
        return response  # type: ignore[no-any-return]


class SecurityMiddleware(InlineHooks, DjangoSecurityMiddleware):
    pass


class CommonMiddleware(InlineHooks, DjangoCommonMiddleware):
    pass


class CsrfViewMiddleware(InlineHooks, DjangoCsrfViewMiddleware):
    pass


class LoginRequiredMiddleware(InlineHooks, auth.LoginRequiredMiddleware):
    """Reads `request.user`, which AuthenticationMiddleware below has already loaded."""


class MessageMiddleware(InlineHooks, DjangoMessageMiddleware):
    """Cookie storage first; the session fallback reads a session the user lookup already loaded."""


class XFrameOptionsMiddleware(InlineHooks, DjangoXFrameOptionsMiddleware):
    pass


class DatabaseUnavailableMiddleware(middleware.DatabaseUnavailableMiddleware):
    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        super().__init__(get_response)
        if iscoroutinefunction(self):
            # Async mode: the user is loaded already (AuthenticationMiddleware below, which answers
            # this 503 itself), so the check does no I/O: no thread hop for it.
            check = self.process_view

            async def process_view(*args: Any) -> HttpResponse | None:
                return check(*args)

            setattr(self, "process_view", process_view)  # noqa: B010 - an instance attribute on purpose


class SessionMiddleware(DjangoSessionMiddleware):
    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        self.process_request(request)  # a lazy store: nothing is read yet
        response = await cast(Awaitable[HttpResponse], self.get_response(request))
        if request.session.modified or settings.SESSION_SAVE_EVERY_REQUEST:
            # A write (log in, log out): the store's save is sync, and rare.
            return await sync_to_async(self.process_response, thread_sensitive=True)(request, response)
        return self.process_response(request, response)


class AuthenticationMiddleware(auth.AuthenticationMiddleware):
    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        self.process_request(request)
        # One native async lookup (session and user from the cache) serves request.user too,
        # which the templates, LoginRequiredMiddleware and sync views read.
        try:
            request._cached_user = await request.auser()  # type: ignore[attr-defined]
        except DATABASE_DOWN as error:  # a cache miss while PostgreSQL is down or restarting
            return database_unavailable(request, error)
        return await cast(Awaitable[HttpResponseBase], self.get_response(request))


class WebsocketAuthMiddleware(channels_auth.AuthMiddleware):
    """Channels' AuthMiddleware, with the session and user read natively async (from the cache).

    Channels' own reads both in `database_sync_to_async`, i.e. in the one thread that every
    websocket's sync work shares: a storm of page opens queued there past daphne's handshake timeout.
    """

    async def resolve_scope(self, scope: dict[str, Any]) -> None:
        try:
            user = await django_auth.aget_user(SimpleNamespace(session=scope["session"]))  # type: ignore[arg-type]
        except (RedisError, OSError) as error:
            # Busy or unreachable for a moment: the consumer tells the page to try again later,
            # rather than failing the handshake (a 500, and a page that looks logged out).
            scope["live_unavailable"] = repr(error)
            user = AnonymousUser()
        scope["user"]._wrapped = user


def WebsocketAuthMiddlewareStack(inner: Any) -> Any:
    return CookieMiddleware(ChannelsSessionMiddleware(WebsocketAuthMiddleware(inner)))
