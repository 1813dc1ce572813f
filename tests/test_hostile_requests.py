"""Hostile cookies and headers on every page: an answer, never a 500 (and so never the debug page)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from bank.config import KafkaSettings
from tests.helpers import PASSWORD, account_of
from web import views
from web.middleware import zone_from_cookie

pytestmark = pytest.mark.django_db(transaction=True)

HOSTILE_ZONES = [
    "a/" * 1000 + "a",  # zoneinfo recursed until RecursionError: a 500 on every page, /healthz too
    "../../../../etc/passwd",
    "/etc/localtime",
    "Europe/Paris\x00",
    "Europe/" + "x" * 5000,
    "UTC" * 30,
    "Europe//Paris",
    "\u202eEurope/Paris",
    "%2e%2e%2f%2e%2e%2fetc",
]
HOSTILE_HEADERS = {
    "HTTP_X_FORWARDED_FOR": "127.0.0.1, <script>, " + "9" * 300,
    "HTTP_X_FORWARDED_PROTO": "https, gopher",
    "HTTP_ACCEPT_LANGUAGE": "x" * 5000 + ";q=abc",
    "HTTP_REFERER": "http://[::1",
    "HTTP_IF_MODIFIED_SINCE": "yesterday-ish",
    "HTTP_RANGE": "bytes=99999999999999-",
    "HTTP_AUTHORIZATION": "Bearer " + "\u2028" * 10 + "x" * 2000,
    "HTTP_HX_CURRENT_URL": "javascript:alert(1)",
    "HTTP_HX_TARGET": "\x1b[2J",
    "HTTP_ORIGIN": "null",
}


def example_paths(patterns: list[URLPattern | URLResolver], prefix: str, values: dict[str, str]) -> Iterator[str]:
    """One concrete path per URL pattern (the admin's included): converters filled in from `values`."""
    for entry in patterns:
        route = str(entry.pattern)
        if route.startswith("^"):  # a regex (the admin's app index, its catch-all): a path it matches
            route = re.sub(r"\(\?P<\w+>([\w-]+)(\|[^)]*)?\)", r"\1", route)  # an alternation: its first choice
            route = re.sub(r"\(\?P<\w+>[^)]*\)", "1", route).strip("^$").replace("\\", "")
        route = re.sub(
            r"<(?:(\w+):)?(\w+)>", lambda m: values.get(m.group(2), values.get(m.group(1) or "str", "1")), route
        )
        if isinstance(entry, URLResolver):
            yield from example_paths(entry.url_patterns, prefix + route, values)
        else:
            yield prefix + route


def raw_cookies(zone: str, session: str = "") -> str:
    """A Cookie header as a client may send it: the zone unquoted, and junk beside the real cookies."""
    cookies = [f"tz={zone}", f"{settings.CSRF_COOKIE_NAME}={'z' * 4000}", "a=b=c", "=", ";;", "tz2=\x7f"]
    if session:
        cookies.append(f"{settings.SESSION_COOKIE_NAME}={session}")
    else:
        cookies.append(f"{settings.SESSION_COOKIE_NAME}=../../{'s' * 300}")
    return "; ".join(cookies)


def wire(text: str) -> str:
    """A header as the server gets it: UTF-8 bytes, which WSGI and ASGI hand to Django as latin-1 text."""
    return text.encode().decode("latin-1")


def test_it_shows_no_time_zone_for_a_hostile_cookie() -> None:
    assert zone_from_cookie("Europe/Paris") is not None
    for zone in HOSTILE_ZONES:
        assert zone_from_cookie(zone) is None, zone[:40]


def test_it_answers_hostile_cookies_and_headers_on_every_page(
    users: dict[str, User], kafka: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(views, "LONG_POLL_SECONDS", 0.05)
    account = account_of(users["alice"])
    values = {"uuid": str(account.id), "account_id": str(account.id), "int": "1", "path": "1", "str": "1"}
    paths = sorted(set(example_paths(get_resolver().url_patterns, "/", values)))
    assert "/healthz" in paths and f"/accounts/{account.id}/deposit" in paths and "/admin/" in paths
    assert len(paths) > 40  # the admin's pages are among them

    sessions: dict[str, str] = {"": ""}
    for name in ("alice", "carol"):
        client = Client()
        assert client.login(username=name, password=PASSWORD)
        sessions[name] = client.cookies[settings.SESSION_COOKIE_NAME].value

    failures = []
    for n, path in enumerate(paths):
        # The admin's many pages: each as one of the three (their code is Django's); the bank's as all three.
        people = list(sessions.items())
        for who, session in people[n % 3 : n % 3 + 1] if path.startswith("/admin/") else people:
            zone = HOSTILE_ZONES[(n + len(who)) % len(HOSTILE_ZONES)]
            client = Client(raise_request_exception=False)
            extra = {k: wire(v) for k, v in {"HTTP_COOKIE": raw_cookies(zone, session), **HOSTILE_HEADERS}.items()}
            methods = ["get", "post"] if who != "carol" else ["get"]  # staff: no admin POST that could act
            for method in methods:
                response = getattr(client, method)(path, **extra)
                if response.status_code >= 500:
                    failures.append(f"{method.upper()} {path} as {who or 'anonymous'}: {response.status_code}")
    assert not failures, "\n".join(failures[:20])
