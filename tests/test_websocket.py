"""The live-updates websocket: who may connect, and what reaches whom."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client

from live import updates
from live.websocket import MESSAGE_TOO_BIG
from projections import store
from projections.apply import AccountRow, AuditRow
from projections.models import Account, AuditEntry
from server.asgi import application
from tests.helpers import PASSWORD, account_of, logged_in

pytestmark = pytest.mark.django_db(transaction=True)


def session_cookie(user: User) -> bytes:
    return f"sessionid={logged_in(user).cookies['sessionid'].value}".encode()


def communicator(cookie: bytes | None = None, origin: bytes = b"http://127.0.0.1") -> WebsocketCommunicator:
    headers = [(b"origin", origin)] + ([(b"cookie", cookie)] if cookie else [])
    return WebsocketCommunicator(application, "/ws/live/", headers=headers)


def deposit_outcome(account: Account, amount: int, command_id: uuid.UUID | None = None) -> store.BatchChanges:
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
        command_id=command_id or uuid.uuid4(),
    )
    Account.objects.filter(id=account.id).update(balance=account.balance + amount, last_sequence=entry.sequence)
    account.refresh_from_db()
    outcome = store.BatchChanges()
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
    marker = uuid.uuid4()

    async def run() -> None:
        ws = communicator(cookie)
        connected, _ = await ws.connect()
        assert connected
        # Asking about bob's account, as an edited page could, gets nothing about it.
        pending = [[str(alices.id), str(marker)]]
        await ws.send_to(
            text_data=json.dumps(
                {"type": "hello", "page": "account", "account": str(bobs.id), "history": True, "pending": pending}
            )
        )
        catch_up = []
        while not await ws.receive_nothing(timeout=0.3):
            catch_up.append(await ws.receive_from())
        assert all(str(bobs.id) not in m and "Bob main" not in m for m in catch_up)

        await _push(bobs, 5_00)
        assert await until_marker(ws, alices, marker) == []

        await ws.send_to(
            text_data=json.dumps({"type": "hello", "page": "account", "account": str(alices.id), "history": True})
        )
        while not await ws.receive_nothing(timeout=0.3):
            await ws.receive_from()
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


async def _push(account: Account, amount: int, command_id: uuid.UUID | None = None) -> None:
    from channels.db import database_sync_to_async

    outcome = await database_sync_to_async(deposit_outcome)(account, amount, command_id)
    for group, message in updates.messages_for(outcome):
        from channels.layers import get_channel_layer

        await get_channel_layer().group_send(group, message)


async def until_marker(ws: WebsocketCommunicator, account: Account, marker: uuid.UUID, push: bool = True) -> list[str]:
    """The frames received before the marker: the outcome of `marker`, a command on `account` that the page
    watches (named in its hello), pushed now (or already, for many pages) through the channel layer behind what the
    test pushed before. A frame of that earlier push would arrive first: a positive end instead of a pause that
    asserts silence."""
    if push:
        await _push(account, 0, marker)  # a deposit of nothing: no balance changes
    frames = []
    while f'id="cmd-{account.id}-{marker}"' not in (frame := await ws.receive_from(timeout=10)):
        frames.append(frame)
    return frames


def test_it_joins_the_group_of_an_account_opened_while_connected(users: dict[str, User]) -> None:
    cookie = session_cookie(users["alice"])

    async def run() -> None:
        from channels.db import database_sync_to_async
        from channels.layers import get_channel_layer

        ws = communicator(cookie)
        assert (await ws.connect())[0]
        await ws.send_to(text_data=json.dumps({"type": "hello", "page": "dashboard"}))
        assert "No accounts yet" in await ws.receive_from(timeout=2)
        while not await ws.receive_nothing(timeout=0.3):
            await ws.receive_from()
        account = await database_sync_to_async(account_of)(users["alice"], "Opened later")
        row = AccountRow(**{f: getattr(account, f) for f in AccountRow.__dataclass_fields__})
        await get_channel_layer().group_send(
            updates.owner_group(account.owner), {"type": "account.opened", "account": updates.account_payload(row)}
        )
        opened = [await ws.receive_from(timeout=2)]
        while not await ws.receive_nothing(timeout=0.3):
            opened.append(await ws.receive_from())
        assert any("beforeend:#accounts-body" in m and "Opened later" in m for m in opened)
        assert any('id="no-accounts"' in m and "hidden" in m for m in opened)
        await _push(account, 1_00)
        assert "€1.00" in await ws.receive_from(timeout=2)
        await ws.disconnect()

    async_to_sync(run)()


async def drain(ws: WebsocketCommunicator, first: float = 2.0) -> list[str]:
    """Every message until the socket is quiet (the first may take up to `first` seconds)."""
    if await ws.receive_nothing(timeout=first):
        return []
    received = [await ws.receive_from()]
    while not await ws.receive_nothing(timeout=0.3):
        received.append(await ws.receive_from())
    return received


def hello(
    page: str, account: Account | None = None, history: bool = False, pending: list[list[str]] | None = None
) -> str:
    return json.dumps(
        {
            "type": "hello",
            "page": page,
            "account": str(account.id) if account else None,
            "history": history,
            "pending": pending or [],
        }
    )


def test_it_sends_a_page_only_fragments_it_has_targets_for(users: dict[str, User]) -> None:
    """htmx logs oobErrorNoTarget for any fragment the page has no element for."""
    first, second = account_of(users["alice"], "First"), account_of(users["alice"], "Second")
    cookie = session_cookie(users["alice"])
    marker = uuid.uuid4()

    async def run() -> None:
        dashboard, account_page, older_page = communicator(cookie), communicator(cookie), communicator(cookie)
        for ws in (dashboard, account_page, older_page):
            assert (await ws.connect())[0]
        await dashboard.send_to(text_data=hello("dashboard"))
        caught_up = "".join(await drain(dashboard))
        assert 'id="total"' in caught_up and 'id="accounts-body"' in caught_up
        assert "balance-" not in caught_up and "audit-live-" not in caught_up
        await account_page.send_to(
            text_data=hello("account", first, history=True, pending=[[str(second.id), str(marker)]])
        )
        caught_up = "".join(await drain(account_page))
        assert f'id="balance-{first.id}"' in caught_up and f'id="audit-live-{first.id}"' in caught_up
        assert 'id="total"' not in caught_up and "accounts-body" not in caught_up and str(second.id) not in caught_up
        await older_page.send_to(text_data=hello("account", first, history=False))  # page 2 of the history
        assert "audit-live-" not in "".join(await drain(older_page))

        await _push(second, 2_00)
        update = "".join(await drain(dashboard))
        assert 'id="total"' in update and f'id="account-{second.id}"' in update
        assert "balance-" not in update and "audit-live-" not in update
        assert await until_marker(account_page, second, marker) == [], "nothing of another account on an account page"
        await drain(dashboard)  # the marker's push

        await _push(first, 3_00)
        update = "".join(await drain(account_page))
        assert f'id="balance-{first.id}"' in update and f"afterbegin:#audit-live-{first.id}" in update
        assert 'id="total"' not in update and "account-row" not in update and f'id="account-{first.id}"' not in update
        update = "".join(await drain(older_page))
        assert f'id="balance-{first.id}"' in update and "audit-live-" not in update
        for ws in (dashboard, account_page, older_page):
            await ws.disconnect()

    async_to_sync(run)()


def test_it_sends_outcomes_of_the_commands_the_page_waits_for_by_account(users: dict[str, User]) -> None:
    """A command id is unique per account only: the outcome of the same id on another account is not this one."""
    first, second = account_of(users["alice"], "First"), account_of(users["alice"], "Second")
    shared, later, marker = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    cookie = session_cookie(users["alice"])

    async def run() -> None:
        ws = communicator(cookie)
        assert (await ws.connect())[0]
        pending = [[str(first.id), str(shared)], [str(first.id), str(marker)]]
        await ws.send_to(text_data=hello("account", first, pending=pending))
        await drain(ws)
        await _push(second, 1_00, shared)  # the same command id, on the other account
        assert await until_marker(ws, first, marker) == []
        await _push(first, 4_00, shared)
        update = "".join(await drain(ws))
        assert f'id="cmd-{first.id}-{shared}"' in update and "Deposit €4.00" in update and "accepted" in update

        # A pending row that appears after its outcome was pushed (the push beat the 202): the watch finds it.
        await _push(first, 5_00, later)
        await drain(ws)
        await ws.send_to(text_data=json.dumps({"type": "watch", "account": str(first.id), "command": str(later)}))
        assert f'id="cmd-{first.id}-{later}"' in "".join(await drain(ws))
        await ws.disconnect()

    async_to_sync(run)()


def test_it_catches_up_on_outcomes_by_account_and_command(users: dict[str, User]) -> None:
    first, second = account_of(users["alice"], "First"), account_of(users["alice"], "Second")
    shared = uuid.uuid4()
    cookie = session_cookie(users["alice"])

    async def run() -> None:
        from channels.db import database_sync_to_async

        await database_sync_to_async(deposit_outcome)(second, 1_00, shared)
        ws = communicator(cookie)
        assert (await ws.connect())[0]
        await ws.send_to(text_data=hello("account", first, pending=[[str(first.id), str(shared)]]))
        assert str(shared) not in "".join(await drain(ws))
        await ws.disconnect()

    async_to_sync(run)()


@pytest.mark.parametrize("frame", ["[" * 1_000_000, "{" * 20_000 + "}" * 20_000, "x" * 100_000])
def test_it_closes_on_a_frame_far_larger_than_a_hello(users: dict[str, User], frame: str) -> None:
    cookie = session_cookie(users["alice"])

    async def run() -> None:
        ws = communicator(cookie)
        assert (await ws.connect())[0]
        await ws.send_to(text_data=frame)
        assert await ws.receive_output(timeout=2) == {"type": "websocket.close", "code": MESSAGE_TOO_BIG}

    async_to_sync(run)()


def test_it_ignores_deeply_nested_json_and_stays_usable(users: dict[str, User]) -> None:
    account_of(users["alice"])
    cookie = session_cookie(users["alice"])

    async def run() -> None:
        ws = communicator(cookie)
        assert (await ws.connect())[0]
        for frame in ["[" * 8_000 + "]" * 8_000, "[" * 10_000, '{"type": "hello", "page": ' + "[" * 5_000, "\ud800"]:
            await ws.send_to(text_data=frame)
        # Frames are handled in order: the first answer is the hello's, nothing came of the frames before it.
        await ws.send_to(text_data=hello("dashboard"))
        assert 'id="total"' in await ws.receive_from(timeout=10)
        await ws.disconnect()

    async_to_sync(run)()


def test_it_closes_the_websocket_when_its_session_logs_out(users: dict[str, User]) -> None:
    alices = account_of(users["alice"], "Alice main")
    client = Client()
    assert client.login(username="alice", password=PASSWORD)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    other_cookie = session_cookie(users["alice"])  # another login of alice, in another browser

    async def run() -> None:
        from asgiref.sync import sync_to_async

        ws, other = communicator(cookie), communicator(other_cookie)
        for socket in (ws, other):
            assert (await socket.connect())[0]
            await socket.send_to(text_data=hello("dashboard"))
            await drain(socket)
        await sync_to_async(client.post)("/logout/")
        assert await ws.receive_output(timeout=2) == {"type": "websocket.close", "code": 4401}
        await _push(alices, 1_00)
        assert "€1.00" in "".join(await drain(other)), "the other login still gets updates"
        await other.disconnect()

    async_to_sync(run)()


def test_it_closes_the_websocket_once_its_session_is_gone_otherwise(
    users: dict[str, User], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session ended without a logout (flushed, expired, deleted by an operator) is noticed on the next push."""
    from importlib import import_module

    from django.conf import settings
    from django.contrib.sessions.models import Session

    from live import websocket

    monkeypatch.setattr(websocket, "SESSION_RECHECK_SECONDS", 0.0)
    alices = account_of(users["alice"], "Alice main")
    cookie = session_cookie(users["alice"])

    async def run() -> None:
        from channels.db import database_sync_to_async

        ws = communicator(cookie)
        assert (await ws.connect())[0]
        await ws.send_to(text_data=hello("dashboard"))
        await drain(ws)
        # Through the session engine: sessions are cached in Redis (cached_db), and a row deleted
        # from the table alone lives on in the cache until it expires.
        engine = import_module(settings.SESSION_ENGINE)

        def end_all() -> None:
            for key in Session.objects.values_list("session_key", flat=True):
                engine.SessionStore(key).delete()

        await database_sync_to_async(end_all)()
        await _push(alices, 1_00)
        assert await ws.receive_output(timeout=2) == {"type": "websocket.close", "code": 4401}

    async_to_sync(run)()


