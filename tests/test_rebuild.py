"""Online rebuilds (projections/generations.py): the next generation is filled, caught up and swapped in while the
projector, the processor and the pages go on; kills, rollbacks, a second rebuild, a new projection backfilled."""

from __future__ import annotations

import asyncio
import io
import re
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import aiohttp
import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection

from bank import domain
from bank.command_bus import CommandBus
from bank.config import KafkaSettings
from bank.kafka import end_offsets
from ops.status import rebuild_lines
from projections.models import Account, DailyBalance, Generation
from tests.helpers import (
    ROOT,
    Worker,
    logged_in,
    manage,
    opened_accounts,
    raw_events,
    send,
    stream_commands,
    wait_until,
    worker_env,
)
from tests.test_projector import caught_up, expected_rows, projected_rows

pytestmark = [pytest.mark.timeout(300), pytest.mark.django_db(transaction=True)]

MONEY_IN = {"MoneyDeposited", "TransferCredited", "TransferRefunded"}
MONEY_OUT = {"MoneyWithdrawn", "TransferDebited"}


@pytest.fixture(autouse=True)
def no_generations_left() -> Iterator[None]:
    """Generation schemas are not truncated between tests as tables are: dropped after each test."""
    yield
    with connection.cursor() as cursor:
        cursor.execute("SELECT nspname FROM pg_namespace WHERE nspname ~ '^(projections_g[0-9]+|replay_verify_.*)$'")
        for (name,) in cursor.fetchall():
            cursor.execute(f"DROP SCHEMA {name} CASCADE")


