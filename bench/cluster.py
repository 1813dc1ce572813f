"""The price of durability and security: the 3-broker RF 3 SASL_SSL cluster against the single PLAINTEXT broker.

Both started here, in the same run, on free ports (under var/bench/):
- the processor (Kafka transactions; on the cluster as the `processor` principal, with ACLs): commands decided
  per second over the same pre-produced commands;
- latency, `CommandBus.send` (the views' producer, as `web`) → a processor process → the projector (in this
  process) committed the event to PostgreSQL and hands it to the live push. It stands in for the view →
  websocket figure (bench/latency.py), too heavy to run twice on 2 cores; the web and websocket hops do not
  touch Kafka, so the ratio is the Kafka part of it.

    .venv/bin/python -m bench.cluster [--commands 20000] [--rate 50] [--seconds 20]

Writes bench/results/cluster.json. Timings on a shared 2-core machine are noisy: compare the ratios.
"""

from __future__ import annotations

import dataclasses
import shutil
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from bank import domain, messages
from bank.config import KafkaSettings
from bank.kafka import ensure_topics
from bench import harness
from devservices import acls
from devservices.cluster import KafkaCluster
from devservices.kafka import KafkaNode
from devservices.process import free_port

VAR = harness.ROOT / "var" / "bench"


@dataclasses.dataclass
class Setup:
    name: str
    as_user: Callable[[str, str], KafkaSettings]  # (principal, topic prefix) → the settings it runs with
    prepare: Callable[[str], None]  # creates the topics of a prefix (and grants their ACLs)
    env: Callable[[str], dict[str, str]]  # a worker's KAFKA_* environment for a principal

    def fresh(self) -> Callable[[str], KafkaSettings]:
        """Topics under a new prefix; returns the settings of each principal on them."""
        prefix = f"b{uuid.uuid4().hex[:8]}."
        self.prepare(prefix)
        return lambda user: self.as_user(user, prefix)


@contextmanager
def single_broker() -> Iterator[Setup]:
    home = VAR / "kafka-single"
    shutil.rmtree(home, ignore_errors=True)
    node = KafkaNode(home, port=free_port(), controller_port=free_port(), internal_partitions=3)
    node.start(wait=120)

    def as_user(user: str, prefix: str) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=node.bootstrap, topic_prefix=prefix, partitions=6)

    def prepare(prefix: str) -> None:
        ensure_topics(as_user("operator", prefix))

    try:
        yield Setup(
            "single PLAINTEXT broker, RF 1", as_user, prepare, lambda _: {"KAFKA_BOOTSTRAP_SERVERS": node.bootstrap}
        )
    finally:
        node.stop()


@contextmanager
def secured_cluster() -> Iterator[Setup]:
    home = VAR / "kafka-cluster"
    shutil.rmtree(home, ignore_errors=True)
    cluster = KafkaCluster(home, ports=tuple((free_port(), free_port()) for _ in range(3)), internal_partitions=3)
    cluster.start(wait=180)

    def as_user(user: str, prefix: str) -> KafkaSettings:
        return KafkaSettings(
            bootstrap_servers=cluster.bootstrap,
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username=user,
            sasl_password=cluster.passwords[user],
            ssl_ca_location=str(cluster.tls.ca),
            topic_prefix=prefix,
            partitions=6,
            replication_factor=3,
        )

    def prepare(prefix: str) -> None:
        acls.apply(cluster.admin(), as_user("operator", prefix))
        acls.retry_until_enforced(lambda: ensure_topics(as_user("operator", prefix)))

    try:
        yield Setup("3 brokers, RF 3, min ISR 2, SASL_SSL SCRAM-SHA-512, ACLs", as_user, prepare, cluster.env)
    finally:
        cluster.stop(graceful=False)


def processor_rate(setup: Setup, commands: int, accounts: int) -> float:
    """Commands/s the processor decides, from pre-produced commands (group joining excluded)."""
    from bench.processor import make_commands, run_loop, send_commands
    from consumers.processor import Processor, ProcessorConfig

    kafka = setup.fresh()
    payload = make_commands(accounts, commands)
    send_commands(kafka("web"), payload)
    processor = Processor(kafka("processor"), ProcessorConfig(instance=f"bench-{uuid.uuid4().hex[:6]}", batch_size=500))
    return len(payload) / run_loop(processor, len(payload))


