"""The price of durability and security: the 3-broker RF 3 SASL_SSL cluster against the single PLAINTEXT broker.

Both run in the same run, on the same machine, each started here on free ports (under var/bench/):
- the processor (`consumers.processor.Processor`, Kafka transactions): commands decided per second,
  over the same pre-produced commands (on the cluster as the `processor` principal, with ACLs);
- latency, command bus → projector committed: commands sent at a steady rate through
  `bank.command_bus.CommandBus` (the views' producer, as the `web` principal), decided by a
  processor process, projected by `consumers.projector.Projector` in this process; the clock stops
  when the projector has committed the command's event to PostgreSQL and hands it to the live
  push. This stands in for the view → websocket figure (bench/latency.py), which needs daphne,
  Redis and websocket clients on top and was too heavy to run twice on 2 cores; the web and
  websocket hops do not touch Kafka, so the ratio is the Kafka part of it.

    .venv/bin/python -m bench.cluster [--commands 20000] [--rate 50] [--seconds 20]

Writes bench/results/cluster.json. Timings on a shared 2-core machine are noisy: compare the ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from bank import domain, messages
from bank.config import KafkaSettings
from bank.kafka import ensure_topics
from bench.harness import ROOT, scratch_name, setup_django, table, use_bench_database, write_results
from devservices import acls
from devservices.cluster import KafkaCluster
from devservices.kafka import KafkaNode
from devservices.process import free_port

VAR = ROOT / "var" / "bench"


USERS = ("web", "processor", "projector", "operator")


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
            "single PLAINTEXT broker, RF 1",
            as_user,
            prepare,
            lambda user: {"KAFKA_BOOTSTRAP_SERVERS": node.bootstrap},
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
    from bench.processor import make_commands, produce_all, run_loop
    from consumers.processor import Processor

    kafka = setup.fresh()
    payload = make_commands(accounts, commands)
    produce_all(kafka("web"), kafka("web").commands_topic, payload)
    processor = Processor(kafka("processor"), instance=f"bench-{uuid.uuid4().hex[:6]}", batch_size=500)
    return len(payload) / run_loop(processor, len(payload))


def latencies(setup: Setup, database_url: str, rate: float, seconds: float) -> list[float]:
    """Seconds from CommandBus.send to the projector's commit, per command, at a steady `rate`."""
    from bank.command_bus import CommandBus
    from consumers.projector import Projector
    from projections import live, store

    on = setup.fresh()
    kafka = on("web")
    env = {
        **os.environ,
        **setup.env("processor"),
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "KAFKA_PARTITIONS": str(kafka.partitions),
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": "server.settings",
    }
    log_file = open(VAR / "latency-processor.log", "w")  # noqa: SIM115 - closed below
    processor = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "run_processor", "--instance", "lat"],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    sent: dict[uuid.UUID, float] = {}
    done: dict[uuid.UUID, float] = {}

    def record(
        outcome: store.Outcome, *args: object, **kwargs: object
    ) -> int:  # stands in for live.push: called right after the commit
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

    original_push = live.push
    live.push = record  # type: ignore[assignment]
    thread = threading.Thread(target=project, daemon=True)
    thread.start()
    bus = CommandBus(kafka)
    try:
        accounts = [uuid.uuid4() for _ in range(20)]
        for account in accounts:
            bus.send(messages.CommandEnvelope.new(domain.OpenAccount(account, "bench", "Bench", "EUR"), "user:bench"))
        _wait(lambda: len(done) >= len(accounts), 120, "the projector to see the opened accounts")
        done.clear()
        interval, total = 1.0 / rate, int(rate * seconds)
        started = time.perf_counter()
        for i in range(total):
            time.sleep(max(0.0, started + i * interval - time.perf_counter()))
            envelope = messages.CommandEnvelope.new(domain.Deposit(accounts[i % len(accounts)], 1_00), "user:bench")
            sent[envelope.command_id] = time.perf_counter()
            bus.send(envelope)
        _wait(lambda: all(c in done for c in sent), 120, "every command projected")
    finally:
        bus.close()
        stop.set()
        thread.join(30)
        live.push = original_push  # type: ignore[assignment]
        processor.terminate()
        processor.wait(30)
        log_file.close()
    return [done[c] - t for c, t in sent.items()]


def _wait(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if q < 100 else max(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=20_000)
    parser.add_argument("--accounts", type=int, default=500)
    parser.add_argument("--rate", type=float, default=50.0, help="commands/s for the latency part")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    setup_django()
    logging.basicConfig(level=logging.WARNING)
    database_url = use_bench_database(scratch_name("bench_cluster"))
    figures: dict[str, dict[str, float | str]] = {}
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
        "processor_rate_cluster_to_single": round(
            float(cluster["processor_commands_per_s"]) / float(single["processor_commands_per_s"]), 3
        ),
        "latency_p99_cluster_to_single": round(float(cluster["latency_p99_ms"]) / float(single["latency_p99_ms"]), 3),
        "latency_p50_cluster_to_single": round(float(cluster["latency_p50_ms"]) / float(single["latency_p50_ms"]), 3),
    }
    print(f"processor: {args.commands} commands; latency: command bus → projector committed, {args.rate:g}/s")
    rows = []
    for key in ("single", "cluster"):
        f = figures[key]
        rows.append(
            (
                str(f["setup"]),
                f"{f['processor_commands_per_s']:>7,} commands/s, p50 {f['latency_p50_ms']} ms, p99 {f['latency_p99_ms']} ms",
            )
        )
    rows += [
        ("processor rate, cluster / single", f"{ratios['processor_rate_cluster_to_single']:.2f}x"),
        ("latency p99, cluster / single", f"{ratios['latency_p99_cluster_to_single']:.2f}x"),
    ]
    print(table(rows))
    write_results(
        "cluster",
        {
            "commands": args.commands,
            "latency_rate_per_s": args.rate,
            "latency_measures": "CommandBus.send to the projector's commit (not view to websocket)",
            **figures,
            **ratios,
        },
    )


if __name__ == "__main__":
    main()