def rebuild(kafka: KafkaSettings, *args: str, timeout: float = 240, **env: str) -> subprocess.CompletedProcess[str]:
    """`manage.py rebuild` as an operator runs it: its own process."""
    return subprocess.run(
        manage("rebuild", "--no-progress", *args),
        env=worker_env(kafka, **env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def expected_days(events: list[dict[str, Any]]) -> dict[tuple[UUID, Any], tuple[int, int, int, int]]:
    """(account, UTC day) → (closing balance, money in, money out, entries), folded by hand from the events' JSON."""
    days: dict[tuple[UUID, Any], list[int]] = {}
    last: dict[UUID, tuple[int, int]] = {}  # account → (sequence, balance)
    for e in events:
        account, data = UUID(e["account_id"]), e["data"]
        sequence, balance = last.get(account, (0, 0))
        if e["sequence"] <= sequence:
            continue
        balance = data.get("balance", balance)
        last[account] = (e["sequence"], balance)
        day = datetime.fromisoformat(e["occurred_at"]).astimezone(UTC).date()
        row = days.setdefault((account, day), [0, 0, 0, 0])
        row[0] = balance
        if e["type"] in MONEY_IN:
            row[1] += data["amount"]
            row[3] += 1
        elif e["type"] in MONEY_OUT:
            row[2] += data["amount"]
            row[3] += 1
    return {key: (row[0], row[1], row[2], row[3]) for key, row in days.items()}


def projected_days() -> dict[tuple[UUID, Any], tuple[int, int, int, int]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT account_id, day, closing_balance, money_in, money_out, entries FROM projections_dailybalance"
        )
        return {(r[0], r[1]): tuple(r[2:]) for r in cursor.fetchall()}  # type: ignore[misc]


def expected_transfers(events: list[dict[str, Any]]) -> Counter[tuple[Any, ...]]:
    """(source, destination, amount, status) of each transfer, by the events each has (a hand fold)."""
    seen: dict[str, dict[str, Any]] = {}
    for e in events:
        if not e["type"].startswith("Transfer"):
            continue
        data = e["data"]
        t = seen.setdefault(f"{data['transfer_id']}", {"types": set(), "amount": data["amount"]})
        t["types"].add(e["type"])
        if e["type"] == "TransferDebited":
            t["from"], t["to"] = UUID(e["account_id"]), UUID(data["to_account"])
    order = ["TransferRefunded", "TransferCompleted", "TransferRefused", "TransferCredited", "TransferDebited"]
    names = {"TransferRefunded": "refunded", "TransferCompleted": "completed", "TransferRefused": "refused"}
    names |= {"TransferCredited": "credited", "TransferDebited": "sent"}
    return Counter(
        (t["from"], t["to"], t["amount"], names[next(o for o in order if o in t["types"])])
        for t in seen.values()
        if "from" in t
    )


def projected_transfers() -> Counter[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT from_account, to_account, amount, status FROM projections_transfer")
        return Counter(tuple(r) for r in cursor.fetchall())


def assert_live_equals_the_log(kafka: KafkaSettings) -> list[dict[str, Any]]:
    events = raw_events(kafka)
    assert projected_rows() == expected_rows(events)
    assert projected_days() == expected_days(events)
    assert projected_transfers() == expected_transfers(events)
    return events


def history(kafka: KafkaSettings, bus: CommandBus, accounts: int = 4, rounds: int = 6) -> list[UUID]:
    """Accounts with deposits, withdrawals and a transfer each, all projected."""
    ids, _ = opened_accounts(kafka, bus, accounts)
    stream_commands(bus, ids, rounds)
    for source, destination in zip(ids, ids[1:] + ids[:1], strict=True):
        send(bus, domain.TransferMoney(source, uuid.uuid4(), destination, 1_00))
    wait_until(lambda: caught_up(kafka) and len(raw_events(kafka)) >= accounts * (rounds + 4), 90, 0.3, "history")
    wait_until(lambda: caught_up(kafka), 60, 0.3, "the projector")
    return ids


class Traffic:
    """Deposits and withdrawals sent in a thread while a test does something else."""

    def __init__(self, bus: CommandBus, accounts: list[UUID], pause: float = 0.05) -> None:
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(bus, accounts, pause), daemon=True)

    def _run(self, bus: CommandBus, accounts: list[UUID], pause: float) -> None:
        while not self._stop.is_set():
            for account in accounts:
                send(bus, domain.Withdraw(account, 3_00) if self.sent % 3 == 2 else domain.Deposit(account, 2_00))
                self.sent += 1
            time.sleep(pause)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)


def settle(kafka: KafkaSettings) -> None:
    time.sleep(1.0)  # the last commands reach the log
    wait_until(lambda: caught_up(kafka), 90, 0.3, "the projector to catch up")


def generations() -> dict[str, tuple[int, int | None]]:
    return {g.projection: (g.live, g.old) for g in Generation.objects.all()}


def test_it_rebuilds_every_projection_while_commands_flow_and_rolls_back_and_drops_the_old(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker, projector: Worker
) -> None:
    accounts = history(kafka, bus)
    with Traffic(bus, accounts[:2]):
        done = rebuild(kafka)
        assert done.returncode == 0, done.stderr
    assert "starting clean" in done.stdout
    assert "rebuilt accounts, audit, transfers, daily_balances as g2" in done.stdout, done.stdout
    settle(kafka)
    assert generations() == {p: (2, 1) for p in ("accounts", "audit", "transfers", "daily_balances")}
    assert_live_equals_the_log(kafka)

    refused = rebuild(kafka, "--projection", "accounts")
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1].startswith("CommandError: the previous generation of accounts (g1)")

    with Traffic(bus, accounts[2:]):  # the live generation moves on: the kept one must catch up before it is swapped
        back = rebuild(kafka, "--rollback", "--projection", "accounts", "--projection", "audit")
    assert back.returncode == 0, back.stderr
    assert "accounts: g1 live again" in back.stdout
    settle(kafka)
    assert generations()["accounts"] == (1, 2) and generations()["transfers"] == (2, 1)
    assert_live_equals_the_log(kafka)

    dropped = rebuild(kafka, "--drop-old", "--noinput")
    assert dropped.returncode == 0, dropped.stderr
    assert "accounts: g2 dropped (g1 live)" in dropped.stdout and "transfers: g1 dropped (g2 live)" in dropped.stdout
    assert all(old is None for _, old in generations().values())
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_tables WHERE schemaname ~ '^projections_g'")
        assert cursor.fetchone()[0] == 0
    nothing = rebuild(kafka, "--rollback")
    assert nothing.returncode != 0 and "no previous generation is kept" in nothing.stderr
    send(bus, domain.Deposit(accounts[0], 5_00))
    settle(kafka)
    assert_live_equals_the_log(kafka)


