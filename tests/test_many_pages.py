"""Many open pages on one web process: all connect, all get the update; past the limit a page is told to retry."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable

import aiohttp
import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth.models import User
from django.test import override_settings

from projections.models import Account
from tests.helpers import logged_in
from tests.test_websocket import communicator, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

PAGES = 300


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30.0) -> object:
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return found


def test_it_pushes_to_300_pages_open_on_one_web_process(bank_server: str, users: dict[str, User]) -> None:
    """Each page of the owner gets the update (its fragments rendered once for all); no page of another user does."""
    alice = users["alice"]
    client = logged_in(alice)
    bobs_cookie = f"sessionid={logged_in(users['bob']).cookies['sessionid'].value}"
    opened = client.post(
        "/accounts/open",
        {"name": "Many", "currency": "EUR", "command_id": str(uuid.uuid4())},
        headers={"HX-Request": "true"},
    )
    assert opened.status_code == 202
    account = wait_for(lambda: Account.objects.filter(owner=str(alice.pk)).first(), "the account to be projected")
    assert isinstance(account, Account)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    token = "t" * 32  # a CSRF secret of our choosing, in the cookie and the header
    ws_url = bank_server.replace("http://", "ws://") + "/ws/live/"
    marker = f'id="balance-{account.id}" class="balance" data-cents="4200"'

    async def run() -> tuple[list[bool], list[str]]:
        # No pool limit on the client side: every page is its own connection, as with browsers.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def page(cookie: str = cookie, kind: str = "account") -> aiohttp.ClientWebSocketResponse:
                ws = await session.ws_connect(ws_url, headers={"Cookie": cookie, "Origin": bank_server})
                # As the account page says after connecting: nothing is pushed to a page before it.
                await ws.send_json({"type": "hello", "page": kind, "account": str(account.id), "history": False})
                return ws

            # Stock Channels (BANK_FASTPATH=false) reads each handshake's session and user in its one sync
            # thread, and a burst of 300 overflowed it on a loaded machine (server/fastpath/README.md): waves.
            wave = PAGES if settings.FASTPATH else 50
            sockets = []
            for start in range(0, PAGES, wave):
                sockets += await asyncio.gather(*(page() for _ in range(min(wave, PAGES - start))))
            # Bob's pages: dashboards, and account pages that name alice's account (edited pages).
            others = await asyncio.gather(*(page(bobs_cookie, ("dashboard", "account")[i % 2]) for i in range(10)))
            try:
                # A deposit through the view (the real path: Kafka, processor, projector, channel layer).
                form = {"deposit-amount": "42.00", "deposit-command_id": str(uuid.uuid4())}
                headers = {"Cookie": f"{cookie}; csrftoken={token}", "X-CSRFToken": token, "HX-Request": "true"}
                async with session.post(
                    f"{bank_server}/accounts/{account.id}/deposit", data=form, headers=headers
                ) as answer:
                    assert answer.status == 202, await answer.text()

                async def updated(ws: aiohttp.ClientWebSocketResponse) -> bool:
                    deadline = time.monotonic() + 20
                    while (left := deadline - time.monotonic()) > 0:
                        message = await ws.receive(timeout=left)
                        if message.type != aiohttp.WSMsgType.TEXT:
                            return False
                        if marker in message.data:
                            return True
                    return False

                delivered = await asyncio.gather(*(updated(ws) for ws in sockets))

                async def seen_by_bob(ws: aiohttp.ClientWebSocketResponse) -> list[str]:
                    """What a page of bob's got (its own catch-up), until it is quiet for half a second."""
                    texts = []
                    with contextlib.suppress(TimeoutError):
                        while (message := await ws.receive(timeout=0.5)).type == aiohttp.WSMsgType.TEXT:
                            texts.append(message.data)
                    return texts

                leaked = [t for texts in await asyncio.gather(*map(seen_by_bob, others)) for t in texts]
                return delivered, leaked
            finally:
                await asyncio.gather(*(ws.close() for ws in sockets + others))

    delivered, seen_by_bob = async_to_sync(run)()
    assert sum(delivered) == PAGES
    assert not [text for text in seen_by_bob if str(account.id) in text or "4200" in text]


@override_settings(LIVE_MAX_SOCKETS=1)
def test_it_tells_a_page_past_the_limit_to_try_again_later(
    users: dict[str, User], monkeypatch: pytest.MonkeyPatch
) -> None:
    from live.websocket import LiveConsumer

    # Counted from zero: a test's communicator closed by the server never says websocket.disconnect, so
    # sockets of tests run before this one may still count in this process.
    monkeypatch.setattr(LiveConsumer, "open_sockets", 0)
    cookie = session_cookie(users["alice"])

    async def run() -> None:
        first, second = communicator(cookie), communicator(cookie)
        connected, _ = await first.connect()
        assert connected
        connected, _ = await second.connect()
        assert connected, "accepted, so that the page learns why it was closed"
        closed = await second.receive_output()
        assert closed == {"type": "websocket.close", "code": 4013, "reason": closed.get("reason")}
        await first.disconnect()
        third = communicator(cookie)
        connected, _ = await third.connect()
        assert connected
        assert await third.receive_nothing(0.2), "a free place again: the page stays open"
        await third.disconnect()

    async_to_sync(run)()
