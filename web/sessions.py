"""Sessions in PostgreSQL behind the Redis cache (Django's `cached_db`), with a cache that grants nothing.

Anyone who can read or write Redis (a shared instance, a leaked password) must not get a session from it:
- the key of a session's cached copy is a hash of its id, so the key names in Redis are no cookies;
- the value is signed with the secret key and the session's own id: a value written by someone else, or
  copied from another session (a staff user's, say), fails the check and is read from PostgreSQL instead.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends.cached_db import SessionStore as CachedDbStore
from django.core import signing
from django.core.cache import caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache

log = logging.getLogger(__name__)


def hashed(session_key: str) -> str:
    return hashlib.sha256(session_key.encode()).hexdigest()


class SignedCache:
    """The cache as Django's `cached_db` store uses it, keyed by "<prefix><session id>": stored under the
    hash of the id, the value signed with the id (get, set, delete, `in`, and the async forms)."""

    def __init__(self, cache: BaseCache) -> None:
        self.cache = cache

    @staticmethod
    def _key(key: str) -> str:
        return PREFIX + hashed(key.removeprefix(PREFIX))

    @staticmethod
    def _salt(key: str) -> str:
        return f"web.sessions:{key}"

    def _check(self, key: str, raw: Any) -> Any:
        if raw is None:
            return None
        try:
            return signing.loads(raw, salt=self._salt(key)) if isinstance(raw, str) else None
        except signing.BadSignature:
            log.warning("a cached session with a bad signature was ignored (written by someone else?)")
            return None

    def get(self, key: str, default: Any = None) -> Any:
        value = self._check(key, self.cache.get(self._key(key)))
        return default if value is None else value

    async def aget(self, key: str, default: Any = None) -> Any:
        value = self._check(key, await self.cache.aget(self._key(key)))
        return default if value is None else value

    def set(self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT) -> None:
        self.cache.set(self._key(key), signing.dumps(value, salt=self._salt(key)), timeout)

    async def aset(self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT) -> None:
        await self.cache.aset(self._key(key), signing.dumps(value, salt=self._salt(key)), timeout)

    def delete(self, key: str) -> bool:
        return bool(self.cache.delete(self._key(key)))

    async def adelete(self, key: str) -> bool:
        return bool(await self.cache.adelete(self._key(key)))

    def __contains__(self, key: str) -> bool:
        return bool(self.cache.has_key(self._key(key)))


PREFIX = "bank.session."


class SessionStore(CachedDbStore):
    cache_key_prefix = PREFIX

    def __init__(self, session_key: str | None = None) -> None:
        super().__init__(session_key)
        self._cache: Any = SignedCache(caches[settings.SESSION_CACHE_ALIAS])
