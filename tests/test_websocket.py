"""The live-updates websocket: who may connect, and what reaches whom."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User

from projections import live, store
from projections.apply import AccountRow, AuditRow
from projections.models import Account, AuditEntry
from server.asgi import application
from tests.helpers import account_of, logged_in

pytestmark = pytest.mark.django_db(transaction=True)


def session_cookie(user: User) -> bytes:
    return f"sessionid={logged_in(user).cookies['sessionid'].value}".encode()


def communicator(cookie: bytes | None = None, origin: bytes = b"http://127.0.0.1") -> WebsocketCommunicator:
    headers = [(b"origin", origin)] + ([(b"cookie", cookie)] if cookie else [])
    return WebsocketCommunicator(application, "/ws/live/", headers=headers)


def deposit_outcome(account: Account, amount: int) -> store.Outcome:
    """What the projector pushes after projecting a deposit (the row it wrote is created too)."""
    now = datetime.now(UTC)
    entry = AuditEntry.objects.create(
        event_id=uuid.uuid4(),
        account_id=account.id,
        sequence=account.last_sequence + 1,
        type="MoneyDeposited",
        amount=amount,
        balance_after=account.balance + amount,
        occurred_at=now,
        actor="user:alice",
        command_id=uuid.uuid4(),
    )
    Account.objects.filter(id=account.id).update(balance=account.balance + amount, last_sequence=entry.sequence)
    account.refresh_from_db()
    outcome = store.Outcome()
    outcome.accounts[account.id] = AccountRow(**{f: getattr(account, f) for f in AccountRow.__dataclass_fields__})
    outcome.audit[account.id].append(AuditRow(**{f: getattr(entry, f) for f in AuditRow.__dataclass_fields__}))
    return outcome


def test_it_refuses_anonymous_connections(users: dict[str, User]) -> None:
    async def run() -> None:
        ws = communicator()
        connected, code = await ws.connect()
        assert not connected
        assert code == 4401

    async_to_sync(run)()


def test_it_refuses_foreign_origins(users: dict[str, User]) -> None:
    cookie = session_cookie(users["alice"])

    async def run() -> None:
        ws = communicator(cookie, origin=b"http://evil.example")
        connected, _ = await ws.connect()
        assert not connected

    async_to_sync(run)()


def test_it_pushes_only_the_users_own_accounts(users: dict[str, User]) -> None:
    alices = account_of(users["alice"], "Alice main")
    bobs = account_of(users["bob"], "Bob main")
    cookie = session_cookie(users["alice"])

    async def run() -> None:
        ws = communicator(cookie)
        connected, _ = await ws.connect()
        assert connected
        # Asking about bob's account, as an edited page could, gets nothing about it.
        await ws.send_to(
            text_data=json.dumps({"type": "hello", "account": str(bobs.id), "pending": [str(uuid.uuid4())]})
        )
        catch_up = []
        while not await ws.receive_nothing(timeout=0.3):
            catch_up.append(await ws.receive_from())
        assert catch_up and all(str(bobs.id) not in m and "Bob main" not in m for m in catch_up)

        await _push(bobs, 5_00)
        assert await ws.receive_nothing(timeout=0.5)

        await _push(alices, 12_34)
        received = [await ws.receive_from(timeout=2)]
        while not await ws.receive_nothing(timeout=0.3):
            received.append(await ws.receive_from())
        text = "".join(received)
        assert f'id="balance-{alices.id}"' in text
        assert "€12.34" in text
        assert f"afterbegin:#audit-live-{alices.id}" in text
        await ws.disconnect()

    async_to_sync(run)()


async def _push(account: Account, amount: int) -> None:
    from channels.db import database_sync_to_async

    outcome = await database_sync_to_async(deposit_outcome)(account, amount)
    for group, message in live.messages_for(outcome):
        from channels.layers import get_channel_layer

        await get_channel_layer().group_send(group, message)


def test_it_joins_the_group_of_an_account_opened_while_connected(users: dict[str, User]) -> None:
    cookie = session_cookie(users["alice"])

    async def run() -> None:
        from channels.db import database_sync_to_async
        from channels.layers import get_channel_layer

        ws = communicator(cookie)
        assert (await ws.connect())[0]
        account = await database_sync_to_async(account_of)(users["alice"], "Opened later")
        row = AccountRow(**{f: getattr(account, f) for f in AccountRow.__dataclass_fields__})
        await get_channel_layer().group_send(
            live.owner_group(account.owner), {"type": "account.opened", "account": live.account_payload(row)}
        )
        opened = await ws.receive_from(timeout=2)
        assert "beforeend:#accounts-body" in opened and "Opened later" in opened
        while not await ws.receive_nothing(timeout=0.3):
            await ws.receive_from()
        await _push(account, 1_00)
        assert "€1.00" in await ws.receive_from(timeout=2)
        await ws.disconnect()

    async_to_sync(run)()