def test_it_renders_a_push_once_for_many_pages_and_sends_it_only_to_their_owner(users: dict[str, User]) -> None:
    """One push reaches every page of the account: each fragment is rendered once, and no page of another user
    gets it, not even one that says hello as the page of that account (an edited page)."""
    from live import websocket

    alices, bobs = account_of(users["alice"], "Alice main"), account_of(users["bob"], "Bob main")
    alice_cookie, bob_cookie = session_cookie(users["alice"]), session_cookie(users["bob"])
    alice_marker, bob_markers = uuid.uuid4(), (uuid.uuid4(), uuid.uuid4())
    alice_pending = [[str(alices.id), str(alice_marker)]]
    bob_pending = [[str(bobs.id), str(m)] for m in bob_markers]

    async def run() -> None:
        account_pages = [communicator(alice_cookie) for _ in range(3)]
        dashboards = [communicator(alice_cookie) for _ in range(3)]
        bob_pages = [communicator(bob_cookie) for _ in range(3)]
        for ws in account_pages + dashboards + bob_pages:
            assert (await ws.connect())[0]
        for ws in account_pages:
            await ws.send_to(text_data=hello("account", alices, pending=alice_pending))
        for ws in dashboards:
            await ws.send_to(text_data=hello("dashboard", pending=alice_pending))
        bob_says = (
            hello("account", bobs, pending=bob_pending),
            hello("dashboard", pending=bob_pending),
            hello("account", alices, pending=bob_pending),
        )
        for ws, said in zip(bob_pages, bob_says, strict=True):
            await ws.send_to(text_data=said)
        for ws in account_pages + dashboards + bob_pages:
            await drain(ws)

        websocket._rendered.cache_clear()
        await _push(alices, 12_34)  # the balance goes from 0 to 12.34
        on_account_pages = ["".join(await drain(ws)) for ws in account_pages]
        on_dashboards = ["".join(await drain(ws)) for ws in dashboards]
        for text in on_account_pages:
            assert f'id="balance-{alices.id}" class="balance" data-cents="1234"' in text
        for text in on_dashboards:
            assert f'id="account-{alices.id}"' in text and 'data-cents="1234"' in text and 'id="total"' in text
        assert len(set(on_account_pages)) == 1 and len(set(on_dashboards)) == 1
        # Rendered once each: the account pages' summary, the dashboards' summary and the dashboards' row.
        assert websocket._rendered.cache_info().misses == 3
        await _push(bobs, 0, bob_markers[0])  # behind alice's push, to each of bob's pages
        for ws in bob_pages:
            assert await until_marker(ws, bobs, bob_markers[0], push=False) == [], "nothing of alice's on bob's pages"

        await _push(bobs, 5_00)
        assert f'id="balance-{bobs.id}" class="balance" data-cents="500"' in "".join(await drain(bob_pages[0]))
        assert f'id="account-{bobs.id}"' in "".join(await drain(bob_pages[1]))
        await _push(bobs, 0, bob_markers[1])
        assert await until_marker(bob_pages[2], bobs, bob_markers[1], push=False) == []
        await _push(alices, 0, alice_marker)
        for ws in account_pages + dashboards:
            assert await until_marker(ws, alices, alice_marker, push=False) == [], "nothing of bob's on alice's pages"
        for ws in account_pages + dashboards + bob_pages:
            await ws.disconnect()

    async_to_sync(run)()


