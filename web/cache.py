"""Django's Redis cache, with Redis errors read as misses: the site stays up without Redis.

`server.fastpath.cache.RedisCache` adds native async methods and one shared client per process.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


def tolerant(default: Any) -> Callable[[F], F]:
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
    """Django's RedisCache (public API only), with Redis errors as misses or no-ops (`tolerant`).

    Its pool is bounded and waits for a free connection (up to OPTIONS["timeout"] seconds) instead of
    failing: a storm of page opens would otherwise fail once all connections are busy.
    """

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        # JSON, never pickle: whoever can write to Redis could otherwise run code here or hand us any object.
        options = {
            "pool_class": "redis.BlockingConnectionPool",
            **params.get("OPTIONS", {}),
            "serializer": JsonSerializer,
        }
        super().__init__(server, {**params, "OPTIONS": options})

    # The sync side (the admin's and the login's session writes, and Django's async methods, which
    # run these in a thread) tolerates Redis errors.
    get = tolerant(None)(DjangoRedisCache.get)
    set = tolerant(None)(DjangoRedisCache.set)
    add = tolerant(False)(DjangoRedisCache.add)
    touch = tolerant(False)(DjangoRedisCache.touch)
    delete = tolerant(False)(DjangoRedisCache.delete)
    has_key = tolerant(False)(DjangoRedisCache.has_key)
