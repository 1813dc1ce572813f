"""Real services for the test session: one Kafka broker (fresh, on free ports), Redis, PostgreSQL.

They start only when a test needs them, the first time one asks for `kafka_node` (or `kafka`, or the
database, which brings all three as before): pure tests (domain, messages, money) run with none.
Django's settings are already loaded when this runs (pytest-django loads them first), so the
session broker and Redis are swapped into `settings` here, and passed by environment to any
worker started as a subprocess. Shared helpers are in tests/helpers.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import sys
import uuid
from collections.abc import Callable, Iterator

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test.signals import setting_changed

from bank.command_bus import CommandBus
from bank.config import KafkaSettings
from bank.kafka import ensure_topics
from devservices import postgres, redis
from devservices.kafka import KafkaNode
from devservices.process import free_port
from server.settings import redis_backends
from tests.helpers import PASSWORD, VAR, Worker, worker_env


def _start_services() -> KafkaNode:
    postgres.ensure(settings.DATABASE_URL)
    redis_port = free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    redis.ensure(redis_url, VAR / "redis")
    shutil.rmtree(VAR / "kafka", ignore_errors=True)
    node = KafkaNode(
        VAR / "kafka",
        port=free_port(),
        controller_port=free_port(),
        internal_partitions=3,
        # Short timeouts so that failover tests (frozen or killed processors) take seconds, not minutes.
        extra={
            "group.min.session.timeout.ms": "1000",
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
            "transaction.remove.expired.transaction.cleanup.interval.ms": "5000",
        },
    )
    node.start(wait=90)
    settings.REDIS_URL = redis_url
    # The app's channel layer and cache (sessions, users), on the session's Redis.
    settings.CHANNEL_LAYERS, settings.CACHES = redis_backends(redis_url, "test")
    setting_changed.send(sender=None, setting="CACHES", value=settings.CACHES, enter=True)  # drop connected caches
    settings.KAFKA = dataclasses.replace(settings.KAFKA, bootstrap_servers=node.bootstrap, partitions=3)
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = node.bootstrap
    os.environ["REDIS_URL"] = redis_url
    return node


@pytest.fixture(scope="session")
def kafka_node() -> Iterator[KafkaNode]:
    """The session's broker, Redis and PostgreSQL, started by the first test that needs them."""
    node = _start_services()
    yield node
    from bank.command_bus import close_all

    close_all()  # views' buses, so that none keeps calling a stopped broker
    node.stop()
    redis_pid = VAR / "redis"
    for pid_file in redis_pid.glob("redis-*.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), 15)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None, kafka_node: KafkaNode) -> None:
    """A test that touches the database gets every service first, as when they started for every test."""


@pytest.fixture
def kafka(kafka_node: KafkaNode) -> Iterator[KafkaSettings]:
    """Kafka settings with a fresh topic prefix: each test gets its own, empty topics (also in `settings.KAFKA`)."""
    session = settings.KAFKA
    fresh = dataclasses.replace(session, topic_prefix=f"t{uuid.uuid4().hex[:10]}.")
    ensure_topics(fresh)
    settings.KAFKA = fresh
    yield fresh
    settings.KAFKA = session


@pytest.fixture
def workers() -> Iterator[Callable[..., Worker]]:
    """Start manage.py workers as real processes; all are stopped after the test."""
    started: list[Worker] = []

    def start(name: str, args: list[str], kafka: KafkaSettings, program: list[str] | None = None, **env: str) -> Worker:
        worker = Worker(name, args, worker_env(kafka, **env), program)
        started.append(worker)
        return worker

    start.started = started  # type: ignore[attr-defined]
    yield start
    for worker in started:
        worker.signal(signal.SIGCONT)  # a frozen worker cannot stop
        worker.stop()


@pytest.fixture
def started_processor(kafka: KafkaSettings, workers: Callable[..., Worker]) -> Worker:
    """The processor, started but not waited for (so that `bank_server` starts its three processes at once)."""
    return workers("processor", ["run_processor", "--instance", "p1"], kafka)


@pytest.fixture
def processor(started_processor: Worker, request: pytest.FixtureRequest) -> Worker:
    """The processor, holding its partitions (a test that asks for the projector too has it started first,
    so that the two start at once)."""
    if "projector" in request.fixturenames:
        request.getfixturevalue("started_projector")
    started_processor.wait_for_log("assigned partitions")
    return started_processor


@pytest.fixture
def bus(kafka: KafkaSettings) -> Iterator[CommandBus]:
    command_bus = CommandBus(kafka)
    yield command_bus
    command_bus.close()


@pytest.fixture
def started_projector(kafka: KafkaSettings, workers: Callable[..., Worker], transactional_db: None) -> Worker:
    """The projector, started but not waited for."""
    return workers("projector", ["run_projector"], kafka)


@pytest.fixture
def projector(started_projector: Worker) -> Worker:
    """The projector, holding its partitions."""
    started_projector.wait_for_log("projector assigned")
    return started_projector


@pytest.fixture
def users(transactional_db: None) -> dict[str, User]:
    """alice and bob, customers; carol, staff."""
    return {
        "alice": User.objects.create_user("alice", password=PASSWORD),
        "bob": User.objects.create_user("bob", password=PASSWORD),
        "carol": User.objects.create_user("carol", password=PASSWORD, is_staff=True, is_superuser=True),
    }


@pytest.fixture
def bank_server(
    kafka: KafkaSettings, workers: Callable[..., Worker], started_processor: Worker, started_projector: Worker
) -> Iterator[str]:
    """The whole bank on a free port: daphne, the processor and the projector, on the test database.

    The three start at once and are waited for together: most of a start is Python importing Django."""
    port = free_port()
    web = workers(
        "daphne",
        ["-b", "127.0.0.1", "-p", str(port), "server.asgi:application"],
        kafka,
        program=[sys.executable, "-m", "daphne"],
    )
    started_processor.wait_for_log("assigned partitions")
    started_projector.wait_for_log("projector assigned")
    web.wait_for_log("Listening on TCP address")
    yield f"http://127.0.0.1:{port}"
    # A consumer that crashed would be hidden by the browser's reconnect and catch-up: fail on it.
    for worker in workers.started:  # type: ignore[attr-defined]
        assert "Traceback" not in worker.log(), f"{worker.name} raised:\n{worker.log()[-4000:]}"