def test_it_renders_a_shared_push_in_each_pages_time_zone(users: dict[str, User]) -> None:
    alices = account_of(users["alice"], "Alice main")
    cookie = session_cookie(users["alice"])

    async def run() -> None:
        in_tokyo, in_utc = communicator(cookie + b"; tz=Asia/Tokyo"), communicator(cookie)
        for ws in (in_tokyo, in_utc):
            assert (await ws.connect())[0]
            await ws.send_to(text_data=hello("account", alices, history=True))
            await drain(ws)
        await _push(alices, 1_00)
        tokyo, utc = "".join(await drain(in_tokyo)), "".join(await drain(in_utc))
        assert f"afterbegin:#audit-live-{alices.id}" in tokyo and f"afterbegin:#audit-live-{alices.id}" in utc
        assert "+09:00" in tokyo and "+09:00" not in utc and "+00:00" in utc
        for ws in (in_tokyo, in_utc):
            await ws.disconnect()

    async_to_sync(run)()


def test_it_never_reuses_a_fragment_rendered_from_a_model_instance(users: dict[str, User]) -> None:
    """A model instance equals any other of its primary key: a fragment rendered from one is never looked up."""
    from live import websocket

    account = account_of(users["alice"], "Alice main", balance=1_00)
    assert 'data-cents="100"' in websocket.render("balance", None, {"account": account})
    account.balance = 2_00
    assert 'data-cents="200"' in websocket.render("balance", None, {"account": account})
    with pytest.raises(websocket.Unkeyed):
        websocket.fragment_key([account])


