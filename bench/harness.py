"""The benchmarks' harness: processes (devservices/workers.py, shared with the tests), waits, login, CPU, Kafka,
results, scratch data.

Importing it sets nothing up: a benchmark's `main()` calls `setup_django()`, then imports what needs Django.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import re
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from bank import domain, messages
from devservices.workers import ROOT, Process, manage, wait_until, worker_env

if TYPE_CHECKING:
    import aiohttp
    from confluent_kafka import Producer

    from bank.config import KafkaSettings

# BENCH_RESULTS_DIR lets the smoke test write elsewhere than the committed figures.
RESULTS = Path(os.environ.get("BENCH_RESULTS_DIR") or ROOT / "bench" / "results")


def arguments(doc: str | None, **defaults: Any) -> argparse.Namespace:
    """The command line: one `--dashed-name` per keyword, typed by its default (False: a flag; None: text)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in defaults.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true")
        else:
            parser.add_argument(flag, type=str if default is None else type(default), default=default)
    return parser.parse_args()


# --- processes and waits ---


def daphne(port: int) -> list[str]:
    return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "server.asgi:application"]


def web_processes_default() -> int:
    """The N of "1 and N web processes": WEB_PROCESSES, else one per core, as ./run deploys it."""
    from server.supervise import default_web_processes

    return default_web_processes()


class WebTier(Process):
    """`processes` daphne processes sharing one port under supervisord (`server/supervise.py`: fcgi-program,
    `daphne --fd 0`), as ./run and the web container run them; `pids` are the daphne processes."""

    def __init__(self, port: int, processes: int, env: dict[str, str], logs: Path) -> None:
        from server.supervise import config

        state = logs / f"web-{processes}"
        shutil.rmtree(state, ignore_errors=True)  # supervisord appends to its logs: this run's only
        (state / "supervisor").mkdir(parents=True)
        conf = state / "supervisor" / "supervisord.conf"
        conf.write_text(config(state, port=port, web_processes=processes, only=("web",), startsecs=1, logs=state))
        super().__init__(
            f"web-{processes}", [str(Path(sys.executable).with_name("supervisord")), "-c", str(conf)], env, logs
        )
        self.web_log = state / "web.log"
        self.port, self.processes = port, processes
        self.pids: list[int] = []

    def serving(self, timeout: float = 60.0) -> None:
        """Until the port answers and all `processes` daphne processes run."""
        serving(f"http://127.0.0.1:{self.port}", self, timeout)

        def started() -> list[int]:
            children = [c.pid for c in psutil.Process(self.pid).children() if "daphne" in " ".join(c.cmdline())]
            return children if len(children) == self.processes else []

        self.pids = wait_until(started, timeout, 0.1, f"{self.processes} daphne processes")

    def log(self) -> str:
        """supervisord's log and the daphne processes' output (tracebacks are counted over both)."""
        web = self.web_log.read_text(errors="replace") if self.web_log.exists() else ""
        return super().log() + web


