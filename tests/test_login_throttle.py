"""Failed log-ins are limited per user name and per address; names need a visible character."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from bank import domain
from tests.helpers import PASSWORD, logged_in
from web.forms import LOGIN_FAILURES_PER_USER, TOO_MANY_LOGINS

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def forget_failures() -> Iterator[None]:
    """The counts live in the session's Redis: later tests log alice and bob in through the form too."""
    yield
    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter("*ratelimit:*"):
        client.delete(key)


def log_in(client: Client, username: str, password: str, address: str = "10.0.0.1") -> tuple[int, str]:
    response = client.post("/login/", {"username": username, "password": password}, REMOTE_ADDR=address)
    return response.status_code, response.content.decode()


def test_it_refuses_log_ins_for_a_while_after_too_many_failures(users: dict[str, User]) -> None:
    name = users["alice"].username
    for _ in range(LOGIN_FAILURES_PER_USER):
        status, page = log_in(Client(), name, "wrong")
        assert status == 200 and TOO_MANY_LOGINS not in page
    status, page = log_in(Client(), name, PASSWORD)  # the right password, after the guesses
    assert status == 200 and TOO_MANY_LOGINS in page
    status, page = log_in(Client(), name.upper(), PASSWORD, address="10.0.0.2")  # another address, same name
    assert TOO_MANY_LOGINS in page
    assert log_in(Client(), users["bob"].username, PASSWORD)[0] == 302  # others log in as usual


def test_it_refuses_many_failures_from_one_address(users: dict[str, User]) -> None:
    address = "10.9.9.9"
    for _ in range(20):
        log_in(Client(), f"nobody-{uuid.uuid4().hex[:6]}", "wrong", address)
    page = log_in(Client(), users["bob"].username, PASSWORD, address)[1]
    assert TOO_MANY_LOGINS in page
    assert log_in(Client(), users["bob"].username, PASSWORD, "10.9.9.10")[0] == 302


INVISIBLE = ["\u200b\u200b", "\u200d", "\u202e\u2066", "\ufeff ", "\u2060\u00ad"]


def test_it_refuses_names_without_a_visible_character(users: dict[str, User]) -> None:
    for name in INVISIBLE:
        account_id = uuid.uuid4()
        events = domain.decide(domain.Account.new(account_id), domain.OpenAccount(account_id, "1", name, "EUR"))
        assert [type(e).__name__ for e in events] == ["CommandRejected"], repr(name)
    assert domain.has_visible_character("Savings \u200b")
    client = logged_in(users["alice"])
    response = client.post(
        "/accounts/open", {"name": "\u200b\u200b", "currency": "EUR", "command_id": str(uuid.uuid4())}
    )
    assert "at least one visible" in response.content.decode()