def test_it_backfills_daily_balances_online_on_a_log_that_has_history(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker, projector: Worker
) -> None:
    # A bank from before the projection existed: its migration leaves it not deployed on a log with history.
    Generation.objects.create(projection="daily_balances", live=0)
    accounts = history(kafka, bus)
    assert not DailyBalance.objects.exists(), "the projector leaves a projection that is not deployed alone"

    with Traffic(bus, accounts):
        done = rebuild(kafka, "--projection", "daily_balances")
    assert done.returncode == 0, done.stderr
    assert generations() == {"daily_balances": (2, 0)}
    settle(kafka)
    events = assert_live_equals_the_log(kafka)
    days = projected_days()
    moved = [e for e in events if e["type"] in MONEY_IN | MONEY_OUT]
    assert len(days) >= len(accounts) and sum(row[3] for row in days.values()) == len(moved) > 40
    # And by plain SQL over the audit history: money in, money out and entries per account and day.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT account_id, (occurred_at AT TIME ZONE 'UTC')::date, "
            "coalesce(sum(amount) FILTER (WHERE type = ANY(%s)), 0), coalesce(sum(amount) FILTER (WHERE type = ANY(%s)), 0), "
            "count(*) FILTER (WHERE type = ANY(%s)) FROM projections_auditentry GROUP BY 1, 2",
            [list(MONEY_IN), list(MONEY_OUT), list(MONEY_IN | MONEY_OUT)],
        )
        from_audit = {(r[0], r[1]): tuple(r[2:]) for r in cursor.fetchall()}
    assert {key: row[1:] for key, row in days.items()} == from_audit


@pytest.mark.parametrize("phase", ["fill", "catch-up", "swap"])
def test_a_rebuild_killed_in_any_phase_leaves_the_live_generation_and_the_rerun_starts_clean(
    phase: str,
    kafka: KafkaSettings,
    bus: CommandBus,
    processor: Worker,
    workers: Callable[..., Worker],
    users: dict[str, User],
) -> None:
    projector = workers("projector", ["run_projector"], kafka)
    projector.wait_for_log("projector assigned")
    accounts = history(kafka, bus, accounts=3, rounds=3)
    stopped = workers("rebuild-killed", ["rebuild", "--no-progress"], kafka, REBUILD_FAULT_PAUSE=phase)
    stopped.wait_for_log(f"pausing in {phase}", timeout=120)

    second = io_error(lambda: call_command("rebuild", "--no-progress"))
    assert "another rebuild is running (g2 of accounts, audit, transfers, daily_balances" in second
    assert second.endswith("rebuild not started") and "\n" not in second

    # The phase, in bank_status and on the admin's operations page (paused inside the swap, the tables are locked
    # for as long as the pause: only the rebuild's lines, which do not read them).
    running = f"rebuild g2 of accounts, audit, transfers, daily_balances: {phase} ("
    assert any(line.startswith(running) for line in rebuild_lines(kafka))
    if phase != "swap":
        status = io.StringIO()
        call_command("bank_status", stdout=status)
        assert running in status.getvalue()
        assert running in logged_in(users["carol"]).get("/admin/operations/").content.decode()

    stopped.signal(signal.SIGKILL)
    stopped.process.wait(10)
    status = io.StringIO()
    call_command("bank_status", stdout=status)
    assert f"daily_balances: stopped in {phase} (" in status.getvalue()
    send(bus, domain.Deposit(accounts[0], 3_00))  # the live generation still serves and moves
    settle(kafka)
    assert generations() == {}
    assert_live_equals_the_log(kafka)

    with Traffic(bus, accounts):
        rerun = rebuild(kafka)
    assert rerun.returncode == 0, rerun.stderr
    left = "projections_g2" if phase != "fill" else "nothing"
    assert (
        f"starting clean: the previous rebuild (g2 of accounts, audit, transfers, daily_balances stopped in {phase}) left {left}, dropped"
        in rerun.stdout
    )
    assert "as g2" in rerun.stdout
    settle(kafka)
    assert_live_equals_the_log(kafka)


