"""Django's Redis cache, whose async methods await redis.asyncio instead of hopping to a thread.

Django 5.2's RedisCache runs `aget`, `aset`, … through `sync_to_async`: every session and user
lookup of an async view or middleware went to a worker thread and back. The methods the
session store and the cached user call are native here (one client per event loop, as
channels-redis does); everything else, and every sync call (the admin, the websocket's
session middleware), is Django's own (`web.cache.RedisCache`: Redis errors as misses). Keys, values,
timeouts and the serializer are Django's client's: both sides read what the other wrote.

Overrides Django's private `RedisCache._cache`, to share one client (and its pool) per process:
Django makes a cache object per request context under ASGI (asgiref Local), and the stock backend
a connection pool per object (Django ticket #35651), so each request opened a Redis connection of
its own. The async side reads the client's serializer (`RedisCacheClient._serializer`).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient
from django.utils.functional import cached_property
from redis import asyncio as aioredis

from web.cache import RedisCache as TolerantRedisCache
from web.cache import tolerant

# Shared by every instance (see the module's docstring), by location and options.
_clients: dict[tuple[str, str], RedisCacheClient] = {}
_aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], aioredis.Redis]] = (
    weakref.WeakKeyDictionary()
)
DJANGO_OPTIONS = {"serializer", "pool_class", "parser_class"}  # RedisCacheClient's own; the rest go to redis-py


class RedisCache(TolerantRedisCache):
    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        options: dict[str, Any] = dict(self._options)  # type: ignore[attr-defined]  # Django's, with web.cache's pool_class
        self._url = server.split(",")[0]
        # The async pool takes redis-py's options; it blocks for a free connection (up to OPTIONS["timeout"] s).
        self._pool_options = {k: v for k, v in options.items() if k not in DJANGO_OPTIONS}
        self._key = (server, repr(sorted(options.items())))

    @cached_property
    def _cache(self) -> RedisCacheClient:
        if (client := _clients.get(self._key)) is None:
            client = _clients.setdefault(self._key, DjangoRedisCache._cache.func(self))  # type: ignore[attr-defined]
        return client

    def _aclient(self) -> aioredis.Redis:
        clients = _aclients.setdefault(asyncio.get_running_loop(), {})
        if (client := clients.get(self._key)) is None:
            pool = aioredis.BlockingConnectionPool.from_url(self._url, **self._pool_options)
            client = clients[self._key] = aioredis.Redis(connection_pool=pool)
        return client

    @cached_property
    def _serializer(self) -> Any:
        """The sync client's serializer (as OPTIONS["serializer"] made it): both sides read what the other wrote."""
        return self._cache._serializer  # type: ignore[attr-defined]

    def _dumps(self, value: Any) -> Any:
        return self._serializer.dumps(value)

    def _loads(self, value: Any) -> Any:
        return self._serializer.loads(value)

    def _seconds(self, timeout: Any) -> int | None:
        seconds = self.get_backend_timeout(timeout)
        return None if seconds is None else int(seconds)

    @tolerant(None)
    async def aget(self, key: str, default: Any = None, version: int | None = None) -> Any:
        value = await self._aclient().get(self.make_and_validate_key(key, version=version))
        return default if value is None else self._loads(value)

    @tolerant(None)
    async def aset(self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> None:
        key, seconds = self.make_and_validate_key(key, version=version), self._seconds(timeout)
        if seconds == 0:
            await self._aclient().delete(key)
        else:
            await self._aclient().set(key, self._dumps(value), ex=seconds)

    @tolerant(False)
    async def aadd(self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        key, seconds = self.make_and_validate_key(key, version=version), self._seconds(timeout)
        client = self._aclient()
        added = bool(await client.set(key, self._dumps(value), ex=seconds or None, nx=True))
        if added and seconds == 0:
            await client.delete(key)
        return added

    @tolerant(False)
    async def atouch(self, key: str, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        key, seconds = self.make_and_validate_key(key, version=version), self._seconds(timeout)
        if seconds is None:
            return bool(await self._aclient().persist(key))
        return bool(await self._aclient().expire(key, seconds))

    @tolerant(False)
    async def adelete(self, key: str, version: int | None = None) -> bool:
        return bool(await self._aclient().delete(self.make_and_validate_key(key, version=version)))

    @tolerant(False)
    async def ahas_key(self, key: str, version: int | None = None) -> bool:
        return bool(await self._aclient().exists(self.make_and_validate_key(key, version=version)))
