"""A real single-node Apache Kafka broker (KRaft) for local runs and tests.

The jars come from Maven Central (see kafka-pom.xml) into a cache outside git,
keyed by version, so a second run downloads nothing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import AdminClient

from devservices.process import ServiceError, pid_alive, port_open, read_pid, terminate

KAFKA_VERSION = "4.1.1"
POM = Path(__file__).with_name("kafka-pom.xml")
CACHE = Path(os.environ.get("BANK_CACHE_DIR", Path.home() / ".cache" / "bank"))
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def lib_dir() -> Path:
    return CACHE / f"kafka-{KAFKA_VERSION}" / "lib"


def ensure_jars() -> Path:
    """Resolve the broker's runtime jars once; later calls only check a marker."""
    lib = lib_dir()
    marker = lib / ".complete"
    if marker.exists():
        return lib
    if shutil.which("mvn") is None:
        raise ServiceError("kafka: Maven (mvn) is needed to fetch the broker's jars from Maven Central")
    lib.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(POM),
            f"{DEPENDENCY_PLUGIN}:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={lib}",
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise ServiceError(
            f"kafka: fetching jars from Maven Central failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    marker.write_text(KAFKA_VERSION)
    return lib


@dataclass
class KafkaNode:
    """One combined broker+controller node with its own ports and data dir.

    Alone (the default) it is the fast single PLAINTEXT broker of `./run` and the tests; in a
    `devservices.cluster.KafkaCluster` it is one of three voters, with `settings` replacing the
    listener and replication lines and `scram` users added when its storage is formatted.
    """

    home: Path
    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"
    # Fewer internal partitions make the first start and first transaction much faster.
    internal_partitions: int = 6
    extra: dict[str, str] = field(default_factory=dict)
    node_id: int = 1
    voters: str = ""  # controller.quorum.voters; empty: this node alone
    cluster_id: str = ""  # shared by the nodes of a cluster; empty: made at the first format
    scram: dict[str, str] = field(default_factory=dict)  # SCRAM-SHA-512 users created at format time
    client: dict[str, str] = field(default_factory=dict)  # client settings to reach the node (readiness checks)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "server.log"

    def settings(self) -> dict[str, str]:
        """server.properties as a dict: the single-node defaults, then `extra` (which wins)."""
        return {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.voters or f"{self.node_id}@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.home / "data"),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": str(self.internal_partitions),
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": str(self.internal_partitions),
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "num.partitions": "1",
            **self.extra,
        }

    def properties(self) -> str:
        return "".join(f"{key}={value}\n" for key, value in self.settings().items())

    def pid(self) -> int | None:
        pid = read_pid(self.pid_file)
        return pid if pid and pid_alive(pid) else None

    def is_up(self, timeout: float = 2.0) -> bool:
        if not port_open("127.0.0.1", self.port):
            return False
        try:
            admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0, **self.client})
            metadata = admin.list_topics(timeout=timeout)
        except Exception:
            return False
        # In a cluster the node must see itself registered and unfenced, not only its peers.
        return self.node_id in metadata.brokers if self.voters else len(metadata.brokers) > 0

    def _java(self, lib: Path, main: str, *args: str, jvm: tuple[str, ...] = ()) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise ServiceError("kafka: Java 17+ is needed to run the broker (java not found on PATH)")
        return [java, *jvm, "-cp", f"{lib}/*", main, *args]

    def _format(self, lib: Path, config: Path) -> None:
        if (self.home / "data" / "meta.properties").exists():
            return
        cluster_id = self.home / "cluster.id"
        if self.cluster_id:
            cluster_id.write_text(self.cluster_id)
        if not cluster_id.exists():
            out = subprocess.run(
                self._java(lib, "kafka.tools.StorageTool", "random-uuid"), capture_output=True, text=True
            )
            if out.returncode != 0 or not out.stdout.strip():
                raise ServiceError(f"kafka: could not make a cluster id:\n{out.stderr}")
            cluster_id.write_text(out.stdout.strip().splitlines()[-1])
        result = subprocess.run(
            self._java(
                lib,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id.read_text().strip(),
                "-c",
                str(config),
                "--ignore-formatted",
                # The users exist before the first start, so brokers can talk SCRAM to each other at once.
                *(
                    arg
                    for user, password in self.scram.items()
                    for arg in ("--add-scram", f"SCRAM-SHA-512=[name={user},password={password}]")
                ),
            ),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise ServiceError(f"kafka: formatting storage failed:\n{result.stdout}{result.stderr}")

    def start(self, wait: float = 60.0) -> bool:
        """Start the node unless it is already up. Returns True when it was started now."""
        if self.is_up():
            return False
        if (pid := self.pid()) is not None:
            # Started earlier and still coming up: just wait for it.
            self.wait_ready(wait, pid)
            return False
        pid = self.launch()
        self.wait_ready(wait, pid)
        return True

    def launch(self) -> int:
        """Start the JVM without waiting for it (a cluster's nodes wait for each other's votes)."""
        lib = ensure_jars()
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        config = self.home / "server.properties"
        config.write_text(self.properties())
        log4j = self.home / "log4j2.properties"
        log4j.write_text(LOG4J2)
        self._format(lib, config)
        jvm = (
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-server",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-XX:TieredStopAtLevel=1",  # faster start-up matters more here than peak JIT
            f"-Dkafka.logs.dir={self.home / 'logs'}",
            f"-Dlog4j2.configurationFile={log4j}",
        )
        with open(self.home / "logs" / "stdout.log", "ab") as out:
            proc = subprocess.Popen(
                self._java(lib, "kafka.Kafka", str(config), jvm=jvm),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the command that started it
            )
        self.pid_file.write_text(str(proc.pid))
        return proc.pid

    def wait_ready(self, timeout: float, pid: int) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                raise ServiceError(
                    f"kafka: the broker exited during start-up; see {self.log_file} and {self.home / 'logs' / 'stdout.log'}"
                )
            if self.is_up(timeout=1.0):
                return
            time.sleep(0.2)
        raise ServiceError(f"kafka: not ready on {self.bootstrap} after {timeout:.0f}s; see {self.log_file}")

    def kill(self) -> None:
        """SIGKILL, as a crash: no controlled shutdown, log recovery on the next start."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            while pid_alive(pid):
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)

    def stop(self, timeout: float = 30.0) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        terminate(pid, timeout)
        self.pid_file.unlink(missing_ok=True)
        return True

    def version(self) -> str:
        return KAFKA_VERSION