def io_error(call: Callable[[], object]) -> str:
    with pytest.raises(CommandError) as refused:
        call()
    return str(refused.value)


def test_verify_and_until_build_generations_that_never_go_live_without_stopping_the_projector(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker, projector: Worker, workers: Callable[..., Worker]
) -> None:
    accounts = history(kafka, bus, accounts=3, rounds=3)
    moment = datetime.now(UTC).isoformat()
    for args, name in ((["--verify"], "verify"), (["--until", moment, "--schema", "asof_test"], "until")):
        paused = workers(
            f"replay-{name}",
            ["replay", "--no-progress", *args],
            kafka,
            REBUILD_FAULT_PAUSE="fill",
            REBUILD_FAULT_SECONDS="6",
        )
        paused.wait_for_log("pausing in fill", timeout=120)
        before = len(raw_events(kafka))
        send(bus, domain.Deposit(accounts[1], 2_00))
        # While the replay holds its transaction open, the live projector applies the deposit.
        wait_until(lambda n=before: len(raw_events(kafka)) > n and caught_up(kafka), 5, 0.2, "the deposit projected")  # type: ignore[misc]
        assert paused.alive(), "the replay was still paused when the deposit went live"
        wait_until(lambda p=paused: not p.alive(), 120, 0.5, f"replay {name}")  # type: ignore[misc]
        assert paused.process.returncode == 0, paused.tail()
        if name == "verify":
            for table in (
                "projections_account",
                "projections_auditentry",
                "projections_transfer",
                "projections_dailybalance",
            ):
                assert f"{table}: identical to a fresh replay" in paused.log()
    assert_live_equals_the_log(kafka)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM asof_test.projections_auditentry")
        assert 0 < cursor.fetchone()[0] < len(raw_events(kafka))
        cursor.execute("DROP SCHEMA asof_test CASCADE")


