"""Websocket limits on a real daphne: oversized and malformed frames past the limit free their slots."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Callable

import aiohttp
import pytest
from django.contrib.auth.models import User

from bank.config import KafkaSettings
from devservices.process import free_port
from live.websocket import MESSAGE_TOO_BIG, TRY_AGAIN_LATER
from tests.helpers import Worker, logged_in

pytestmark = pytest.mark.django_db(transaction=True)
LIMIT = 3
TOKEN = "websocket-limits-test-token"


def open_gauge(base: str) -> float:
    import urllib.request

    request = urllib.request.Request(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read().decode()
    found = re.search(r"^bank_websockets_open(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
    assert found, text[:500]
    return float(found.group(1))


def test_it_frees_the_slots_of_oversized_and_malformed_frames(
    users: dict[str, User], kafka: KafkaSettings, workers: Callable[..., Worker]
) -> None:
    port = free_port()
    web = workers(
        "daphne-limits",
        ["-b", "127.0.0.1", "-p", str(port), "server.asgi:application"],
        kafka,
        program=[sys.executable, "-m", "daphne"],
        LIVE_MAX_SOCKETS=str(LIMIT),
        METRICS_TOKEN=TOKEN,
    )
    web.wait_for_log("Listening on TCP address")
    base = f"http://127.0.0.1:{port}"
    headers = {"Origin": base, "Cookie": f"sessionid={logged_in(users['alice']).cookies['sessionid'].value}"}

    async def run() -> None:
        async with aiohttp.ClientSession() as http:

            async def socket() -> aiohttp.ClientWebSocketResponse:
                return await http.ws_connect(f"ws://127.0.0.1:{port}/ws/live/", headers=headers)

            for n in range(LIMIT * 3):  # past the limit, each would have leaked its slot
                ws = await socket()
                await ws.send_str("x" * 100_000 if n % 2 else "[" * 50_000)
                closed = await ws.receive(timeout=5)
                assert closed.type is aiohttp.WSMsgType.CLOSE and closed.data == MESSAGE_TOO_BIG, closed
                await ws.close()
            for frame in (b"\x00\xff binary", "not json {", '{"type": "hello", "pending": [[1, 2]] }'):
                ws = await socket()
                await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
                await ws.close()
            await asyncio.sleep(0.5)
            assert open_gauge(base) == 0
            pages = [await socket() for _ in range(LIMIT)]
            for ws in pages:
                await ws.send_str('{"type": "hello", "page": "dashboard"}')
                assert (await ws.receive(timeout=5)).type is aiohttp.WSMsgType.TEXT  # live, not refused
            assert open_gauge(base) == LIMIT
            extra = await socket()
            refused = await extra.receive(timeout=5)
            assert refused.type is aiohttp.WSMsgType.CLOSE and refused.data == TRY_AGAIN_LATER, refused
            for ws in pages:
                await ws.close()
            await asyncio.sleep(0.5)
            assert open_gauge(base) == 0
            async with http.get(f"{base}/", headers={"Cookie": headers["Cookie"]}) as page:
                assert page.status == 200

    asyncio.run(run())
    assert "Traceback" not in web.log(), web.log()[-3000:]


def test_it_refuses_an_oversized_post_before_reading_it(
    users: dict[str, User], kafka: KafkaSettings, workers: Callable[..., Worker]
) -> None:
    import socket
    import time

    port = free_port()
    web = workers(
        "daphne-body",
        ["-b", "127.0.0.1", "-p", str(port), "server.asgi:application"],
        kafka,
        program=[sys.executable, "-m", "daphne"],
    )
    web.wait_for_log("Listening on TCP address")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        started = time.monotonic()
        head = b"POST /login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        conn.sendall(head + b"Content-Length: 150000000\r\n\r\n" + b"x" * 10_000)  # 150 MB announced, 10 KB sent
        answer = conn.recv(4096)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert time.monotonic() - started < 5  # answered without waiting for the rest of the body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 60_000
        answer = b""
        try:
            for _ in range(5):  # 300 KB in chunks, over the 64 KB cap
                conn.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            answer = conn.recv(4096)
        except OSError:  # closed while sending: refused too
            answer = answer or b"HTTP/1.1 413 (connection closed)"
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert "Traceback" not in web.log(), web.log()[-3000:]
