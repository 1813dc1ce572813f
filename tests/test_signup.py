"""Sign-up and password change: Django's forms and validators, the per-address limit, CSRF."""

from __future__ import annotations

import random

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from tests.helpers import PASSWORD, logged_in

pytestmark = pytest.mark.django_db(transaction=True)

GOOD = "plum-orbit-cascade-41"


def address() -> str:
    """A client address of its own per test: the limit's counters live in the session's shared Redis."""
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


def sign_up(client: Client, username: str, password: str = GOOD, again: str | None = None) -> object:
    return client.post("/signup/", {"username": username, "password1": password, "password2": again or password})


def test_it_signs_up_and_logs_in(users: dict[str, User]) -> None:
    client = Client(REMOTE_ADDR=address())
    assert client.get("/signup/").status_code == 200
    response = sign_up(client, "dora")
    assert response.status_code == 303 and response["Location"] == "/"  # type: ignore[attr-defined]
    page = client.get("/")
    assert page.status_code == 200 and "dora" in page.content.decode()
    assert User.objects.get(username="dora").check_password(GOOD)


@pytest.mark.parametrize(
    ("username", "password", "again", "message"),
    [
        ("erin", GOOD, "something-else-99", "The two password fields didn\u2019t match."),
        ("erin", "password", None, "This password is too common."),
        ("erin", "12345678901", None, "This password is entirely numeric."),
        ("erin", "short", None, "This password is too short."),
        ("alice", GOOD, None, "A user with that username already exists."),
        ("bad name!", GOOD, None, "Enter a valid username."),
        ("", GOOD, None, "This field is required."),
    ],
)
def test_it_answers_bad_sign_ups_in_the_form(
    users: dict[str, User], username: str, password: str, again: str | None, message: str
) -> None:
    client = Client(REMOTE_ADDR=address())
    count = User.objects.count()
    response = sign_up(client, username, password, again)
    assert response.status_code == 422  # type: ignore[attr-defined]
    assert message in response.content.decode()  # type: ignore[attr-defined]
    assert User.objects.count() == count
    assert client.get("/").status_code == 302, "not logged in"


def test_it_refuses_a_sign_up_without_csrf_token(users: dict[str, User]) -> None:
    client = Client(enforce_csrf_checks=True, REMOTE_ADDR=address())
    assert sign_up(client, "frank").status_code == 403  # type: ignore[attr-defined]
    assert not User.objects.filter(username="frank").exists()


def test_it_stops_a_sign_up_storm_from_one_address(users: dict[str, User]) -> None:
    storm = Client(REMOTE_ADDR=address())
    for n in range(settings.SIGNUP_LIMIT):
        assert sign_up(storm, f"bot{n}", "x", "y").status_code == 422  # type: ignore[attr-defined]
    response = sign_up(storm, "bot-last")
    assert response.status_code == 429  # type: ignore[attr-defined]
    assert "Too many sign-ups from your network" in response.content.decode()  # type: ignore[attr-defined]
    assert not User.objects.filter(username="bot-last").exists()
    assert sign_up(Client(REMOTE_ADDR=address()), "grace").status_code == 303  # type: ignore[attr-defined]


def test_it_changes_the_password_and_keeps_the_session(users: dict[str, User]) -> None:
    client = logged_in(users["alice"])
    assert client.get("/password/").status_code == 200
    wrong = client.post("/password/", {"old_password": "not-it", "new_password1": GOOD, "new_password2": GOOD})
    assert "Your old password was entered incorrectly" in wrong.content.decode()
    response = client.post("/password/", {"old_password": PASSWORD, "new_password1": GOOD, "new_password2": GOOD})
    assert response.status_code == 302 and response["Location"] == "/password/done/"
    assert client.get("/").status_code == 200, "still logged in"
    assert Client().login(username="alice", password=GOOD)
    assert not Client().login(username="alice", password=PASSWORD)


def test_it_requires_login_to_change_a_password(users: dict[str, User]) -> None:
    response = Client().post("/password/", {"old_password": PASSWORD, "new_password1": GOOD, "new_password2": GOOD})
    assert response.status_code == 302 and response["Location"].startswith("/login/")
