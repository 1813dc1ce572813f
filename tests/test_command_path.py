"""The command views' one database read on the event loop (projections.async_db), as daphne runs it.

Django's sync test client runs each async view on a new loop in a thread, where the query takes the
thread path (tests/test_views.py covers that); here the views run on a loop of the main thread, as
in daphne, so the psycopg async pool answers. Expected values come from the rows the test wrote.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.http import Http404
from django.test import AsyncClient

from bank.config import KafkaSettings
from devservices.process import free_port
from projections import async_db, queries
from projections.models import Account, AuditEntry
from tests.helpers import account_of, logged_in, read_raw

pytestmark = pytest.mark.django_db(transaction=True)
HTMX = {"HX-Request": "true"}


def on_the_main_loop(scenario: Callable[[], Awaitable[Any]]) -> Any:
    """Run `scenario` on a loop of the main thread (the fast path), closing the pool before the loop ends."""

    async def run() -> Any:
        try:
            return await scenario()
        finally:
            await async_db.close()

    return asyncio.run(run())


def cookies_of(user: User) -> Any:
    """A logged-in session's cookies, with the user already in the cache (as after a first page): the requests
    then read no row in Django's threads, whose pooled connections would outlive the test database."""
    from web.auth import CachedModelBackend

    cookies = logged_in(user).cookies
    CachedModelBackend().get_user(user.pk)
    return cookies


def outcome(account: Account, command_id: uuid.UUID) -> None:
    AuditEntry.objects.create(
        event_id=uuid.uuid4(),
        account_id=account.id,
        sequence=2,
        type="MoneyDeposited",
        amount=5_00,
        balance_after=5_00,
        occurred_at=datetime.now(UTC),
        actor="user:alice",
        command_id=command_id,
    )


def test_it_reads_the_own_account_and_whether_the_command_was_used_without_a_thread(users: dict[str, User]) -> None:
    alice, bob = users["alice"], users["bob"]
    alices, bobs = account_of(alice, "Savings", 12_34), account_of(bob)
    used = uuid.uuid4()
    outcome(alices, used)
    outcome(bobs, sent_to_bob := uuid.uuid4())

    async def scenario() -> dict[str, Any]:
        found: dict[str, Any] = {}
        found["used"] = await queries.aowned_account_and_used(alice, alices.id, used)
        found["fresh"] = await queries.aowned_account_and_used(alice, str(alices.id), uuid.uuid4())
        found["no id"] = await queries.aowned_account_and_used(alice, alices.id, None)
        found["bob's id on alice's"] = await queries.aowned_account_and_used(alice, alices.id, sent_to_bob)
        for name, account_id in (("bob's", bobs.id), ("unknown", uuid.uuid4())):
            try:
                await queries.aowned_account_and_used(alice, account_id, None)
            except Http404:
                found[name] = 404
        found["on the loop"] = async_db._pool is not None
        return found

    found = on_the_main_loop(scenario)
    assert found["on the loop"], "the query took the thread path"
    account, was_used = found["used"]
    assert was_used is True
    stored = Account.objects.get(id=alices.id)
    assert [getattr(account, f.attname) for f in Account._meta.concrete_fields] == [
        getattr(stored, f.attname) for f in Account._meta.concrete_fields
    ]
    assert (account.name, account.balance, account.owner) == ("Savings", 12_34, str(alice.pk))
    assert found["fresh"][1] is False and found["no id"][1] is False
    assert found["bob's id on alice's"][1] is False, "a command id is used per account"
    assert found["bob's"] == 404 and found["unknown"] == 404


