"""Start, stop and report the three local services: Kafka, PostgreSQL and Redis."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bank.config import KafkaSettings
from devservices import acls, postgres, redis
from devservices.cluster import SERVICES, KafkaCluster
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


def local_cluster(var_dir: Path) -> KafkaCluster:
    """The 3-node SASL_SSL cluster of `./run --cluster` (BANK_LOCAL_KAFKA=cluster), on its fixed ports."""
    return KafkaCluster(var_dir / "kafka-cluster")


def up_cluster(
    var_dir: Path, database_url: str, redis_url: str, kafka: KafkaSettings, say: Callable[[str], None] = print
) -> KafkaCluster:
    """PostgreSQL, Redis and the cluster; then the services' ACLs and one env file per service.

    `var/kafka-cluster/env/<service>.env` holds the KAFKA_* variables of that service's principal
    (Procfile.cluster sources them), `operator.env` those for manage.py commands.
    """
    up(var_dir, database_url, redis_url, "", say)
    cluster = local_cluster(var_dir)
    started = time.monotonic()
    fresh = cluster.start()
    say(
        f"kafka cluster: {'started' if fresh else 'already up'} on {cluster.bootstrap} ({time.monotonic() - started:.1f}s)"
    )
    count = acls.apply(cluster.admin(), kafka)
    env_dir = cluster.home / "env"
    env_dir.mkdir(exist_ok=True)
    for service in SERVICES:
        path = env_dir / f"{service}.env"
        path.write_text("".join(f"{key}={value}\n" for key, value in cluster.env(service).items()))
        path.chmod(0o600)
    say(f"kafka cluster: {count} ACLs for {', '.join(SERVICES)}; credentials in {env_dir}/<service>.env")
    return cluster
