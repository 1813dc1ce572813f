"""The whole flow on the production shape: a deposit in the web → processor → projector → websocket update,
every Kafka hop over SASL_SSL with SCRAM, each process as its own principal."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client

from bank import domain, messages
from bank.command_bus import CommandBus
from tests.cluster.conftest import Secure
from tests.helpers import PASSWORD, Worker, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]


def start_bank(secure: Secure, workers: Callable[..., Worker], name: str) -> tuple[Worker, Worker]:
    """The processor and the projector as processes, each as its own principal; logs in var/test/logs/<name>-*.log."""
    processor = workers(
        f"{name}-processor",
        ["run_processor", "--instance", "c1"],
        secure.settings("processor"),
        **secure.env("processor"),
    )
    projector = workers(f"{name}-projector", ["run_projector"], secure.settings("projector"), **secure.env("projector"))
    processor.wait_for_log("assigned partitions", timeout=90)
    projector.wait_for_log("projector assigned", timeout=90)
    return processor, projector


def balance_of(account_id: uuid.UUID) -> int | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT balance FROM projections_account WHERE id = %s", [account_id])
        row = cursor.fetchone()
    return None if row is None else int(row[0])


def test_it_runs_a_deposit_from_the_web_to_the_websocket_over_sasl_ssl(
    secure: Secure, workers: Callable[..., Worker], users: dict[str, User], settings
) -> None:
    from server.asgi import application

    alice = users["alice"]
    settings.KAFKA = secure.settings("web")  # the views' command bus runs as the web principal
    start_bank(secure, workers, "flow")
    account_id = uuid.uuid4()
    bus = CommandBus(settings.KAFKA)
    try:
        bus.send(
            messages.CommandEnvelope.new(domain.OpenAccount(account_id, str(alice.pk), "Main", "EUR"), "user:alice")
        )
    finally:
        bus.close()
    wait_until(lambda: balance_of(account_id) == 0, timeout=60, what="the account projected")

    client = Client()
    assert client.login(username="alice", password=PASSWORD)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()

    async def run() -> None:
        ws = WebsocketCommunicator(
            application, "/ws/live/", headers=[(b"origin", b"http://127.0.0.1"), (b"cookie", cookie)]
        )
        assert (await ws.connect())[0]
        # What the account page says when its websocket opens: which page, which account, its history shown.
        hello = {"type": "hello", "page": "account", "account": str(account_id), "history": True, "pending": []}
        await ws.send_to(text_data=json.dumps(hello))
        while not await ws.receive_nothing(timeout=0.5):  # the catch-up on connect
            await ws.receive_from()
        response = await sync_to_async(client.post)(
            f"/accounts/{account_id}/deposit",
            {"deposit-amount": "12.34", "deposit-command_id": str(uuid.uuid4())},
            headers={"HX-Request": "true"},
        )
        assert response.status_code == 202, response.content.decode()[:500]
        received = ""
        for _ in range(20):  # bounded: each receive waits at most 5 s
            received += await ws.receive_from(timeout=5)
            if "€12.34" in received and f'id="balance-{account_id}"' in received:
                break
        assert f'id="balance-{account_id}"' in received and "€12.34" in received
        await ws.disconnect()

    async_to_sync(run)()
    assert balance_of(account_id) == 12_34