def test_it_answers_deposits_from_the_event_loop_as_from_the_test_client(
    users: dict[str, User], kafka: KafkaSettings
) -> None:
    """202 and one command for a fresh form; 404 for someone else's account; 422 for a form sent before."""
    alices, bobs = account_of(users["alice"]), account_of(users["bob"])
    used = uuid.uuid4()
    outcome(alices, used)
    cookies = cookies_of(users["alice"])
    fresh = uuid.uuid4()

    async def scenario() -> list[tuple[int, str]]:
        client = AsyncClient()
        client.cookies = cookies
        answers = []
        for account, command_id in ((alices, fresh), (bobs, uuid.uuid4()), (alices, used)):
            form = {"deposit-amount": "7.00", "deposit-command_id": str(command_id)}
            response = await client.post(f"/accounts/{account.id}/deposit", form, headers=HTMX)
            answers.append((response.status_code, response.content.decode()))
        assert async_db._pool is not None, "the views took the thread path"
        return answers

    (accepted, body), (foreign, _), (again, again_body) = on_the_main_loop(scenario)
    assert accepted == 202 and f'id="cmd-{alices.id}-{fresh}"' in body and "Deposit €7.00" in body
    assert foreign == 404
    assert again == 422 and "sent before" in again_body
    sent = [m.value() or b"" for m in read_raw(kafka, kafka.commands_topic)]
    assert len(sent) == 1 and str(fresh).encode() in sent[0] and str(bobs.id).encode() not in sent[0]


def test_it_still_answers_503_from_the_event_loop_when_kafka_cannot_confirm(
    users: dict[str, User], kafka: KafkaSettings, settings: Any
) -> None:
    account = account_of(users["alice"])
    settings.KAFKA = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", command_timeout=1.0)
    cookies = cookies_of(users["alice"])

    async def scenario() -> tuple[int, str]:
        client = AsyncClient()
        client.cookies = cookies
        form = {"deposit-amount": "42.50", "deposit-command_id": str(uuid.uuid4())}
        response = await client.post(f"/accounts/{account.id}/deposit", form, headers=HTMX)
        return response.status_code, response.content.decode()

    status, body = on_the_main_loop(scenario)
    assert status == 503 and "cannot take orders right now" in body and 'value="42.50"' in body
    assert read_raw(kafka, kafka.commands_topic) == []