def test_it_rebuilds_every_projection_while_customers_use_the_web_and_a_page_is_open(
    bank_server: str, kafka: KafkaSettings, bus: CommandBus, users: dict[str, User]
) -> None:
    """Deposits, withdrawals and transfers through the web, an account page's websocket open, pages loading, all
    through a rebuild of every projection: no page fails, every new history row reaches the page once."""
    history(kafka, bus, accounts=4, rounds=4)
    client = logged_in(users["alice"])
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    token = "t" * 32
    headers = {"Cookie": f"{cookie}; csrftoken={token}", "X-CSRFToken": token, "HX-Request": "true"}
    for name in ("Main", "Savings"):
        opened = client.post("/accounts/open", {"name": name, "currency": "EUR", "command_id": str(uuid.uuid4())})
        assert opened.status_code in (202, 303)
    wait_until(lambda: Account.objects.filter(owner=str(users["alice"].pk)).count() == 2, 30, what="two accounts")
    main, savings = (str(a.id) for a in Account.objects.filter(owner=str(users["alice"].pk)).order_by("name"))
    answers: Counter[int] = Counter()
    loads: list[tuple[int, float]] = []
    received: list[str] = []
    done = threading.Event()

    async def customer() -> None:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(
                bank_server.replace("http://", "ws://") + "/ws/live/", headers={"Cookie": cookie, "Origin": bank_server}
            )
            await ws.send_json({"type": "hello", "page": "account", "account": main, "history": True})

            async def listen() -> None:
                async for message in ws:
                    if message.type == aiohttp.WSMsgType.TEXT:
                        received.append(message.data)

            listening = asyncio.create_task(listen())
            await asyncio.sleep(1.0)  # the hello's own catch-up first
            received.clear()
            i = 0
            while not done.is_set() or i < 20:
                i += 1
                if i % 5 == 0:
                    path, form = "transfer", {"transfer-amount": "0.50", "transfer-to_own": savings}
                elif i % 3 == 0:
                    path, form = "withdraw", {"withdraw-amount": "0.70"}
                else:
                    path, form = "deposit", {"deposit-amount": "1.00"}
                form[f"{path}-command_id"] = str(uuid.uuid4())
                async with session.post(f"{bank_server}/accounts/{main}/{path}", data=form, headers=headers) as answer:
                    answers[answer.status] += 1
                started = time.perf_counter()
                async with session.get(f"{bank_server}/accounts/{main}/", headers={"Cookie": cookie}) as page:
                    await page.read()
                    loads.append((page.status, time.perf_counter() - started))
                await asyncio.sleep(0.1)
            await asyncio.sleep(3.0)  # the last updates
            await ws.close()
            await listening

    browsing = threading.Thread(target=async_to_sync(customer))
    browsing.start()
    time.sleep(2.0)
    rebuilt = rebuild(kafka)
    time.sleep(2.0)
    done.set()
    browsing.join(120)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "as g2" in rebuilt.stdout
    assert set(answers) == {202}, answers
    assert {status for status, _ in loads} == {200} and len(loads) >= 20
    settle(kafka)
    assert_live_equals_the_log(kafka)
    # Every history row of the account written after the page opened reached it, none twice.
    pushed = Counter(match for text in received for match in re.findall(r'id="entry-([0-9a-f-]{36})"', text))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT event_id::text FROM projections_auditentry WHERE account_id = %s AND type <> 'AccountOpened'",
            [main],
        )
        rows = {r[0] for r in cursor.fetchall()}
    assert rows and set(pushed) == rows, (len(rows), len(pushed))
    assert max(pushed.values()) == 1


def test_a_row_the_database_refuses_fails_the_rebuild_not_the_bank(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker, projector: Worker
) -> None:
    accounts = history(kafka, bus, accounts=2, rounds=3)
    with connection.cursor() as cursor:  # a rule the history breaks (deposits of 10.00): new rows must keep it
        cursor.execute(
            "ALTER TABLE projections_auditentry ADD CONSTRAINT small CHECK (amount IS NULL OR amount < 1000) NOT VALID"
        )
    failed = rebuild(kafka, "--projection", "audit")
    assert failed.returncode != 0
    assert (
        failed.stderr.strip()
        .splitlines()[-1]
        .startswith("CommandError: rebuild failed, the live generation is untouched: new row for relation")
    ), failed.stderr
    assert generations() == {}
    assert any("failed" in line for line in rebuild_lines(kafka))
    send(bus, domain.Deposit(accounts[0], 5_00))  # the bank goes on
    settle(kafka)
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE projections_auditentry DROP CONSTRAINT small")
    assert_live_equals_the_log(kafka)
    again = rebuild(kafka, "--projection", "audit")
    assert again.returncode == 0, again.stderr
    assert "starting clean" in again.stdout and "rebuilt audit as g2" in again.stdout


def test_a_swap_refuses_a_generation_behind_the_live_one_or_from_another_log(kafka: KafkaSettings) -> None:
    from projections.generations import RebuildRefused, check_swappable

    ends = end_offsets(kafka, kafka.events_topic)
    with pytest.raises(RebuildRefused, match="behind the live one"):
        check_swappable(kafka, dict.fromkeys(ends, 0), {p: 5 for p in ends})
    with pytest.raises(RebuildRefused, match=r"past the end of .* it read another log"):
        check_swappable(kafka, {p: ends[p] + 10 for p in ends}, dict.fromkeys(ends, 0))
    check_swappable(kafka, dict(ends), dict(ends))  # at the live position, within the log: swappable
