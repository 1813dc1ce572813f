"""Every place the bank copies or patches Django, Channels, asgiref or redis-py internals, and nowhere else.

Each override saves thread hops or per-message work that profiles of `bench.web` and `bench.fanout`
showed. server/fastpath/README.md has the table: what each overrides, the upstream file and version it
mirrors, the measured gain, and how to re-check it. `BANK_FASTPATH=false` leaves all of them out and
runs stock Django and Channels. `OVERRIDES` pins the upstream source each one mirrors
(tests/test_fastpath.py checks it).

This module imports nothing from Django: the settings read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Django's middleware → the same with the fast path (server/fastpath/middleware.py).
MIDDLEWARE = {
    "django.middleware.security.SecurityMiddleware": "server.fastpath.middleware.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware": "server.fastpath.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware": "server.fastpath.middleware.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware": "server.fastpath.middleware.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware": "server.fastpath.middleware.AuthenticationMiddleware",
    "web.middleware.DatabaseUnavailableMiddleware": "server.fastpath.middleware.DatabaseUnavailableMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware": "server.fastpath.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware": "server.fastpath.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware": "server.fastpath.middleware.XFrameOptionsMiddleware",
}
CACHE_BACKEND = "server.fastpath.cache.RedisCache"


def http_handler(enabled: bool) -> Any:
    """The HTTP handler class: Django's, or the fast path's."""
    if enabled:
        from server.fastpath.asgi_handler import ASGIHandler

        return ASGIHandler
    from django.core.handlers.asgi import ASGIHandler as DjangoASGIHandler

    return DjangoASGIHandler


def websocket_auth(enabled: bool) -> Any:
    """The websocket's cookie, session and user middleware stack: Channels', or the fast path's."""
    if enabled:
        from server.fastpath.middleware import WebsocketAuthMiddlewareStack

        return WebsocketAuthMiddlewareStack
    from channels.auth import AuthMiddlewareStack

    return AuthMiddlewareStack


def live_consumer(enabled: bool) -> Any:
    """The live page's consumer class: the plain one, or the fast path's subclass."""
    if enabled:
        from server.fastpath.websocket import LiveConsumer

        return LiveConsumer
    from live.websocket import LiveConsumer as PlainLiveConsumer

    return PlainLiveConsumer


@dataclass(frozen=True)
class Override:
    """One override and the upstream code it mirrors: dotted name → sha256 of `inspect.getsource` of it."""

    name: str  # here, in server/fastpath/
    upstream_file: str  # the file to re-diff when a hash no longer matches
    version: str  # the upstream version the hashes were taken from
    mirrors: dict[str, str]


OVERRIDES = [
    Override(
        "asgi_handler.ASGIHandler.handle",
        "django/core/handlers/asgi.py",
        "Django 5.2.19",
        {
            "django.core.handlers.asgi.ASGIHandler.handle": "98faeb5bef800331e6a8002fbc96b30e4122a23438ae45a047190a531ea11323"
        },
    ),
    Override(
        "asgi_handler.request_had_a_thread",
        "asgiref/sync.py",
        "asgiref 3.13.0",
        {"asgiref.sync.SyncToAsync.__call__": "6376e33c6d3d94c58df80c3f2386c38401d19a543d08626a34721abe309845f6"},
    ),
    Override(
        "middleware.InlineHooks",
        "django/utils/deprecation.py, django/core/handlers/base.py",
        "Django 5.2.19",
        {
            "django.utils.deprecation.MiddlewareMixin": "719062a110865f71699d2ba8aa41406051cd16e2c4b163bd0429d8a6015b6036",
            "django.core.handlers.base.BaseHandler.load_middleware": "a1fb7ee5f8586195da2174d1bbc2bbfc7ca19b9d26ea66412cb434f45bf6d467",
        },
    ),
    Override(
        "middleware.SessionMiddleware",
        "django/contrib/sessions/middleware.py",
        "Django 5.2.19",
        {
            "django.contrib.sessions.middleware.SessionMiddleware": "81dfc7bdab25942992c90fcc9bbf9fb4ba3fd83395255331d8f80f4bd00983b2"
        },
    ),
    Override(
        "middleware.AuthenticationMiddleware",
        "django/contrib/auth/middleware.py",
        "Django 5.2.19",
        {
            "django.contrib.auth.middleware.get_user": "f663ed77b28cc515d188367271e1b973b34577eacbd7b5f64b1d0b52083b2671",
            "django.contrib.auth.middleware.auser": "0c7597c36c9f1003822145d00688f891157e34fd0c6f5ac247e96466e52d26d6",
            "django.contrib.auth.middleware.AuthenticationMiddleware": "016788fb7214c6edd10b3022e2cda7c84b25fd5efe5141d87d5a79cb92e54d38",
        },
    ),
    Override(
        "middleware.DatabaseUnavailableMiddleware",
        "django/core/handlers/base.py",
        "Django 5.2.19",
        {
            "django.core.handlers.base.BaseHandler.adapt_method_mode": "1f6383b647ac29590cd04274e8e5e2b356397ee26f8ea81d9a83ac905277283f"
        },
    ),
    Override(
        "middleware.WebsocketAuthMiddleware",
        "channels/auth.py",
        "Channels 4.3.2",
        {
            "channels.auth.AuthMiddleware": "b35e490ace966159d58b7e8e31f8a2399c617f463df03e3b754f1ecdf9c187b6",
            "channels.auth.get_user": "3124b316d7d6472c9b991717bc2e3cccecf343162d0e3aeaac2015ff9f7beea2",
        },
    ),
    Override(
        "cache.RedisCache",
        "django/core/cache/backends/redis.py",
        "Django 5.2.19",
        {
            "django.core.cache.backends.redis.RedisCache.__init__": "40131bec6169f7fabfaebec788863364d123d7a6a13e9dc8de1a92bb00cd451f",
            "django.core.cache.backends.redis.RedisCache._cache": "9ff16af6c04a2401b81c722bb57c120805f496039011d3a8c76c8163df6b0970",
            "django.core.cache.backends.redis.RedisCacheClient": "5de49e5f7f9af97043f28bfd2746bc6effe7d03489d233210065ce1010dc2b5d",
        },
    ),
    Override(
        "websocket.LiveConsumer.dispatch",
        "channels/consumer.py",
        "Channels 4.3.2",
        {
            "channels.consumer.AsyncConsumer.dispatch": "39f34e7d4fb0f6552de4ade665b943fe78137379702af6b58c79a14c49a75520"
        },
    ),
    Override(
        "websocket.past_session_wrapper",
        "channels/sessions.py",
        "Channels 4.3.2",
        {
            "channels.sessions.InstanceSessionWrapper": "425465d6ccdaffcc832a7c5503662f85cb33b9917bc8e32be18d21f5e51cb967"
        },
    ),
]
