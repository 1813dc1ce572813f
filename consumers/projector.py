"""The projector: bank.events → PostgreSQL projections → live updates, exactly once per event.

Exactly once comes from the database, not from Kafka: the checkpoint (next offset per
partition) is written in the same transaction as the rows, and on assignment the consumer
seeks to it. Offsets are committed to Kafka as well, after the database commit, only so
that Kafka's tools show the group's lag.
"""

from __future__ import annotations

import logging

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, Producer, TopicPartition
from django.db import connection, transaction

from bank import messages
from bank.config import KafkaSettings
from bank.kafka import consume_batch, consumer, dead_letter, next_offsets, producer
from projections import live, registry, store
from projections.apply import SequenceGap

log = logging.getLogger("bank.projector")


class ProjectorFailed(RuntimeError):
    """The projector must stop: applying on would make the projections wrong (for example a sequence gap)."""


class Projector:
    def __init__(
        self,
        kafka: KafkaSettings,
        group: str | None = None,
        batch_size: int = 2000,
        batch_wait: float = 0.05,
        push: bool = True,
    ) -> None:
        self.kafka = kafka
        self.topic = kafka.events_topic
        self.batch_size = batch_size
        self.batch_wait = batch_wait
        self.push = push
        self.consumer: Consumer = consumer(kafka, group or kafka.group("projector"))
        self.dead_letters: Producer = producer(kafka)
        self.applied = 0
        self.pushed = 0

    def start(self) -> None:
        self.consumer.subscribe(
            [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )
        log.info("projector started on %s", self.topic)

    def close(self) -> None:
        self.consumer.close()
        self.dead_letters.flush(10)
        log.info("projector stopped after applying %d events", self.applied)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with connection.cursor() as cursor:
            checkpoints = store.load_checkpoints(cursor, self.topic, registry.PROJECTIONS)
        for tp in partitions:
            # Start at the projection that is furthest behind; apply_batch skips what the others already have.
            positions = [checkpoints.get((p, tp.partition), 0) for p in registry.PROJECTIONS]
            tp.offset = min(positions) if any(positions) else OFFSET_BEGINNING
        log.info("projector assigned %s", ", ".join(f"{tp.partition}@{max(tp.offset, 0)}" for tp in partitions))
        consumer.assign(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("projector lost partitions %s", [tp.partition for tp in partitions])

    def process_batch(self) -> int:
        """Project one batch. Returns how many messages it consumed.

        1. Consume up to `batch_size` events or `batch_wait` seconds.
        2. Decode them; a poison message goes to bank.deadletters (flushed before the
           database commit, so a crash can only duplicate a dead letter, never lose one).
        3. One database transaction: projection rows, dead-letter rows, checkpoints.
        4. After the commit: commit offsets to Kafka (for lag tools), push live updates.
        """
        batch = [m for m in consume_batch(self.consumer, self.batch_size, self.batch_wait) if self._usable(m)]
        if not batch:
            return 0
        events: list[store.Positioned] = []
        poison: list[tuple[Message, str]] = []
        for message in batch:
            try:
                envelope = messages.decode_event(message.value())
            except messages.PoisonMessage as bad:
                poison.append((message, str(bad)))
                dead_letter(self.dead_letters, self.kafka, message, str(bad))
                continue
            events.append(store.Positioned(message.partition() or 0, message.offset() or 0, envelope))
        if poison and self.dead_letters.flush(30) > 0:
            raise ProjectorFailed("could not write dead letters to Kafka; will retry the batch after a restart")
        ends = {tp.partition: tp.offset for tp in next_offsets(batch)}
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                outcome = store.apply_batch(cursor, self.topic, events, ends, registry.chosen())
                for message, error in poison:
                    store.record_dead_letter(
                        cursor,
                        self.topic,
                        message.partition() or 0,
                        message.offset() or 0,
                        message.key(),
                        message.value(),
                        error,
                    )
        except SequenceGap as gap:
            raise ProjectorFailed(f"sequence gap, projections left at the last good batch: {gap}") from gap
        self.applied += outcome.applied
        try:
            # The consumer's position, not the last offset + 1: it is past transaction markers, so lag can reach 0.
            positions = self.consumer.position([TopicPartition(self.topic, p) for p in ends])
            self.consumer.commit(offsets=[tp for tp in positions if tp.offset >= 0], asynchronous=True)
        except KafkaException as error:
            log.warning("could not commit offsets to Kafka (only lag reporting suffers): %s", error)
        if self.push:
            self.pushed += live.push(outcome)
        return len(batch)

    def _usable(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return True
        if error.fatal():
            raise ProjectorFailed(f"fatal consumer error: {error.str()}")
        log.warning("consumer error (librdkafka retries by itself): %s", error.str())
        return False
