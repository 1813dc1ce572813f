"""A local 3-node KRaft cluster in the production shape: RF 3, min ISR 2, SASL_SSL with SCRAM-SHA-512, ACLs.

Each node is a combined broker+controller (`devservices.kafka.KafkaNode`) with a small heap, so
the three fit on a 2-core machine. Clients reach the brokers only on a SASL_SSL listener (TLS with
the project's own CA, SCRAM users created when the storage is formatted); brokers talk to each
other there as the `admin` user, and to the controllers over mutual TLS (principal User:CN=broker).
The KRaft StandardAuthorizer refuses everything no ACL allows (`devservices.acls` grants them).

Started by `BANK_LOCAL_KAFKA=cluster python -m devservices up` (`./run --cluster`), the cluster
tests (tests/cluster/) and bench/cluster.py.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient

from devservices import tls
from devservices.kafka import KafkaNode
from devservices.process import ServiceError, pid_alive

# The bank's principals (one per service) and the brokers' own, which is a super user.
ADMIN = "admin"
SERVICES = ("web", "processor", "projector", "operator")
# Fixed ports of `./run --cluster`: clients on 9192, 9194, 9196, controllers one above each.
DEFAULT_PORTS = ((9192, 9193), (9194, 9195), (9196, 9197))


@dataclass
class KafkaCluster:
    home: Path
    ports: tuple[tuple[int, int], ...] = DEFAULT_PORTS
    heap: str = "384m"
    internal_partitions: int = 6
    extra: dict[str, str] | None = None  # further broker settings for every node (tests shorten timeouts)

    def __post_init__(self) -> None:
        self.tls = tls.ensure(self.home / "tls")
        self.passwords = self._passwords()
        voters = ",".join(f"{i}@127.0.0.1:{cport}" for i, (_, cport) in enumerate(self.ports, start=1))
        self.nodes = [
            KafkaNode(
                self.home / f"node-{i}",
                port=port,
                controller_port=cport,
                heap=self.heap,
                internal_partitions=self.internal_partitions,
                node_id=i,
                voters=voters,
                cluster_id=self._cluster_id(),
                scram=self.passwords,
                client=self.client_config(ADMIN),
                extra=self._node_settings(port, cport),
            )
            for i, (port, cport) in enumerate(self.ports, start=1)
        ]

    # --- what clients need ---

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def client_config(self, user: str, password: str | None = None) -> dict[str, str]:
        """librdkafka settings for `user` (the same keys KafkaSettings.client_config produces)."""
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanisms": "SCRAM-SHA-512",
            "sasl.username": user,
            "sasl.password": self.passwords[user] if password is None else password,
            "ssl.ca.location": str(self.tls.ca),
        }

    def env(self, user: str) -> dict[str, str]:
        """The bank's environment variables for a process running as `user`."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": user,
            "KAFKA_SASL_PASSWORD": self.passwords[user],
            "KAFKA_SSL_CA_LOCATION": str(self.tls.ca),
            "KAFKA_REPLICATION_FACTOR": "3",
        }

    def admin(self, **extra: str | int) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.bootstrap, **self.client_config(ADMIN), **extra})

    # --- lifecycle ---

    def is_up(self) -> bool:
        return all(node.is_up() for node in self.nodes)

    def start(self, wait: float = 120.0) -> bool:
        """Start the nodes that are down and wait until all three are registered. True if any started now."""
        launched = [(node, node.launch()) for node in self.nodes if node.pid() is None]
        self.wait_ready(wait)
        return bool(launched)

    def start_node(self, node: KafkaNode, wait: float = 120.0) -> None:
        if node.pid() is None:
            node.launch()
        self.wait_ready(wait)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [node for node in self.nodes if (pid := node.pid()) is None or not pid_alive(pid)]
            if dead:
                raise ServiceError(f"kafka cluster: node(s) {[n.node_id for n in dead]} exited; see {dead[0].log_file}")
            try:
                # log_level 0: the refused connections of nodes still starting are expected here.
                brokers = self.admin(log_level=0).list_topics(timeout=2).brokers
            except Exception:
                brokers = {}
            if len(brokers) == len(self.nodes):
                return
            time.sleep(0.5)
        raise ServiceError(f"kafka cluster: not all {len(self.nodes)} brokers up after {timeout:.0f}s; see {self.home}")

    def stop(self, graceful: bool = True) -> bool:
        """SIGTERM all nodes at once (one by one, each would wait for a quorum to take its partitions), or SIGKILL."""
        pids = [(node, pid) for node in self.nodes if (pid := node.pid()) is not None]
        for _node, pid in pids:
            os.kill(pid, signal.SIGTERM if graceful else signal.SIGKILL)
        deadline = time.monotonic() + 30
        for node, pid in pids:
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
            node.pid_file.unlink(missing_ok=True)
        return bool(pids)

    def active_controller(self) -> KafkaNode:
        """The node leading the metadata quorum, from the quorum-state files the nodes write on each election."""
        best: tuple[int, int] = (-1, -1)
        for node in self.nodes:
            state = node.home / "data" / "__cluster_metadata-0" / "quorum-state"
            try:
                data = json.loads(state.read_text())
            except (OSError, ValueError):
                continue
            epoch, leader = int(data.get("leaderEpoch", -1)), int(data.get("leaderId", -1))
            if leader > 0 and epoch > best[0]:
                best = (epoch, leader)
        if best[1] < 0:
            raise ServiceError("kafka cluster: no node knows the active controller yet")
        return self.nodes[best[1] - 1]

    # --- set-up ---

    def _cluster_id(self) -> str:
        path = self.home / "cluster.id"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            # A KRaft cluster id is a base64url UUID, as StorageTool random-uuid prints it.
            path.write_text(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))
        return path.read_text().strip()

    def _passwords(self) -> dict[str, str]:
        """Random passwords made once per cluster (kept beside its data, mode 600)."""
        path = self.home / "passwords.json"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({user: secrets.token_urlsafe(18) for user in (ADMIN, *SERVICES)}, indent=1))
            path.chmod(0o600)
        return dict(json.loads(path.read_text()))

    def _node_settings(self, port: int, controller_port: int) -> dict[str, str]:
        admin_password = self.passwords[ADMIN]
        return {
            "listeners": f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"SASL_SSL://127.0.0.1:{port}",
            "inter.broker.listener.name": "SASL_SSL",
            # SCRAM cannot guard the controller listener (its users live in the metadata the
            # controllers serve), so that one is mutual TLS.
            "listener.security.protocol.map": "CONTROLLER:SSL,SASL_SSL:SASL_SSL",
            "listener.name.controller.ssl.client.auth": "required",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{ADMIN}" password="{admin_password}";'
            ),
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.tls.keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.tls.ca),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{ADMIN};{self.tls.broker_principal}",
            "allow.everyone.if.no.acl.found": "false",
            # Durability: every partition on all three, a write needs two of them.
            "default.replication.factor": "3",
            "min.insync.replicas": "2",
            "offsets.topic.replication.factor": "3",
            "transaction.state.log.replication.factor": "3",
            "transaction.state.log.min.isr": "2",
            "share.coordinator.state.topic.replication.factor": "3",
            "share.coordinator.state.topic.min.isr": "2",
            # Failover inside the 5 s a view waits for a command's confirmation (KAFKA_COMMAND_TIMEOUT):
            # a dead broker is fenced, and leaves every ISR, after 2 s instead of 9 s; a dead active
            # controller is replaced after 1 s without its fetches plus a 0.5-1 s election.
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "2000",
            "controller.quorum.fetch.timeout.ms": "1000",
            "controller.quorum.election.timeout.ms": "500",
            **(self.extra or {}),
        }
