"""PostgreSQL restarts while commands flow: the web answers 503 meanwhile, the workers wait it out, nothing lost or doubled.

PostgreSQL here is a scratch cluster of this test's own (initdb on a free port), so that stopping it
never disturbs the shared server other test sessions use; the web (daphne), the processor and the
projector run as real processes against it.
"""

from __future__ import annotations

import http.cookiejar
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

import psycopg
import pytest

from bank import domain, messages
from bank.command_bus import CommandBus, CommandNotConfirmed
from bank.config import KafkaSettings
from devservices.process import free_port
from tests.helpers import ROOT, Worker, read_events, wait_until, worker_env

pytestmark = pytest.mark.timeout(300)

OUTAGE = 10.0  # seconds PostgreSQL stays down


class ScratchPostgres:
    """A throwaway PostgreSQL cluster (Debian's binaries), owned by the postgres user, trust auth on 127.0.0.1."""

    def __init__(self) -> None:
        version = sorted((p.name for p in Path("/usr/lib/postgresql").iterdir() if p.name.isdigit()), key=int)[-1]
        self.bin = Path("/usr/lib/postgresql") / version / "bin"
        self.dir = Path(tempfile.mkdtemp(prefix="bank-pg-restart-"))
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/bank"
        shutil.chown(self.dir, "postgres")
        self._as_postgres(f"{self.bin}/initdb -D {self.dir}/data -U postgres --auth=trust -E UTF8 --no-sync")

    def _as_postgres(self, command: str) -> None:
        result = subprocess.run(["su", "postgres", "-c", command], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(f"{self.bin}/pg_ctl -D {self.dir}/data -l {self.dir}/log -o '{options}' -w start")

    def stop(self) -> None:
        self._as_postgres(f"{self.bin}/pg_ctl -D {self.dir}/data -m fast -w stop")

    def running(self) -> bool:
        return (self.dir / "data" / "postmaster.pid").exists()

    def remove(self) -> None:
        if self.running():
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def sql(self, query: str, *params: object) -> list[tuple[object, ...]]:
        with psycopg.connect(self.url, connect_timeout=5) as conn:
            return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


@pytest.fixture
def scratch_postgres() -> Iterator[ScratchPostgres]:
    cluster = ScratchPostgres()
    try:
        cluster.start()
        with psycopg.connect(cluster.url.replace("/bank", "/postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bank")
        yield cluster
    finally:
        cluster.remove()


class Browser:
    """A logged-in customer over real HTTP (urllib, with cookies), sending the forms as htmx does."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def csrf(self) -> str:
        return next(c.value for c in self.cookies if c.name == "csrftoken" and c.value)

    def post(self, path: str, data: dict[str, str], htmx: bool = True) -> int:
        headers = {"X-CSRFToken": self.csrf(), "Referer": self.base + path}
        if htmx:
            headers["HX-Request"] = "true"
        request = urllib.request.Request(
            self.base + path, urllib.parse.urlencode(data).encode(), headers=headers, method="POST"
        )
        try:
            with self.opener.open(request, timeout=30) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)

    def login(self, username: str, password: str) -> None:
        self.opener.open(self.base + "/login/", timeout=30).read()
        status = self.post("/login/", {"username": username, "password": password}, htmx=False)
        assert status == 200, status  # the redirect to the dashboard, followed


@dataclass
class Traffic:
    """Deposits sent while PostgreSQL restarts, and what came back."""

    confirmed: set[UUID] = field(default_factory=set)  # the broker has them: each must be decided once
    statuses: list[tuple[float, int]] = field(default_factory=list)  # (when, HTTP status) of the web's answers
    stop: threading.Event = field(default_factory=threading.Event)


def web_deposits(browser: Browser, account_id: UUID, traffic: Traffic) -> None:
    while not traffic.stop.is_set():
        command_id = uuid.uuid4()
        data = {"deposit-command_id": str(command_id), "deposit-amount": "1.00"}
        status = browser.post(f"/accounts/{account_id}/deposit", data)
        traffic.statuses.append((time.monotonic(), status))
        if status == 202:
            traffic.confirmed.add(command_id)
        time.sleep(0.05)


def bus_deposits(bus: CommandBus, account_id: UUID, traffic: Traffic) -> None:
    """Commands that need no database on their way in, so that the projector has work while PostgreSQL is down."""
    while not traffic.stop.is_set():
        envelope = messages.CommandEnvelope.new(domain.Deposit(account_id, 1_00), "user:demo")
        try:
            bus.send(envelope)
            traffic.confirmed.add(envelope.command_id)
        except CommandNotConfirmed:
            pass
        time.sleep(0.1)


def test_it_waits_out_a_postgresql_restart_with_503s_and_loses_or_doubles_nothing(
    kafka: KafkaSettings,
    bus: CommandBus,
    workers: Callable[..., Worker],
    scratch_postgres: ScratchPostgres,
) -> None:
    pg = scratch_postgres
    env = {"DATABASE_URL": pg.url, "DATABASE_POOL_TIMEOUT": "2"}
    for step in (["migrate", "--noinput", "-v", "0"], ["seed_demo"]):
        done = subprocess.run(
            [str(ROOT / ".venv/bin/python"), "manage.py", *step],
            env=worker_env(kafka, **env),
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
    port = free_port()
    started = [
        workers("pg-processor", ["run_processor", "--instance", "pg1"], kafka, **env),
        workers("pg-projector", ["run_projector"], kafka, **env),
        workers(
            "pg-daphne",
            ["-b", "127.0.0.1", "-p", str(port), "server.asgi:application"],
            kafka,
            program=[str(ROOT / ".venv/bin/python"), "-m", "daphne"],
            **env,
        ),
    ]
    processor, projector, web = started
    processor.wait_for_log("assigned partitions")
    projector.wait_for_log("projector assigned")
    web.wait_for_log("Listening on TCP address")

    browser = Browser(f"http://127.0.0.1:{port}")
    browser.login("demo", "demo-bank-2026")
    open_id = uuid.uuid4()
    status = browser.post("/accounts/open", {"command_id": str(open_id), "name": "Restart", "currency": "EUR"})
    assert status == 202
    account_id = uuid.uuid5(uuid.NAMESPACE_URL, f"bank:open:{open_id}")
    wait_until(lambda: pg.sql("SELECT 1 FROM projections_account WHERE id = %s", account_id), 60, what="the account")

    traffic = Traffic(confirmed={open_id})
    senders = [
        threading.Thread(target=web_deposits, args=(browser, account_id, traffic)),
        threading.Thread(target=bus_deposits, args=(bus, account_id, traffic)),
    ]
    for sender in senders:
        sender.start()
    try:
        wait_until(lambda: len(traffic.confirmed) > 10, 60, what="deposits before the restart")
        pg.stop()
        stopped_at = time.monotonic()
        wait_until(lambda: any(s == 503 and t > stopped_at for t, s in traffic.statuses), 60, what="a 503")
        wait_until(lambda: "retrying in" in projector.log(), 60, what="the projector to wait for PostgreSQL")
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - stopped_at)))
        pg.start()
        started_at = time.monotonic()
        wait_until(
            lambda: sum(1 for t, s in traffic.statuses if s == 202 and t > started_at) >= 5, 90, what="202s again"
        )
    finally:
        traffic.stop.set()
        for sender in senders:
            sender.join()
        if not pg.running():
            pg.start()

    def projected() -> set[UUID]:
        return {row[0] for row in pg.sql("SELECT command_id FROM projections_auditentry")}  # type: ignore[misc]

    wait_until(lambda: traffic.confirmed <= projected(), 120, 0.5, "every confirmed command projected")
    for worker in started:
        assert worker.process.poll() is None, f"{worker.name} exited:\n{worker.log()[-3000:]}"

    # Decided exactly once: one event per command on the log (the independent count is `confirmed`).
    decided = Counter(e.command_id for e in read_events(kafka) if e.account_id == account_id)
    assert all(decided[c] == 1 for c in traffic.confirmed), [c for c in traffic.confirmed if decided[c] != 1][:5]
    assert max(decided.values()) == 1
    # Projected exactly once: one history row per decided command, and the balance is the deposits.
    rows = pg.sql(
        "SELECT command_id, count(*) FROM projections_auditentry WHERE account_id = %s GROUP BY 1", account_id
    )
    assert {row[0]: row[1] for row in rows} == dict.fromkeys(decided, 1)
    deposits = sum(1 for e in read_events(kafka) if e.account_id == account_id and e.type == "MoneyDeposited")
    assert pg.sql("SELECT balance FROM projections_account WHERE id = %s", account_id) == [(deposits * 1_00,)]
    assert any(s == 503 for _, s in traffic.statuses)
    assert {s for _, s in traffic.statuses} <= {202, 503}, Counter(s for _, s in traffic.statuses)
    assert "Traceback" not in web.log(), web.log()[-3000:]
