"""The logged-in user from the cache: no database round trip per request.

`CachedModelBackend.get_user`/`aget_user` (what Django calls to turn a session into a user)
read the user from the cache and fall back to the database. Any save or delete of a user
(a password change, deactivation, the login's `last_login`) drops the cached copy at once,
so the session hash check after a password change and `is_active` see the database's values;
updates that bypass the model (`QuerySet.update`) are seen after USER_CACHE_SECONDS at most.

What is cached grants nothing by itself: the user's fields as JSON, signed with the secret key and
bound to the user's id (a value written into Redis by anyone else, or copied from another user's
key, is ignored), without the password hash. The password is a deferred field of the user built
from the cache (read from the database if something asks for it, as the password change does);
the session check uses the session hash computed when the copy was made.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core import signing
from django.core.cache import cache
from django.db.models.signals import post_delete, post_save

USER_CACHE_SECONDS = 300
log = logging.getLogger(__name__)


def user_key(user_id: Any) -> str:
    return f"auth-user:{user_id}"


def _salt(user_id: Any) -> str:
    return f"web.auth.user:{user_id}"


def _fields() -> list[Any]:
    return [f for f in get_user_model()._meta.concrete_fields if f.attname != "password"]


def dump_user(user: Any) -> str:
    """The cached copy: fields as text (no password), the session hash, signed for this user's id."""
    values = {f.attname: (None if f.value_from_object(user) is None else f.value_to_string(user)) for f in _fields()}
    return signing.dumps({"fields": values, "session_hash": user.get_session_auth_hash()}, salt=_salt(user.pk))


def load_user(user_id: Any, raw: Any) -> Any:
    """The user from a cached copy this server signed for `user_id` lately; None for anything else."""
    if not isinstance(raw, str):
        return None
    try:
        data = signing.loads(raw, salt=_salt(user_id), max_age=USER_CACHE_SECONDS)
        fields = _fields()
        values = [None if (v := data["fields"][f.attname]) is None else f.to_python(v) for f in fields]
        user = get_user_model().from_db("default", [f.attname for f in fields], values)  # password: deferred
        session_hash = str(data["session_hash"])
    except (signing.BadSignature, KeyError, TypeError, ValueError) as error:
        log.warning("cached user %s ignored: %s", user_id, type(error).__name__)
        return None
    if str(user.pk) != str(user_id):
        return None
    model_hash = user.get_session_auth_hash

    def get_session_auth_hash() -> str:
        # The cached hash while the password is deferred (not here to compute it from); once something
        # has read the password (a password change sets a new one), the hash of the password it holds.
        return model_hash() if "password" in user.__dict__ else session_hash

    user.get_session_auth_hash = get_session_auth_hash  # type: ignore[method-assign]
    return user


class CachedModelBackend(ModelBackend):
    def get_user(self, user_id: Any) -> Any:
        user = load_user(user_id, cache.get(user_key(user_id)))
        if user is None:
            user = super().get_user(user_id)
            if user is not None:
                cache.set(user_key(user_id), dump_user(user), USER_CACHE_SECONDS)
        return user

    async def aget_user(self, user_id: Any) -> Any:
        user = load_user(user_id, await cache.aget(user_key(user_id)))
        if user is None:
            user = await super().aget_user(user_id)
            if user is not None:
                await cache.aset(user_key(user_id), dump_user(user), USER_CACHE_SECONDS)
        return user


def forget_user(sender: Any, instance: Any, **kwargs: Any) -> None:
    cache.delete(user_key(instance.pk))


def connect_signals() -> None:
    """Called from WebConfig.ready(): a changed or deleted user is read from the database next time."""
    user_model = get_user_model()
    post_save.connect(forget_user, sender=user_model, dispatch_uid="web.auth.forget_user.save")
    post_delete.connect(forget_user, sender=user_model, dispatch_uid="web.auth.forget_user.delete")