def production_env(kafka: KafkaSettings, database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """`worker_env` as deployed: DEBUG off (it would keep every SQL query), a throwaway key, warnings only."""
    extra = {"DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": secrets.token_hex(32), "LOG_LEVEL": "WARNING", **extra}
    return worker_env(kafka, database_url, redis_url, **extra)


@contextlib.contextmanager
def bank_processes(
    name: str, database: str | None, logs: Path, web_processes: int | None = None
) -> Iterator[tuple[KafkaSettings, int, list[Process]]]:
    """The bank as processes (processor, projector, daphne; as deployed) on fresh topics, the scratch database
    `database` (default: DATABASE_URL's + _bench) and a channel-layer prefix of its own: (kafka, port, workers).
    With `web_processes`, the web is that many daphne processes sharing the port under supervisord (a `WebTier`,
    last of the workers) instead of one plain daphne."""
    from django.conf import settings

    from devservices.process import free_port

    kafka = fresh_kafka(name)
    database_url = use_bench_database(database or scratch_name("bench"))
    prefix = f"bench-{name}-{uuid.uuid4().hex[:8]}"
    env = production_env(kafka, database_url, settings.REDIS_URL, CHANNELS_PREFIX=prefix)
    port = free_port()
    workers: list[Process] = []
    try:
        for worker, argv in (
            ("processor", manage("run_processor", "--instance", f"{name}-{port}")),
            ("projector", manage("run_projector")),
        ):
            workers.append(Process(worker, argv, env, logs))
        if web_processes is None:
            workers.append(Process("daphne", daphne(port), env, logs))
            serving(f"http://127.0.0.1:{port}", workers[-1])
        else:
            workers.append(web := WebTier(port, web_processes, env, logs))
            web.serving()
        yield kafka, port, workers
    finally:
        for worker_process in workers:
            worker_process.stop()


def cpu_pids(workers: list[Process]) -> dict[str, int]:
    """The processes to meter: each worker, and each daphne of a web tier rather than its supervisord."""
    pids: dict[str, int] = {}
    for w in workers:
        if isinstance(w, WebTier):
            pids |= {f"daphne-{i}": pid for i, pid in enumerate(w.pids)}
        else:
            pids[w.name] = w.pid
    return pids


def tracebacks(workers: list[Process]) -> dict[str, int]:
    """Tracebacks per worker log: a benchmark reports them rather than hide a crash behind its figures."""
    return {w.name: n for w in workers if (n := w.log().count("Traceback"))}


def serving(base: str, process: Process, timeout: float = 60.0) -> None:
    """Until `base`/healthz answers 200; fails at once if the server exits."""
    import urllib.request

    def up() -> bool:
        if not process.alive():
            raise SystemExit(f"{process.name} exited:\n{process.tail()}")
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    wait_until(up, timeout, 0.1, f"{base}/healthz")


# --- the login client ---


async def log_in(session: aiohttp.ClientSession, base: str, username: str, password: str) -> str:
    """Log in like a browser (GET the form for the CSRF cookie, POST it); the CSRF token to send from now on."""

    def cookie(name: str) -> str | None:
        return next((c.value for c in session.cookie_jar if c.key == name), None)

    async with session.get(f"{base}/login/") as response:
        await response.read()
    form = {"username": username, "password": password, "csrfmiddlewaretoken": cookie("csrftoken") or ""}
    async with session.post(f"{base}/login/", data=form, allow_redirects=False) as response:
        await response.read()
        if response.status != 302 or cookie("sessionid") is None:
            raise SystemExit(f"logging in as {username} answered {response.status} with no session")
    return cookie("csrftoken") or ""  # login rotates the token: the new one


# --- CPU ---


class CpuMeter:
    """CPU time of named processes: cores busy over a stretch of time (1.0 = one core)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.restart()

    def _sample(self) -> tuple[float, dict[str, float]]:
        times = {}
        for name, process in self.processes.items():
            try:
                times[name] = sum(process.cpu_times()[:2])  # user + system
            except psutil.Error:
                continue
        return time.perf_counter(), times

    def restart(self) -> None:
        self.started = self._sample()

    def busy(self) -> dict[str, float]:
        """Cores busy per process since the last `restart()` (or since the meter was made)."""
        (t0, first), (t1, second) = self.started, self._sample()
        return {n: round((second[n] - first[n]) / (t1 - t0), 2) for n in second if n in first and t1 > t0}


# --- profiles ---


def py_spy(pids: list[int], seconds: float, out: Path) -> list[subprocess.Popen[bytes]]:
    """Start `py-spy record` (samples holding the GIL, collapsed stacks) on each process for `seconds`: the files
    `<out>-<pid>.txt`. py-spy is not a requirement: `.venv/bin/pip install py-spy`."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    out.parent.mkdir(parents=True, exist_ok=True)
    record = [exe, "record", "--gil", "--nonblocking", "--format", "raw", "--rate", "250"]
    return [
        subprocess.Popen(
            [*record, "--duration", str(max(1, round(seconds))), "--pid", str(pid), "--output", f"{out}-{pid}.txt"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid in pids
    ]


# Frames nearly every sample passes through (the event loop, the server, thread start-up), and Django's
# handler and middleware chain (every request's): left out of the inclusive list.
PLUMBING = re.compile(
    r"\((asyncio|twisted|daphne|threading|runpy|<frozen runpy>|django/core/handlers)[/.)]"
    r"|__acall__|^\s*$|<module>|Thread\.run|_run_code|_run_module"
)


def profile_top(files: list[Path], lines: int = 14) -> dict[str, list[str]]:
    """The heaviest functions over py-spy's collapsed stacks: by samples inside them (`inclusive`, leaving out the
    PLUMBING frames) and by samples in their own code (`own`)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    samples = 0
    for path in files:
        for line in path.read_text().splitlines() if path.exists() else []:
            stack, _, count = line.rpartition(" ")
            n = int(count)
            samples += n
            frames = [re.sub(r":\d+\)$", ")", frame.strip()) for frame in stack.split(";")]
            own[frames[-1]] += n
            for frame in set(frames):
                inclusive[frame] += n
    if not samples:
        return {"inclusive": [], "own": []}

    def top(counts: Counter[str], skip: re.Pattern[str] | None = None) -> list[str]:
        chosen = [(f, n) for f, n in counts.most_common() if skip is None or not skip.search(f)][:lines]
        return [f"{100 * n / samples:5.1f}%  {f}" for f, n in chosen]

    return {"samples": [str(samples)], "inclusive": top(inclusive, PLUMBING), "own": top(own)}


# --- Kafka ---


def send(out: Producer, topic: str, key: bytes, value: bytes, **options: Any) -> None:
    """Produce one record, waiting for room in the producer's queue when it is full."""
    while True:
        try:
            return out.produce(topic, key=key, value=value, **options)
        except BufferError:
            out.poll(0.05)


def produce_all(out: Producer, topic: str, records: Iterable[tuple[bytes, bytes, Any]], timeout: float = 120) -> None:
    """Produce pre-encoded (key, value, headers) records and wait until every one is delivered."""
    failures: list[str] = []

    def delivered(error: Any, _message: Any) -> None:
        if error is not None:
            failures.append(error.str())

    for key, value, headers in records:
        send(out, topic, key, value, headers=headers, on_delivery=delivered)
        out.poll(0)
    if (left := out.flush(timeout)) or failures:
        raise SystemExit(f"producing to {topic} failed: {left} undelivered, {len(failures)} errors ({failures[:3]})")


def time_until(step: Callable[[], int], done: Callable[[], bool], what: str, patience: float = 60.0) -> float:
    """Seconds from the first `step()` that did some work until `done()` (joining a group is not timed); fails
    after `patience` seconds without work."""
    started, worked = 0.0, time.monotonic()
    while not done():
        polled = time.perf_counter()
        if step():
            started, worked = started or polled, time.monotonic()
        elif time.monotonic() - worked > patience:
            raise SystemExit(f"{what}: no progress for {patience:.0f}s")
    return time.perf_counter() - started


# --- results ---


def table(rows: list[tuple[str, str]]) -> str:
    """Labels and values in two aligned columns."""
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"  {label:<{width}}  {value}" for label, value in rows)


def write_results(name: str, figures: dict[str, Any]) -> None:
    """bench/results/<name>.json (or $BENCH_RESULTS_DIR), stamped with the benchmark's name and the time."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    figures = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **figures}
    (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")


def read_results(name: str) -> dict[str, Any] | None:
    try:
        return dict(json.loads((RESULTS / f"{name}.json").read_text()))
    except (OSError, ValueError):
        return None


# --- set-up: Django, the local services, scratch topics and databases ---


def setup_django(settings_module: str = "server.settings") -> None:
    """Django for this process, with its log kept to warnings so that the figures stay readable."""
    import logging

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", settings_module)
    django.setup()
    logging.getLogger().setLevel(logging.WARNING)


def fresh_kafka(name: str) -> KafkaSettings:
    """The local services up, and topics under a prefix of their own for this run."""
    from django.conf import settings

    from bank.kafka import ensure_topics
    from devservices import services

    services.up(
        settings.VAR_DIR,
        settings.DATABASE_URL,
        settings.REDIS_URL,
        settings.KAFKA.bootstrap_servers,
        say=lambda _: None,
    )
    kafka = dataclasses.replace(settings.KAFKA, topic_prefix=f"bench-{name}-{uuid.uuid4().hex[:8]}.")
    ensure_topics(kafka)
    return kafka


def scratch_name(suffix: str) -> str:
    """A scratch database named after the DATABASE_URL one (bank → bank_bench): checkouts never share one."""
    from django.conf import settings

    return f"{settings.DATABASES['default']['NAME']}_{suffix}"


def bench_database(name: str, fresh: bool = False) -> dict[str, str]:
    """Database `name` made if missing (anew if `fresh`), never the DATABASE_URL one; its parameters."""
    import environ
    import psycopg
    from django.conf import settings
    from psycopg import sql

    db = environ.Env.db_url_config(settings.DATABASE_URL)  # not DATABASES: a second run here has it on the last one
    if name == db["NAME"]:
        raise SystemExit(f"refusing to benchmark in {name!r}, the DATABASE_URL database: its projections would be lost")
    params = {
        "host": db["HOST"] or "127.0.0.1",
        "port": str(db["PORT"] or 5432),
        "user": db["USER"],
        "password": db["PASSWORD"] or "",
    }
    with psycopg.connect(dbname=db["NAME"], autocommit=True, **params) as admin:  # type: ignore[arg-type]
        if fresh:  # a scratch database left by older code may hold tables its migrations no longer describe
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return params | {"dbname": name}


def use_bench_database(name: str) -> str:
    """Point this process at the scratch database `name`, made anew and migrated, before anything connects; its URL."""
    from urllib.parse import quote

    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections

    params = bench_database(name, fresh=True)
    connections.close_all()
    settings.DATABASES["default"]["NAME"] = name
    connections["default"].settings_dict["NAME"] = name
    call_command("migrate", verbosity=0)
    password = params["password"]
    auth = quote(params["user"], safe="") + (":" + quote(password, safe="") if password else "")
    return f"postgres://{auth}@{params['host']}:{params['port']}/{name}"


# --- the events of a bank, decided by the domain ---


@dataclasses.dataclass
class Expected:
    """What the projections must hold once every generated event is applied."""

    balances: dict[uuid.UUID, int] = dataclasses.field(default_factory=dict)
    types: dict[str, int] = dataclasses.field(default_factory=dict)


def generate(
    events: int, accounts: int, expected: Expected | None = None, seed: int = 42
) -> Iterator[messages.EventEnvelope]:
    """`events` envelopes over `accounts` accounts (opened over the first half), decided by the domain from random
    deposits (55%), withdrawals (40%), zero deposits (3%) and withdrawals above the limit (2%)."""
    if accounts < 1 or events < accounts:
        raise SystemExit("need at least one account and at least as many events as accounts")
    expected = expected if expected is not None else Expected()
    rng = random.Random(seed)
    ids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(accounts)]
    states: dict[uuid.UUID, domain.Account] = {}
    opened: list[uuid.UUID] = []
    stride = max(1, events // (2 * accounts))  # one opening every `stride` events until all are open
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(events):
        command: domain.Command
        if len(opened) < accounts and (i % stride == 0 or events - i <= accounts - len(opened)):
            account_id = ids[len(opened)]
            opened.append(account_id)
            command = domain.OpenAccount(account_id, str(len(opened) % 997 + 1), f"Account {len(opened)}", "EUR")
        else:
            account_id = opened[rng.randrange(len(opened))]
            roll = rng.random()
            if roll < 0.55:
                command = domain.Deposit(account_id, rng.randrange(1, 50_000))
            elif roll < 0.95:
                command = domain.Withdraw(account_id, rng.randrange(1, 40_000))
            elif roll < 0.98:
                command = domain.Deposit(account_id, 0)
            else:
                command = domain.Withdraw(account_id, domain.DEFAULT_MAX_AMOUNT * 2)
        state = states.get(account_id) or domain.Account.new(account_id)
        (event,) = domain.decide(state, command)
        state = states[account_id] = domain.evolve(state, event)
        expected.balances[account_id] = state.balance
        expected.types[type(event).__name__] = expected.types.get(type(event).__name__, 0) + 1
        yield messages.EventEnvelope(
            event=event,
            event_id=uuid.uuid4(),
            account_id=account_id,
            sequence=state.version,
            occurred_at=start + timedelta(milliseconds=i),
            command_id=uuid.uuid4(),
            actor=f"user:{state.version % 997}",
        )
