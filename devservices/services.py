"""Start, stop and report the three local services: Kafka, PostgreSQL and Redis."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from devservices import postgres, redis
from devservices.kafka import KafkaNode
from devservices.process import port_open


@dataclass(frozen=True)
class Status:
    name: str
    up: bool
    where: str
    version: str | None

    def line(self) -> str:
        state = "up  " if self.up else "down"
        return f"{self.name:<10} {state} {self.where:<40} {self.version or '-'}"


def local_kafka(var_dir: Path, bootstrap: str) -> KafkaNode | None:
    """The broker this project manages, when KAFKA_BOOTSTRAP_SERVERS points at this machine."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if host not in ("127.0.0.1", "localhost") or not port.isdigit():
        return None
    return KafkaNode(var_dir / "kafka", port=int(port), controller_port=int(port) + 1)


def up(var_dir: Path, database_url: str, redis_url: str, bootstrap: str, say: Callable[[str], None] = print) -> None:
    """Bring every service up; each step is quick when the service is already running."""
    steps: list[tuple[str, Callable[[], bool]]] = [
        ("postgres", lambda: postgres.ensure(database_url)),
        ("redis", lambda: redis.ensure(redis_url, var_dir / "redis")),
    ]
    node = local_kafka(var_dir, bootstrap)
    if node is not None:
        steps.append(("kafka", node.start))
    for name, step in steps:
        started = time.monotonic()
        fresh = step()
        say(f"{name}: {'started' if fresh else 'already up'} ({time.monotonic() - started:.1f}s)")


def down(var_dir: Path, bootstrap: str) -> None:
    node = local_kafka(var_dir, bootstrap)
    if node is not None:
        node.stop()


def status(var_dir: Path, database_url: str, redis_url: str, bootstrap: str) -> list[Status]:
    db = urlsplit(database_url)
    rd = urlsplit(redis_url)
    node = local_kafka(var_dir, bootstrap)
    kafka_up = node.is_up() if node is not None else _kafka_reachable(bootstrap)
    return [
        Status("kafka", kafka_up, bootstrap, node.version() if node and kafka_up else None),
        Status(
            "postgres",
            postgres.version(database_url) is not None,
            f"{db.hostname}:{db.port or 5432}{db.path}",
            postgres.version(database_url),
        ),
        Status(
            "redis", redis.version(redis_url) is not None, f"{rd.hostname}:{rd.port or 6379}", redis.version(redis_url)
        ),
    ]


def _kafka_reachable(bootstrap: str) -> bool:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    return port.isdigit() and port_open(host, int(port))
