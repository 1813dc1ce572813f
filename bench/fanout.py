"""Fan-out: 1,000 open pages on one web process, and how fast each gets an update.

Runs processor, projector and one daphne (as bench/latency.py does) on fresh topics and a scratch database.
This process is the browsers: one user, one account, `--pages` websockets with the session cookie, half saying
hello as the account page does and half as the dashboard (both in the account's group): first a storm of
`--storm` at once (goal: 500 connected within 10 s), then the rest in waves of `--wave` (an instant burst of
1,000 overflows one process's listen backlog). Then `--deposits` deposits through the view, `--interval` s
apart; per page and deposit, latency = the 202 of POST /accounts/<id>/deposit → that page's websocket showing
a balance (data-cents) that includes it. Also: Redis's client count before and with the pages open (the
channel layer multiplexes: it should barely move), pages told to retry (1013) or failed, daphne's CPU, and
where the time goes: 202 → the projector's push on the channel layer (a listener of this process), push →
the first and the last page. The client (1,000 sockets parsing ~60,000 messages) shares the two cores: its
delay is in every figure.

    .venv/bin/python -m bench.fanout [--pages 1000] [--storm 500] [--deposits 20]
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import redis

from bench import harness
from bench.harness import ROOT, table
from bench.latency import ORIGIN, PASSWORD, Browser, pct, quantiles, wait_for_accounts

LOGS = ROOT / "var" / "bench" / "fanout"
CENTS = re.compile(r'data-cents="(\d+)"')
TRY_AGAIN_LATER = 1013
GOAL_P99_MS = 250.0


@dataclass
class Page:
    index: int
    account_page: bool
    ws: aiohttp.ClientWebSocketResponse | None = None
    error: str = ""
    close_code: int | None = None
    updates: dict[int, float] = field(default_factory=dict)  # balance in cents -> perf_counter when first seen

    def has(self, cents: int) -> float | None:
        """When the page first showed a balance of at least `cents` (a later push includes the earlier deposits)."""
        return min((t for c, t in self.updates.items() if c >= cents), default=None)


async def open_page(session: aiohttp.ClientSession, url: str, page: Page, account: str) -> None:
    try:
        page.ws = await session.ws_connect(url, headers={"Origin": ORIGIN}, heartbeat=None)
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        page.error = f"{type(error).__name__}: {error}"[:120]
        return
    kind = "account" if page.account_page else "dashboard"
    hello = {"type": "hello", "page": kind, "account": account if page.account_page else None, "history": False}
    await page.ws.send_str(json.dumps(hello))


async def listen(page: Page) -> None:
    assert page.ws is not None
    async for message in page.ws:
        now = time.perf_counter()
        if message.type != aiohttp.WSMsgType.TEXT:
            continue
        for cents in CENTS.findall(message.data):
            page.updates.setdefault(int(cents), now)
    page.close_code = page.ws.close_code


async def storm(session: aiohttp.ClientSession, url: str, pages: list[Page], account: str) -> float:
    started = time.perf_counter()
    await asyncio.gather(*(open_page(session, url, page, account) for page in pages))
    return time.perf_counter() - started


async def deposit(browser: Browser, account: str) -> tuple[int, float]:
    """The answer's status and when it arrived."""
    data = {"deposit-amount": "1.00", "deposit-command_id": str(uuid.uuid4())}
    return await browser.post(f"/accounts/{account}/deposit", data), time.perf_counter()


def redis_clients() -> int:
    from django.conf import settings

    return int(redis.Redis.from_url(settings.REDIS_URL).info("clients")["connected_clients"])


async def listen_layer(prefix: str, account: str, pushed: dict[int, float]) -> None:
    """When the projector's push of each balance reached the channel layer (a listener of this process, as daphne)."""
    from channels_redis.pubsub import RedisPubSubChannelLayer
    from django.conf import settings

    from live.updates import account_group

    layer = RedisPubSubChannelLayer(hosts=[{"address": settings.REDIS_URL, "socket_timeout": None}], prefix=prefix)
    channel = await layer.new_channel()
    await layer.group_add(account_group(account), channel)
    while True:
        message = await layer.receive(channel)
        now = time.perf_counter()
        if (row := message.get("account")) is not None:
            pushed.setdefault(int(row["balance"]), now)


