"""A small counter per key in the shared cache (Redis): how often something happened in a window.

`hit` counts one more and says whether the count is still within `limit`; `exceeded` only looks.
Counts live in the cache of every web process, so the limit holds across processes; a Redis outage
counts nothing (the cache tolerates its errors) rather than locking everyone out.
"""

from __future__ import annotations

import hashlib

from django.core.cache import cache


def _key(key: str) -> str:
    return "ratelimit:" + hashlib.sha256(key.encode()).hexdigest()  # client text never in a key name


def hit(key: str, limit: int, window: int) -> bool:
    """One more for `key` in a window of `window` seconds (from its first hit); True while within `limit`."""
    name = _key(key)
    cache.add(name, 0, window)
    try:
        count = cache.incr(name)
    except ValueError:  # expired between the two calls
        cache.add(name, 1, window)
        count = 1
    return bool(count <= limit)


def exceeded(key: str, limit: int) -> bool:
    """Whether `key` has been hit `limit` times or more in its current window."""
    count = cache.get(_key(key))
    return isinstance(count, int) and count >= limit
