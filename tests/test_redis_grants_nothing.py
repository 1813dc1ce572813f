"""Whoever can write to Redis gains nothing from it: no pickles read, no hashes kept, no sessions in key names."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from tests.helpers import PASSWORD, VAR, logged_in

pytestmark = pytest.mark.django_db(transaction=True)


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def cache_keys(client: redis.Redis) -> dict[str, bytes]:
    prefix = settings.CACHES["default"]["KEY_PREFIX"]
    return {k.decode(): client.get(k) or b"" for k in client.scan_iter(f"{prefix}:*")}


def user_cache_key(user: User) -> str:
    return f"{settings.CACHES['default']['KEY_PREFIX']}:1:auth-user:{user.pk}"


class Trap:
    """Unpickling this makes a file: proof that the web process ran what Redis held."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def test_it_keeps_no_password_hash_and_no_session_id_in_redis(users: dict[str, User]) -> None:
    client = logged_in(users["alice"])
    assert client.get("/").status_code == 200  # the session and the user are cached now
    session_id = client.cookies[settings.SESSION_COOKIE_NAME].value
    stored = cache_keys(redis_client())
    assert any("auth-user" in key for key in stored), stored.keys()
    assert not [k for k in stored if session_id in k], "a session id is readable in a key name"
    assert not [k for k, v in stored.items() if session_id.encode() in v]
    assert not [k for k, v in stored.items() if b"pbkdf2" in v or users["alice"].password.encode() in v]
    assert not [k for k, v in stored.items() if v.startswith(b"\x80")], "pickles in the cache"


def test_it_gains_nothing_from_a_forged_user_in_redis(users: dict[str, User]) -> None:
    alice = logged_in(users["alice"])
    assert alice.get("/admin/").status_code == 302  # a customer: sent to the admin's login
    r = redis_client()
    key = user_cache_key(users["alice"])

    # A pickled superuser copy of alice, with a payload that would run a command when unpickled.
    trap = VAR / "unpickled-from-redis"
    trap.unlink(missing_ok=True)
    forged = User.objects.get(pk=users["alice"].pk)
    forged.is_staff = forged.is_superuser = True
    r.set(key, pickle.dumps(forged))
    assert alice.get("/admin/").status_code == 302
    assert alice.get("/admin/auth/user/").status_code == 302
    r.set(key, pickle.dumps(Trap(trap)))
    alice.get("/")
    assert not trap.exists(), "the web process unpickled what Redis held"

    # The same as JSON, in the form the cache uses, and as a signed copy of carol (staff) under alice's key.
    r.set(key, orjson.dumps({"fields": {"id": str(users["alice"].pk), "is_superuser": "True", "is_staff": "True"}}))
    assert alice.get("/admin/").status_code == 302
    carol = logged_in(users["carol"])
    assert carol.get("/admin/").status_code == 200
    r.set(key, r.get(user_cache_key(users["carol"])) or b"")
    assert alice.get("/admin/").status_code == 302
    page = alice.get("/")
    assert page.status_code == 200 and page.wsgi_request.user.username == "alice"


def test_it_gains_nothing_from_a_session_copied_in_redis(users: dict[str, User]) -> None:
    """A staff session's cached value, copied under a key the attacker picks, logs nobody in."""
    carol = logged_in(users["carol"])
    assert carol.get("/admin/").status_code == 200
    r = redis_client()
    before = set(cache_keys(r))
    intruder = Client()
    intruder.get("/login/")  # an anonymous session of its own? none is saved: pick an id and make its key
    attacker_id = "a" * 32
    intruder.cookies[settings.SESSION_COOKIE_NAME] = attacker_id
    from web.sessions import PREFIX, SignedCache

    prefix = settings.CACHES["default"]["KEY_PREFIX"]
    session_keys = [k for k in before if PREFIX in k]
    assert session_keys
    target = f"{prefix}:1:{SignedCache._key(PREFIX + attacker_id)}"
    for key in session_keys:
        r.set(target, r.get(key) or b"")
        assert intruder.get("/admin/").status_code == 302
        assert intruder.get("/").status_code == 302  # not logged in at all
    # A session written in the clear (as Django's cached_db stores it) under the same key: nothing either.
    carols = Client()
    carols.login(username="carol", password=PASSWORD)
    plain = {"_auth_user_id": str(users["carol"].pk), "_auth_user_backend": settings.AUTHENTICATION_BACKENDS[0]}
    r.set(target, orjson.dumps(plain))
    assert intruder.get("/admin/").status_code == 302