async def measure(args: Any, port: int, workers: list[harness.Process]) -> dict[str, Any]:
    from django.contrib.auth.models import User

    base, url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws/live/"
    username = f"fanout-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(User.objects.create_user, username, password=PASSWORD)
    cpu = harness.CpuMeter({"daphne": workers[-1].pid, "load generator": os.getpid()})  # daphne starts last
    connector = aiohttp.TCPConnector(limit=0)  # every page its own connection, as browsers
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        browser = Browser(base, session)
        browser.csrf = await harness.log_in(session, base, username, PASSWORD)
        account = await browser.open_account("Fan-out")
        await wait_for_accounts([account], workers)
        await deposit(browser, account)  # warm-up: the view's producer, the first renders
        clients_before = await asyncio.to_thread(redis_clients)

        pages = [Page(i, account_page=i % 2 == 0) for i in range(args.pages)]
        storm_s = await storm(session, url, pages[: args.storm], account)
        storm_ok = sum(1 for p in pages[: args.storm] if p.ws is not None)
        print(f"  storm: {storm_ok} of {args.storm} pages connected in {storm_s:.1f} s", flush=True)
        opening = time.perf_counter()
        for start in range(args.storm, args.pages, args.wave):
            await storm(session, url, pages[start : start + args.wave], account)
        open_s = time.perf_counter() - opening + storm_s
        listeners = [asyncio.create_task(listen(p)) for p in pages if p.ws is not None]
        await asyncio.sleep(args.settle)  # the hellos' catch-up answers, and any 1013 closes
        connected = [p for p in pages if p.ws is not None and p.close_code is None and not p.ws.closed]
        clients_open = await asyncio.to_thread(redis_clients)
        print(
            f"  {len(connected)} of {args.pages} pages open after {open_s:.1f} s; "
            f"Redis clients {clients_before} before, {clients_open} with the pages open",
            flush=True,
        )

        pushed: dict[int, float] = {}  # balance in cents -> when its push reached the channel layer
        layer_listener = asyncio.create_task(listen_layer(workers[-1].env["CHANNELS_PREFIX"], account, pushed))
        await asyncio.sleep(0.2)  # subscribed
        cpu.restart()
        sent: list[tuple[int, int, float]] = []  # (balance in cents after it, status, t_accepted)
        for n in range(args.deposits):
            status, accepted_at = await deposit(browser, account)
            sent.append(((n + 2) * 100, status, accepted_at))  # after the warm-up's 1.00 and n + 1 deposits
            await asyncio.sleep(args.interval)
        accepted = {cents: t for cents, status, t in sent if status == 202}
        deadline = time.perf_counter() + args.drain
        while time.perf_counter() < deadline:
            if all(p.has(c) is not None for p in connected for c in accepted):
                break
            await asyncio.sleep(0.05)
        cpu_busy = cpu.busy()
        layer_listener.cancel()
        for page in pages:
            if page.ws is not None:
                await page.ws.close()
        await asyncio.gather(*listeners, layer_listener, return_exceptions=True)

    arrivals = {(page.index, c): page.has(c) for page in connected for c in accepted}
    latencies = [(when - accepted[c]) * 1000 for (_, c), when in arrivals.items() if when is not None]

    # Per deposit: its first page (the pipeline: view, Kafka, processor, projector, push) and its
    # last page (plus the fan-out inside daphne: every page's frames go out one after another).
    def spread(c: int) -> list[float]:
        return [w - accepted[c] for (_, cents), w in arrivals.items() if cents == c and w is not None]

    first = [min(spread(c)) for c in accepted if spread(c)]
    last = [max(spread(c)) for c in accepted if spread(c)]
    # The pipeline (view's 202 → the projector's push on the channel layer), then daphne's part (push → pages).
    to_push = [(pushed[c] - accepted[c]) * 1000 for c in accepted if c in pushed]
    push_to_first = [(min(spread(c)) + accepted[c] - pushed[c]) * 1000 for c in accepted if c in pushed and spread(c)]
    push_to_last = [(max(spread(c)) + accepted[c] - pushed[c]) * 1000 for c in accepted if c in pushed and spread(c)]
    expected = len(connected) * len(accepted)
    by_kind = {
        kind: sum(1 for p in connected if p.account_page == (kind == "account page") for c in accepted if p.has(c))
        for kind in ("account page", "dashboard")
    }
    return {
        "pages": args.pages,
        "storm": {"pages": args.storm, "connected": storm_ok, "seconds": round(storm_s, 2)},
        "open": {
            "connected": len(connected),
            "seconds": round(open_s, 2),
            "refused_1013": sum(1 for p in pages if p.close_code == TRY_AGAIN_LATER),
            "failed_handshakes": sum(1 for p in pages if p.ws is None),
            "errors": sorted({p.error for p in pages if p.error})[:5],
        },
        "redis_clients": {"before": clients_before, "pages_open": clients_open},
        "deposits": {"sent": len(sent), "accepted_202": len(accepted), "interval_s": args.interval},
        "updates": {"delivered": len(latencies), "expected": expected, **by_kind},
        "latency_ms": quantiles(latencies, (50, 99))
        | {"max": round(max(latencies), 1) if latencies else None}
        | {"mean": round(statistics.fmean(latencies), 1) if latencies else None},
        "first_page_ms": {"p50": round((pct(first, 50) or 0) * 1000, 1), "max": round(max(first, default=0) * 1000, 1)},
        "last_page_ms": {"p50": round((pct(last, 50) or 0) * 1000, 1), "max": round(max(last, default=0) * 1000, 1)},
        "per_deposit_first_last_ms": [
            [round(min(spread(c)) * 1000), round(max(spread(c)) * 1000)] for c in sorted(accepted) if spread(c)
        ],
        "stages_ms": {
            "202→pushed": quantiles(to_push, (50, 99)),
            "pushed→first page": quantiles(push_to_first, (50, 99)),
            "pushed→last page": quantiles(push_to_last, (50, 99)),
        },
        "cpu_cores_busy_while_sending": cpu_busy,
    }