def test_it_answers_503_when_the_database_is_unreachable_from_the_event_loop(
    users: dict[str, User], kafka: KafkaSettings, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool's connection errors and timeout come out as Django's: the middleware's 503, not a 500."""
    account = account_of(users["alice"])
    cookies = cookies_of(users["alice"])
    monkeypatch.setattr(async_db, "_conninfo", lambda: f"host=127.0.0.1 port={free_port()} dbname=nowhere")
    settings.DATABASE_POOL_TIMEOUT = 1.0

    async def scenario() -> int:
        client = AsyncClient()
        client.cookies = cookies
        form = {"deposit-amount": "1.00", "deposit-command_id": str(uuid.uuid4())}
        response = await client.post(f"/accounts/{account.id}/deposit", form, headers=HTMX)
        return response.status_code

    assert on_the_main_loop(scenario) == 503
    assert read_raw(kafka, kafka.commands_topic) == []


@pytest.mark.filterwarnings("ignore:No directory at")  # no collected static files in a test run
@pytest.mark.parametrize("kind", ["deposit", "transfer"])
def test_it_takes_a_command_through_the_asgi_handler_without_a_thread(
    users: dict[str, User], kafka: KafkaSettings, monkeypatch: pytest.MonkeyPatch, settings: Any, kind: str
) -> None:
    """The handler daphne runs (server.asgi): a deposit or a transfer never leaves the event loop; a sync page still
    gets its thread. A transfer's answer keeps the form (HX-Reswap: none) with a fresh command id, as a deposit's.
    With BANK_FASTPATH=false (stock Django's handler and middleware) the command hops to threads."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from asgiref.testing import ApplicationCommunicator
    from django.conf import settings

    from bank.account_number import account_number
    from server import fastpath

    account = account_of(users["alice"])
    account_of(users["alice"], name="Savings")  # the transfer form lists it
    payee = account_number(account_of(users["bob"]).id)
    session = cookies_of(users["alice"])[settings.SESSION_COOKIE_NAME].value
    csrf = "k" * 32
    hops: list[str] = []
    submit, start = ThreadPoolExecutor.submit, threading.Thread.start
    monkeypatch.setattr(
        ThreadPoolExecutor, "submit", lambda self, *a, **k: hops.append("submit") or submit(self, *a, **k)
    )
    monkeypatch.setattr(threading.Thread, "start", lambda self: hops.append("thread") or start(self))
    # As deployed (DEBUG off): static files from the manifest, not looked up on disk (in a thread) per request.
    settings.SERVESTATIC_AUTOREFRESH = settings.SERVESTATIC_USE_FINDERS = False
    handler = fastpath.http_handler(settings.FASTPATH)()

    answers: list[tuple[dict[bytes, bytes], bytes]] = []

    async def request(method: str, path: str, body: bytes = b"") -> tuple[int, list[str]]:
        hops.clear()
        headers = [
            (b"host", b"127.0.0.1"),
            (b"cookie", f"{settings.SESSION_COOKIE_NAME}={session}; csrftoken={csrf}".encode()),
            (b"x-csrftoken", csrf.encode()),
            (b"hx-request", b"true"),
            (b"content-type", b"application/x-www-form-urlencoded"),
        ]
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
            "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 80),
        }  # fmt: skip
        app = ApplicationCommunicator(handler, scope)
        await app.send_input({"type": "http.request", "body": body})
        start_message = await app.receive_output(10)
        body = b""
        while (part := await app.receive_output(10)).get("more_body"):
            body += part.get("body", b"")
        answers.append(({k.lower(): v for k, v in start_message["headers"]}, body + part.get("body", b"")))
        await app.wait(10)
        return start_message["status"], list(hops)

    def command() -> bytes:
        to = f"&transfer-to_number={payee}" if kind == "transfer" else ""
        return f"{kind}-amount=1.00&{kind}-command_id={uuid.uuid4()}{to}".encode()

    async def scenario() -> list[tuple[int, list[str]]]:
        path = f"/accounts/{account.id}/{kind}"
        first = await request("POST", path, command())  # connects the pool, Redis, the command bus
        return [first, await request("POST", path, command()), await request("GET", "/")]

    (first, _), (second, second_hops), (page, page_hops) = on_the_main_loop(scenario)
    assert (first, second) == (202, 202)
    if settings.FASTPATH:
        assert second_hops == [], f"a {kind} started a thread or sent work to one"
    else:
        assert "submit" in second_hops, "stock Django's middleware runs its hooks in a thread"
    headers, body = answers[1]
    assert headers[b"hx-reswap"] == b"none"
    assert f'name="{kind}-command_id" value="'.encode() in body and b"<form" not in body
    assert page == 200 and page_hops, "the dashboard (a sync view) runs in a thread of its own"
    assert len(read_raw(kafka, kafka.commands_topic)) == 2


def test_it_writes_the_pending_rows_status_url_as_the_url_resolver_does() -> None:
    from django.urls import reverse

    from web.templatetags.bank import status_url

    account, command = uuid.uuid4(), uuid.uuid4()
    assert status_url(account, command) == reverse("command-status", args=[account, command])
    assert status_url(str(account), str(command)) == reverse("command-status", args=[account, command])


def test_it_reads_again_after_the_database_dropped_its_connections(users: dict[str, User]) -> None:
    """As after a PostgreSQL restart: the pool's connections are gone; the next command reads on a new one."""
    import psycopg

    alice = users["alice"]
    account = account_of(alice)

    def drop_the_pools_connections() -> int:
        with psycopg.connect(async_db._conninfo(), application_name="test", autocommit=True) as connection:
            row = connection.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
                [async_db.APPLICATION_NAME],
            ).fetchone()
            return int(row[0]) if row else 0

    async def scenario() -> tuple[int, Account]:
        await queries.aowned_account_and_used(alice, account.id, None)
        dropped = await asyncio.to_thread(drop_the_pools_connections)
        again, _ = await queries.aowned_account_and_used(alice, account.id, None)
        return dropped, again

    dropped, again = on_the_main_loop(scenario)
    assert dropped >= 1
    assert again.id == account.id
