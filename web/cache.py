"""Django's Redis cache, whose async methods await redis.asyncio instead of hopping to a thread.

Django 5.2's RedisCache runs `aget`, `aset`, … through `sync_to_async`: every session and user
lookup of an async view or middleware went to a worker thread and back. The methods the
session store and the cached user call are native here (one client per event loop, as
channels-redis does); everything else, and every sync call (the admin, the websocket's
session middleware), is Django's own. Keys and timeouts are Django's: both sides read what
the other wrote.

Values are JSON, never pickle: whoever can write to Redis could otherwise run code in the web
process, or hand it any object (a pickled superuser). What the cache holds grants nothing by
itself either: sessions and users are signed with the secret key (web.sessions, web.auth).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
import redis
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient
from django.utils.functional import cached_property
from redis import asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("bank.cache")
F = TypeVar("F", bound=Callable[..., Any])

# A bounded pool that waits for a free connection (up to OPTIONS["timeout"] seconds)
# instead of failing: a storm of page opens would otherwise fail once all connections are busy.
# Shared by every instance: Django makes a cache object per request context under ASGI
# (asgiref Local), and the stock backend a connection pool per object (Django ticket #35651),
# so each request opened a Redis connection of its own.
_clients: dict[tuple[str, str], RedisCacheClient] = {}
_aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], aioredis.Redis]] = (
    weakref.WeakKeyDictionary()
)


def _tolerant(default: Any) -> Callable[[F], F]:
    """A Redis error is a miss (reads) or a no-op (writes), logged: sessions are then read from
    PostgreSQL (`cached_db`) and users from the database, and the site stays up without Redis."""

    def decorate(method: F) -> F:
        if asyncio.iscoroutinefunction(method):

            @functools.wraps(method)
            async def amethod(self: Any, key: str, *args: Any, **kwargs: Any) -> Any:
                try:
                    return await method(self, key, *args, **kwargs)
                except RedisError as error:
                    log.warning("cache %s %s: %r", method.__name__, key, error)
                    return args[0] if method.__name__ == "aget" and args else kwargs.get("default", default)

            return amethod  # type: ignore[return-value]

        @functools.wraps(method)
        def smethod(self: Any, key: str, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, key, *args, **kwargs)
            except RedisError as error:
                log.warning("cache %s %s: %r", method.__name__, key, error)
                return args[0] if method.__name__ == "get" and args else kwargs.get("default", default)

        return smethod  # type: ignore[return-value]

    return decorate


class JsonSerializer:
    """Django's RedisSerializer with JSON for pickle: integers stay plain (for incr), the rest is orjson."""

    def dumps(self, obj: Any) -> Any:
        if type(obj) is int:
            return obj
        return orjson.dumps(obj)

    def loads(self, data: Any) -> Any:
        try:
            return int(data)
        except ValueError:
            pass
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:  # not ours (a pickle from before, a stranger's write): a miss
            log.warning("cache: a value that is not JSON was ignored")
            return None


class RedisCache(DjangoRedisCache):
    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        options = dict(params.get("OPTIONS", {}))
        if {"serializer", "pool_class", "parser_class"} & set(options):
            raise ValueError("web.cache.RedisCache takes redis-py connection options only")
        self._url, self._pool_options = server.split(",")[0], options
        self._key = (server, repr(sorted(options.items())))
        self._serializer = JsonSerializer()  # the sync side's too (below)

    @cached_property
    def _cache(self) -> RedisCacheClient:
        if (client := _clients.get(self._key)) is None:
            client = _clients.setdefault(
                self._key,
                RedisCacheClient(
                    [self._url],
                    serializer=JsonSerializer,
                    pool_class=redis.BlockingConnectionPool,
                    **self._pool_options,
                ),
            )
        return client

    def _aclient(self) -> aioredis.Redis:
        clients = _aclients.setdefault(asyncio.get_running_loop(), {})
        if (client := clients.get(self._key)) is None:
            pool = aioredis.BlockingConnectionPool.from_url(self._url, **self._pool_options)
            client = clients[self._key] = aioredis.Redis(connection_pool=pool)
        return client

    # The sync side (the admin's and the login's session writes) tolerates Redis errors too.
    get = _tolerant(None)(DjangoRedisCache.get)
    set = _tolerant(None)(DjangoRedisCache.set)
    add = _tolerant(False)(DjangoRedisCache.add)
    touch = _tolerant(False)(DjangoRedisCache.touch)
    delete = _tolerant(False)(DjangoRedisCache.delete)
    has_key = _tolerant(False)(DjangoRedisCache.has_key)

    def _dumps(self, value: Any) -> Any:
        return self._serializer.dumps(value)

    def _seconds(self, timeout: Any) -> int | None:
        seconds = self.get_backend_timeout(timeout)
        return None if seconds is None else int(seconds)

    @_tolerant(None)
    async def aget(self, key: str, default: Any = None, version: int | None = None) -> Any:
        value = await self._aclient().get(self.make_and_validate_key(key, version=version))
        return default if value is None else self._serializer.loads(value)

    @_tolerant(None)
    async def aset(self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> None:
        key, seconds = self.make_and_validate_key(key, version=version), self._seconds(timeout)
        if seconds == 0:
            await self._aclient().delete(key)
        else:
            await self._aclient().set(key, self._dumps(value), ex=seconds)

    @_tolerant(False)
    async def aadd(self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        key, seconds = self.make_and_validate_key(key, version=version), self._seconds(timeout)
        client = self._aclient()
        added = bool(await client.set(key, self._dumps(value), ex=seconds or None, nx=True))
        if added and seconds == 0:
            await client.delete(key)
        return added

    @_tolerant(False)
    async def atouch(self, key: str, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        key, seconds = self.make_and_validate_key(key, version=version), self._seconds(timeout)
        if seconds is None:
            return bool(await self._aclient().persist(key))
        return bool(await self._aclient().expire(key, seconds))

    @_tolerant(False)
    async def adelete(self, key: str, version: int | None = None) -> bool:
        return bool(await self._aclient().delete(self.make_and_validate_key(key, version=version)))

    @_tolerant(False)
    async def ahas_key(self, key: str, version: int | None = None) -> bool:
        return bool(await self._aclient().exists(self.make_and_validate_key(key, version=version)))