def latencies(setup: Setup, database_url: str, rate: float, seconds: float) -> list[float]:
    """Seconds from CommandBus.send to the projector's commit, per command, at a steady `rate`."""
    from django.conf import settings

    from bank.command_bus import CommandBus
    from consumers.projector import Projector
    from live import updates
    from projections import store

    on = setup.fresh()
    kafka = on("web")
    env = harness.worker_env(kafka, database_url, settings.REDIS_URL, **setup.env("processor"))
    processor = harness.Process("latency-processor", harness.manage("run_processor", "--instance", "lat"), env, VAR)
    sent: dict[uuid.UUID, float] = {}
    done: dict[uuid.UUID, float] = {}

    def record(outcome: store.BatchChanges) -> int:  # stands in for updates.push, called right after the commit
        now = time.perf_counter()
        for rows in outcome.audit.values():
            for row in rows:
                done.setdefault(row.command_id, now)
        return 0

    projector = Projector(on("projector"))
    stop = threading.Event()

    def project() -> None:
        projector.start()
        while not stop.is_set():
            projector.process_batch()
        projector.close()

    original_push, updates.push = updates.push, record
    thread = threading.Thread(target=project, daemon=True)
    thread.start()
    bus = CommandBus(kafka)
    try:
        accounts = [uuid.uuid4() for _ in range(20)]
        for account in accounts:
            bus.send(messages.CommandEnvelope.new(domain.OpenAccount(account, "bench", "Bench", "EUR"), "user:bench"))
        harness.wait_until(lambda: len(done) >= len(accounts), 120, 0.05, "the projector to see the opened accounts")
        done.clear()
        started = time.perf_counter()
        for i in range(int(rate * seconds)):
            time.sleep(max(0.0, started + i / rate - time.perf_counter()))
            envelope = messages.CommandEnvelope.new(domain.Deposit(accounts[i % len(accounts)], 1_00), "user:bench")
            sent[envelope.command_id] = time.perf_counter()
            bus.send(envelope)
        harness.wait_until(lambda: all(c in done for c in sent), 120, 0.05, "every command projected")
    finally:
        bus.close()
        stop.set()
        thread.join(30)
        updates.push = original_push
        processor.stop(30)
    return [done[c] - t for c, t in sent.items()]


def p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if q < 100 else max(values)


def main() -> None:
    args = harness.arguments(__doc__, commands=20_000, accounts=500, rate=50.0, seconds=20.0)
    harness.setup_django()
    database_url = harness.use_bench_database(harness.scratch_name("bench_cluster"))
    figures: dict[str, dict[str, Any]] = {}
    for key, setup_of in (("single", single_broker), ("cluster", secured_cluster)):
        with setup_of() as setup:
            rate = processor_rate(setup, args.commands, args.accounts)
            lat = latencies(setup, database_url, args.rate, args.seconds)
            figures[key] = {
                "setup": setup.name,
                "processor_commands_per_s": round(rate),
                "latency_p50_ms": round(p(lat, 50) * 1000, 1),
                "latency_p99_ms": round(p(lat, 99) * 1000, 1),
                "latency_samples": len(lat),
            }
    single, cluster = figures["single"], figures["cluster"]
    ratios = {
        f"{name}_cluster_to_single": round(cluster[key] / single[key], 3)
        for name, key in (
            ("processor_rate", "processor_commands_per_s"),
            ("latency_p99", "latency_p99_ms"),
            ("latency_p50", "latency_p50_ms"),
        )
    }
    print(f"processor: {args.commands} commands; latency: command bus → projector committed, {args.rate:g}/s")
    rows = [
        (
            f["setup"],
            f"{f['processor_commands_per_s']:>7,} commands/s, p50 {f['latency_p50_ms']} ms, p99 {f['latency_p99_ms']} ms",
        )
        for f in (single, cluster)
    ]
    rows += [
        ("processor rate, cluster / single", f"{ratios['processor_rate_cluster_to_single']:.2f}x"),
        ("latency p99, cluster / single", f"{ratios['latency_p99_cluster_to_single']:.2f}x"),
    ]
    print(harness.table(rows))
    measures = "CommandBus.send to the projector's commit (not view to websocket)"
    figures_out = {"commands": args.commands, "latency_rate_per_s": args.rate, "latency_measures": measures}
    harness.write_results("cluster", figures_out | figures | ratios)


if __name__ == "__main__":
    main()
