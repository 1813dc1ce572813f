"""How many sign-ups one client address may attempt per window: a counter in the shared cache.

Counted per attempt (a post of the form), not per account made, so a script cannot try names and
passwords endlessly from one address. A cache outage lets sign-ups through (logged): the page stays
usable without Redis, as logging in does.
"""

from __future__ import annotations

import logging

from django.core.cache import cache
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


def hit(key: str, limit: int, window: int) -> bool:
    """Count one attempt under `key`; False once more than `limit` were made within `window` seconds."""
    name = f"signup-limit:{key}"
    try:
        cache.add(name, 0, window)  # starts the window; does nothing while it runs
        count = cache.incr(name)
    except ValueError:  # the window ended between add and incr: start a new one
        cache.set(name, 1, window)
        count = 1
    except RedisError as error:
        log.warning("sign-up limit not checked (cache unavailable): %r", error)
        return True
    return count <= limit