def test_it_asks_the_session_store_once_for_all_pages_of_a_session(
    users: dict[str, User], monkeypatch: pytest.MonkeyPatch
) -> None:
    from live import websocket

    asked: list[str] = []
    session_alive = websocket.session_alive

    async def counted(session_key: str, user_pk: object) -> bool:
        asked.append(session_key)
        return await session_alive(session_key, user_pk)

    monkeypatch.setattr(websocket, "session_alive", counted)
    alices = account_of(users["alice"], "Alice main")
    cookie = session_cookie(users["alice"])

    async def run() -> None:
        pages = [communicator(cookie) for _ in range(5)]
        for ws in pages:
            assert (await ws.connect())[0]
            await ws.send_to(text_data=hello("dashboard"))
            await drain(ws)
        websocket.SESSIONS.alive_at.clear()  # as if the last check were older than SESSION_RECHECK_SECONDS
        await _push(alices, 3_00)
        for ws in pages:
            assert 'data-cents="300"' in "".join(await drain(ws))
        assert len(asked) == 1
        await _push(alices, 4_00)
        for ws in pages:
            assert 'data-cents="700"' in "".join(await drain(ws))
        assert len(asked) == 1, "within SESSION_RECHECK_SECONDS the first check holds"
        for ws in pages:
            await ws.disconnect()

    async_to_sync(run)()


def test_it_sends_no_dashboard_fragment_to_an_account_page_when_an_account_is_opened(users: dict[str, User]) -> None:
    """Regression (htmx:oobErrorNoTarget #no-accounts, found by a browser pass): only the dashboard has
    #no-accounts and #total, so an account page open while another account is opened gets neither."""
    first = account_of(users["alice"], "First")
    cookie = session_cookie(users["alice"])

    async def run() -> None:
        from channels.db import database_sync_to_async
        from channels.layers import get_channel_layer

        page = communicator(cookie)
        assert (await page.connect())[0]
        await page.send_to(text_data=hello("account", first, history=True))
        await drain(page)
        account = await database_sync_to_async(account_of)(users["alice"], "Opened later")
        row = AccountRow(**{f: getattr(account, f) for f in AccountRow.__dataclass_fields__})
        await get_channel_layer().group_send(
            updates.owner_group(account.owner), {"type": "account.opened", "account": updates.account_payload(row)}
        )
        await _push(first, 1_00)  # something the page does show, so the drain below has arrived
        received = "".join(await drain(page))
        assert f'id="balance-{first.id}"' in received
        assert 'id="no-accounts"' not in received and 'id="total"' not in received
        await page.disconnect()

    async_to_sync(run)()
