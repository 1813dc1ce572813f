"""The logged-in user from the cache: no database round trip per request.

`CachedModelBackend.get_user`/`aget_user` (what Django calls to turn a session into a user)
read the user from the cache and fall back to the database. Any save or delete of a user
(a password change, deactivation, the login's `last_login`) drops the cached copy at once,
so the session hash check after a password change and `is_active` see the database's values;
updates that bypass the model (`QuerySet.update`) are seen after USER_CACHE_SECONDS at most.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.cache import cache
from django.db.models.signals import post_delete, post_save

USER_CACHE_SECONDS = 300


def user_key(user_id: Any) -> str:
    return f"auth-user:{user_id}"


class CachedModelBackend(ModelBackend):
    def get_user(self, user_id: Any) -> Any:
        user = cache.get(user_key(user_id))
        if user is None:
            user = super().get_user(user_id)
            if user is not None:
                cache.set(user_key(user_id), user, USER_CACHE_SECONDS)
        return user

    async def aget_user(self, user_id: Any) -> Any:
        user = await cache.aget(user_key(user_id))
        if user is None:
            user = await super().aget_user(user_id)
            if user is not None:
                await cache.aset(user_key(user_id), user, USER_CACHE_SECONDS)
        return user


def forget_user(sender: Any, instance: Any, **kwargs: Any) -> None:
    cache.delete(user_key(instance.pk))


def connect_signals() -> None:
    """Called from WebConfig.ready(): a changed or deleted user is read from the database next time."""
    user_model = get_user_model()
    post_save.connect(forget_user, sender=user_model, dispatch_uid="web.auth.forget_user.save")
    post_delete.connect(forget_user, sender=user_model, dispatch_uid="web.auth.forget_user.delete")
