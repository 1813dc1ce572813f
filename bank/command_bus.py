"""Producing commands to Kafka, with the broker's confirmation, for the Django views.

One idempotent producer per process; a background thread serves its delivery
callbacks so that many request threads can each wait for their own command.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from uuid import UUID

from confluent_kafka import KafkaError, Message, Producer

from bank import messages, metrics
from bank.config import KafkaSettings
from bank.kafka import STATS_INTERVAL_MS, producer

log = logging.getLogger(__name__)


class CommandNotConfirmed(RuntimeError):
    """The broker did not confirm the command in time. It was not accepted; sending it again is safe."""


@dataclass(frozen=True)
class Receipt:
    """Where a command landed: enough to wait for its outcome later."""

    command_id: UUID
    account_id: UUID
    topic: str
    partition: int
    offset: int


class CommandBus:
    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka
        self.timeout = kafka.command_timeout
        # librdkafka gives up on the message itself at the same deadline, so a command
        # reported as failed is never delivered later behind the user's back.
        polled = {"statistics.interval.ms": STATS_INTERVAL_MS}  # by the poller thread below
        self._producer: Producer = producer(
            kafka,
            **{"message.timeout.ms": int(self.timeout * 1000), "linger.ms": 1, "client.id": "bank-commands"} | polled,
        )
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._serve_callbacks, name="command-bus-poller", daemon=True)
        self._poller.start()

    def _serve_callbacks(self) -> None:
        while not self._closed.is_set():
            try:
                self._producer.poll(0.05)
            except Exception:  # this thread must never die: every later command would wait in vain
                log.exception("command bus: a delivery callback failed")

    def _produce(self, envelope: messages.CommandEnvelope) -> Future[Message]:
        key, value, headers = messages.encode(envelope)
        done: Future[Message] = Future()
        kind = envelope.type
        metrics.commands_received.labels(kind).inc()
        started = time.perf_counter()

        def on_delivery(error: KafkaError | None, message: Message) -> None:
            # Counted here, not where the view waits: the broker's answer is what happened, even to a view that gave up.
            metrics.commands_sent.labels(kind, "not_confirmed" if error is not None else "confirmed").inc()
            if error is None:
                metrics.command_confirm_seconds.observe(time.perf_counter() - started)
            if done.done():  # the view gave up waiting (timeout, client gone): nobody to tell
                return
            if error is not None:
                done.set_exception(CommandNotConfirmed(f"Kafka did not accept the command: {error.str()}"))
            else:
                done.set_result(message)

        try:
            self._producer.produce(
                self.kafka.commands_topic, key=key, value=value, headers=headers, on_delivery=on_delivery
            )
        except BufferError:
            metrics.commands_sent.labels(kind, "not_confirmed").inc()
            raise CommandNotConfirmed("Kafka producer queue is full; try again in a moment") from None
        return done

    def send(self, envelope: messages.CommandEnvelope) -> Receipt:
        """Produce one command and wait until the broker has it on all in-sync replicas."""
        done = self._produce(envelope)
        try:
            message = done.result(timeout=self.timeout + 1.0)
        except FutureTimeout:
            raise CommandNotConfirmed(f"Kafka did not confirm the command within {self.timeout:g}s") from None
        return self._receipt(envelope, message)

    async def asend(self, envelope: messages.CommandEnvelope) -> Receipt:
        """`send` for async views: the wait for the broker holds no thread."""
        done = asyncio.wrap_future(self._produce(envelope))
        try:
            message = await asyncio.wait_for(done, self.timeout + 1.0)
        except TimeoutError:
            raise CommandNotConfirmed(f"Kafka did not confirm the command within {self.timeout:g}s") from None
        return self._receipt(envelope, message)

    @staticmethod
    def _receipt(envelope: messages.CommandEnvelope, message: Message) -> Receipt:
        return Receipt(
            envelope.command_id,
            envelope.account_id,
            message.topic() or "",
            message.partition() or 0,
            message.offset() or 0,
        )

    def close(self) -> None:
        self._producer.flush(self.timeout)
        self._closed.set()


_buses: dict[KafkaSettings, CommandBus] = {}
_buses_lock = threading.Lock()


def get_command_bus() -> CommandBus:
    """The process's command bus for the configured Kafka (one producer, created on first use)."""
    from django.conf import settings

    with _buses_lock:
        bus = _buses.get(settings.KAFKA)
        if bus is None:
            bus = _buses[settings.KAFKA] = CommandBus(settings.KAFKA)
        return bus


def close_all() -> None:
    """Flush and close every bus of this process (at shutdown, and between test sessions)."""
    with _buses_lock:
        buses = list(_buses.values())
        _buses.clear()
    for bus in buses:
        bus.close()
