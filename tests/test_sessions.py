"""Sessions and the logged-in user come from the cache (Redis), and logging out or a new password still ends them."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.db.backends.signals import connection_created
from django.test import AsyncClient, Client
from django.test.utils import CaptureQueriesContext, override_settings

from bank.config import KafkaSettings
from devservices.process import free_port
from tests.helpers import account_of, logged_in
from tests.test_views import commands_sent

pytestmark = pytest.mark.django_db(transaction=True)

AUTH_TABLES = ("django_session", "auth_user")


def auth_queries(sqls: list[str]) -> list[str]:
    return [sql for sql in sqls if any(table in sql for table in AUTH_TABLES)]


@pytest.fixture
def queries_anywhere() -> Iterator[list[str]]:
    """SQL run on this thread's connection and on any opened from now on (sync views and ORM calls may run elsewhere)."""
    seen: list[str] = []
    lock = threading.Lock()

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        with lock:
            seen.append(sql)
        return execute(sql, params, many, context)

    def watch(sender: Any, connection: Any, **kwargs: Any) -> None:
        connection.execute_wrappers.append(record)

    connection_created.connect(watch)
    with connection.execute_wrapper(record):
        yield seen
    connection_created.disconnect(watch)


def test_it_loads_a_logged_in_page_without_session_or_user_queries(users: dict[str, User]) -> None:
    account_of(users["alice"], "Current")
    client = logged_in(users["alice"])
    assert client.get("/").status_code == 200  # the first page after logging in may read the user once
    with CaptureQueriesContext(connection) as captured:
        response = client.get("/")
    assert response.status_code == 200
    assert b"Current" in response.content
    assert auth_queries([q["sql"] for q in captured.captured_queries]) == []
    assert captured.captured_queries, "the page still reads its accounts"


def test_it_sends_a_command_without_session_or_user_queries(
    users: dict[str, User], kafka: KafkaSettings, queries_anywhere: list[str]
) -> None:
    """Through the ASGI handler and the async middleware, as daphne runs it."""
    account = account_of(users["alice"])
    cookie = logged_in(users["alice"]).cookies["sessionid"].value
    client = AsyncClient(raise_request_exception=True)
    client.cookies["sessionid"] = cookie

    def deposit() -> Any:
        form = {"deposit-amount": "1.00", "deposit-command_id": str(uuid.uuid4())}
        return async_to_sync(client.post)(f"/accounts/{account.id}/deposit", form, headers={"HX-Request": "true"})

    assert deposit().status_code == 202  # warms the user and the account in the caches
    assert any("account" in sql for sql in queries_anywhere), "the watch sees the async views' queries"
    queries_anywhere.clear()
    response = deposit()
    assert response.status_code == 202
    assert response["HX-Reswap"] == "none"
    assert auth_queries(queries_anywhere) == []
    assert len(commands_sent(kafka)) == 2


def test_it_ends_the_session_on_log_out(users: dict[str, User]) -> None:
    client = logged_in(users["alice"])
    stolen = client.cookies["sessionid"].value
    assert client.get("/").status_code == 200
    assert client.post("/logout/").status_code == 302
    replay = Client()
    replay.cookies["sessionid"] = stolen
    response = replay.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_it_ends_other_sessions_when_the_password_changes(users: dict[str, User]) -> None:
    """The cached user is dropped on save, so the old password's session hash no longer verifies."""
    alice = users["alice"]
    laptop = logged_in(alice)
    assert laptop.get("/").status_code == 200  # the user is cached now
    alice.set_password("a-new-password-2026")
    alice.save()
    response = laptop.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_it_serves_a_logged_in_page_while_redis_is_down(users: dict[str, User]) -> None:
    """Sessions are written through to PostgreSQL: without the cache, pages are slower, not gone."""
    client = logged_in(users["alice"])
    dead = {
        "default": {
            **settings.CACHES["default"],
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
            "OPTIONS": {"max_connections": 2, "timeout": 1, "socket_connect_timeout": 0.5},
        }
    }
    with override_settings(CACHES=dead):
        response = client.get("/")
    assert response.status_code == 200
    assert b"alice" in response.content
