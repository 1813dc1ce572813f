"""The Kafka clients made in bank/kafka.py, against a broker of the test's own that it stops and starts again."""

from __future__ import annotations

import logging
import shutil
import threading
import time

import pytest
from confluent_kafka import Consumer, Producer

from bank.command_bus import CommandBus
from bank.config import KafkaSettings
from bank.kafka import BoundedCalls, CallOverran, ReadInterrupted, consumer, ensure_topics, producer
from devservices.kafka import KafkaNode
from devservices.process import free_port
from tests.helpers import VAR, wait_until

pytestmark = pytest.mark.timeout(240)


def serve(clients: tuple[Consumer, Producer], seconds: float) -> None:
    """Poll both clients for `seconds`, as the workers' loops do: callbacks and logs are served from polls."""
    listening, sending = clients
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        listening.poll(0.1)
        sending.poll(0)


def test_it_logs_a_broker_outage_once_when_it_starts_and_once_when_it_ends(caplog: pytest.LogCaptureFixture) -> None:
    shutil.rmtree(VAR / "kafka-outage", ignore_errors=True)
    node = KafkaNode(VAR / "kafka-outage", port=free_port(), controller_port=free_port(), internal_partitions=1)
    node.start(wait=90)
    kafka = KafkaSettings(bootstrap_servers=node.bootstrap, topic_prefix="outage.", partitions=1)
    ensure_topics(kafka)
    listening = consumer(kafka, "outage-test")
    listening.subscribe([kafka.events_topic])
    sending = producer(kafka)  # polled here like a worker's; the web's command bus polls its own
    bus = CommandBus(kafka)
    clients = (listening, sending)
    caplog.set_level(logging.INFO)
    try:
        wait_until(lambda: serve(clients, 0.2) or listening.assignment(), 30, what="the consumer's assignment")
        sending.produce(kafka.events_topic, b"before")
        assert sending.flush(10) == 0
        node.stop()
        serve(clients, 5.0)  # every client retries its connections meanwhile
        node.start(wait=90)

        def back() -> bool:
            serve(clients, 0.5)
            return any("reachable again" in r.getMessage() for r in caplog.records)

        wait_until(back, 60, 0, "the outage to be reported over")
    finally:
        bus.close()
        listening.close()
        node.stop()
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("bank.kafka")]
    assert [line for line in lines if node.bootstrap in line and "unreachable" in line] != []
    assert len([line for line in lines if "unreachable" in line]) == 1, lines
    assert len([line for line in lines if "reachable again" in line]) == 1, lines
    refused = [line for line in lines if "Connection refused" in line]
    assert len(refused) <= 1, refused  # at most in the line that says the outage started


# --- calls librdkafka may leave blocked past their timeout ---


def test_it_returns_a_bounded_call_s_result_and_raises_its_exception_here() -> None:
    calls = BoundedCalls("test calls", stop=lambda: False)
    try:
        assert calls.run("a quick call", lambda: 42, limit=5) == 42
        with pytest.raises(ZeroDivisionError):
            calls.run("a failing call", lambda: 1 // 0, limit=5)
    finally:
        calls.close()


def test_it_gives_up_on_a_call_blocked_past_its_limit_and_names_it() -> None:
    release = threading.Event()
    calls = BoundedCalls("test calls", stop=lambda: False)
    try:
        started = time.monotonic()
        with pytest.raises(CallOverran, match="the commit still blocked"):
            calls.run("the commit", release.wait, limit=1.5)
        assert time.monotonic() - started < 10  # bounded: not waiting for the blocked call
    finally:
        release.set()
        calls.close()


def test_it_stops_waiting_for_a_blocked_call_when_the_worker_stops() -> None:
    release, stopping = threading.Event(), threading.Event()
    calls = BoundedCalls("test calls", stop=stopping.is_set)
    threading.Timer(0.5, stopping.set).start()
    try:
        with pytest.raises(ReadInterrupted, match="waiting for the commit"):
            calls.run("the commit", release.wait, limit=600)
    finally:
        release.set()
        calls.close()