def main() -> None:
    args = harness.arguments(
        __doc__, pages=1000, storm=500, wave=250, deposits=20, interval=0.5, settle=2.0, drain=15.0, database=None
    )
    if not 0 < args.storm <= args.pages or args.wave < 1 or args.deposits < 1:
        raise SystemExit("need 0 < storm <= pages, wave >= 1, deposits >= 1")
    harness.setup_django()
    with harness.bank_processes("fanout", args.database, LOGS) as (_, port, workers):
        figures = asyncio.run(measure(args, port, workers))
    figures["worker_tracebacks"] = harness.tracebacks(workers)
    figures["load_average_1m"] = round(os.getloadavg()[0], 2)
    figures["cpus"] = os.cpu_count()
    storm, opened, redis_clients = figures["storm"], figures["open"], figures["redis_clients"]
    lat, upd, first, last = figures["latency_ms"], figures["updates"], figures["first_page_ms"], figures["last_page_ms"]
    figures["meets"] = {
        "storm_all_connected_within_10s": storm["connected"] == args.storm and storm["seconds"] <= 10,
        "all_pages_open": opened["connected"] == args.pages,
        "every_update_delivered": upd["delivered"] == upd["expected"] > 0,
        "p99_under_250ms": lat["p99"] is not None and lat["p99"] < GOAL_P99_MS,
    }
    print(
        f"fan-out on one daphne: {args.pages} pages (half account page, half dashboard) on one account, "
        f"{args.deposits} deposits, load average {figures['load_average_1m']}"
    )
    rows = [
        ("storm", f"{storm['connected']} of {args.storm} connected in {storm['seconds']} s"),
        (
            "pages open",
            f"{opened['connected']} of {args.pages} ({opened['refused_1013']} told to retry (1013), "
            f"{opened['failed_handshakes']} failed handshakes) in {opened['seconds']} s",
        ),
        ("Redis clients", f"{redis_clients['before']} before the pages, {redis_clients['pages_open']} with them open"),
        ("updates delivered", f"{upd['delivered']} / {upd['expected']} expected"),
        (
            "202 -> page update",
            f"p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms (goal p99 < {GOAL_P99_MS:.0f} ms)",
        ),
        (
            "per deposit",
            f"first page p50 {first['p50']} ms (max {first['max']}), last page p50 {last['p50']} ms (max {last['max']})",
        ),
        (
            "where the time goes",
            ", ".join(f"{k} p50 {v['p50']} / p99 {v['p99']} ms" for k, v in figures["stages_ms"].items()),
        ),
        (
            "CPU while sending",
            ", ".join(f"{k} {v:.2f}" for k, v in figures["cpu_cores_busy_while_sending"].items()) + " cores",
        ),
        ("meets", ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in figures["meets"].items())),
    ]
    print(table(rows))
    if figures["worker_tracebacks"]:
        print(f"tracebacks in the workers' logs: {figures['worker_tracebacks']}")
    harness.write_results("fanout", figures)


if __name__ == "__main__":
    main()
