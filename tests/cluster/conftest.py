"""The production shape for the `cluster` tests: one 3-node KRaft cluster per session (RF 3, min ISR 2,
SASL_SSL with SCRAM-SHA-512, ACLs), started only when a test of this folder runs.

Each test gets a fresh topic prefix, its ACLs granted per service principal, and settings for
each principal (`secure.settings("web")`, `secure.env("processor")` for a worker process).
"""

from __future__ import annotations

import dataclasses
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from bank.config import KafkaSettings
from bank.kafka import ensure_topics
from devservices import acls
from devservices.cluster import KafkaCluster
from devservices.process import free_port
from tests.helpers import VAR


@pytest.fixture(scope="session")
def cluster() -> Iterator[KafkaCluster]:
    home = VAR / "kafka-cluster"
    shutil.rmtree(home, ignore_errors=True)
    nodes = KafkaCluster(
        home,
        ports=tuple((free_port(), free_port()) for _ in range(3)),
        internal_partitions=3,
        # Short timeouts, as for the single test broker, so that failover takes seconds.
        extra={
            "group.min.session.timeout.ms": "1000",
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
            "transaction.remove.expired.transaction.cleanup.interval.ms": "5000",
        },
    )
    nodes.start(wait=180)
    yield nodes
    from bank.command_bus import close_all

    close_all()
    nodes.stop(graceful=False)  # its data is deleted at the next session's start


@dataclass
class Secure:
    """The cluster seen by the bank's principals, on this test's own topics."""

    cluster: KafkaCluster
    prefix: str

    def settings(self, user: str, password: str | None = None, **changes: object) -> KafkaSettings:
        config = self.cluster.client_config(user, password)
        base = KafkaSettings(
            bootstrap_servers=self.cluster.bootstrap,
            security_protocol=config["security.protocol"],
            sasl_mechanism=config["sasl.mechanisms"],
            sasl_username=user,
            sasl_password=config["sasl.password"],
            ssl_ca_location=config["ssl.ca.location"],
            topic_prefix=self.prefix,
            partitions=3,
            replication_factor=3,
        )
        return dataclasses.replace(base, **changes)  # type: ignore[arg-type]

    def env(self, user: str) -> dict[str, str]:
        """Environment of a worker process running as `user` (with tests.helpers.worker_env)."""
        return self.cluster.env(user)


@pytest.fixture
def secure(cluster: KafkaCluster) -> Secure:
    """Fresh topics (created by the operator principal, RF 3) and the services' ACLs on them."""
    found = Secure(cluster, f"c{uuid.uuid4().hex[:10]}.")
    operator = found.settings("operator")
    acls.apply(cluster.admin(), operator)
    acls.retry_until_enforced(lambda: ensure_topics(operator))
    return found
