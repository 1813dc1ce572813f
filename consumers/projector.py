"""The projector: bank.events → PostgreSQL projections → live updates, exactly once per event.

Exactly once comes from the database, not from Kafka: the checkpoint (next offset per
partition) is written in the same transaction as the rows, and on assignment the consumer
seeks to it. Offsets are committed to Kafka as well, after the database commit, only so
that Kafka's tools show the group's lag.

No one account stops the others: a sequence gap, a poison record naming an account, or a
row the database refuses parks that account (projections/parking.py) and the batch goes on
without it. A database that is down is waited out: the batch is held and written again, with
a back-off, until PostgreSQL is back; nothing is consumed past it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, Producer, TopicPartition
from django import db
from django.db import connection, transaction

from bank import messages, metrics
from bank.config import KafkaSettings
from bank.kafka import consume_batch, consumer, dead_letter, next_offsets, producer, reader
from consumers.worker import Shutdown
from live import updates
from projections import generations, parking, registry, store
from projections.apply import SequenceGap
from projections.models import ParkedAccount

log = logging.getLogger(__name__)

# PostgreSQL is unreachable or restarting: transient, the batch is written again later.
DATABASE_DOWN = (db.OperationalError, db.InterfaceError, psycopg.OperationalError, psycopg.InterfaceError)
# The database refuses a row's data (too long, out of range, a constraint): find whose and park that account.
# Other errors (an unknown column or table: the schema, not a row) stop the projector for the supervisor.
DATABASE_REFUSED = (db.DataError, db.IntegrityError, psycopg.DataError, psycopg.IntegrityError)
MAX_BACKOFF = 5.0
REREAD_TIMEOUT = 60.0


class ProjectorFailed(RuntimeError):
    """The projector must stop: going on would make the projections wrong or lose a dead letter."""


class NotNow(RuntimeError):
    """A transient failure: hold the batch and try it again after a back-off."""


@dataclass
class Held:
    """A consumed batch until it is in the database: kept across outages, so nothing is consumed past it."""

    messages: list[Message]
    events: list[store.Positioned]
    poison: list[tuple[Message, str, UUID | None]]
    ends: dict[int, int]
    records: list[parking.Record]  # events and poison in log order, for the parking rules


class _Probe(Exception):
    """Raised to roll a probing savepoint back."""


class Projector:
    def __init__(
        self,
        kafka: KafkaSettings,
        group: str | None = None,
        batch_size: int = 2000,
        batch_wait: float = 0.05,
        push: bool = True,
        shutdown: Shutdown | None = None,
    ) -> None:
        self.kafka = kafka
        self.topic = kafka.events_topic
        self.batch_size = batch_size
        self.batch_wait = batch_wait
        self.push = push
        self.shutdown = shutdown or Shutdown()
        self.consumer: Consumer = consumer(kafka, group or kafka.group("projector"))
        self.dead_letters: Producer = producer(kafka)
        self.applied = 0
        self.batches = 0
        self.pushed = 0
        self.held: Held | None = None
        self.failures = 0
        self._reported: dict[int, int] = {}  # the offsets last committed to Kafka (for lag tools), per partition

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
        while True:
            try:
                with connection.cursor() as cursor:
                    checkpoints = store.load_checkpoints(cursor, self.topic, registry.PROJECTIONS)
                    writes = [p.name for p in generations.deployed(cursor)]
                self.failures = 0
                break
            except DATABASE_DOWN as error:
                if self._back_off(f"reading checkpoints for partitions {[tp.partition for tp in partitions]}", error):
                    return  # shutting down: assign nothing, the consumer closes
        self._check_not_ahead(consumer, partitions, checkpoints)
        for tp in partitions:
            # Start at the projection that is furthest behind; apply_batch skips what the others already have.
            positions = [checkpoints.get((p, tp.partition), 0) for p in writes]
            tp.offset = min(positions) if any(positions) else OFFSET_BEGINNING
        log.info("projector assigned %s", ", ".join(f"{tp.partition}@{max(tp.offset, 0)}" for tp in partitions))
        consumer.assign(partitions)

    def _check_not_ahead(
        self, consumer: Consumer, partitions: list[TopicPartition], checkpoints: dict[tuple[str, int], int]
    ) -> None:
        """Refuse projections that claim offsets the log does not have: they were built from another log (the
        topic was deleted and created again, or the bank now points at another cluster). Going on would skip
        the new log's events up to the old checkpoints without a word: every page would stay "pending"."""
        for tp in partitions:
            ahead = {
                p: checkpoints[(p, tp.partition)] for p in registry.PROJECTIONS if (p, tp.partition) in checkpoints
            }
            if not ahead:
                continue
            try:
                _, end = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, tp.partition), timeout=10, cached=False
                )
            except KafkaException as error:  # the broker is unreachable now: the next assignment checks again
                log.warning("could not check %s[%d] against the checkpoints: %s", self.topic, tp.partition, error)
                continue
            if max(ahead.values()) > end:
                raise ProjectorFailed(
                    f"the projections are ahead of {self.topic}[{tp.partition}] (checkpoints {ahead}, log end {end}): "
                    "they were built from another log; rebuild them from this one with `manage.py replay`"
                )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("projector lost partitions %s", [tp.partition for tp in partitions])
        for tp in partitions:
            self._reported.pop(tp.partition, None)
        self.held = None  # its partitions may go elsewhere; the next owner starts from the checkpoints

    def _back_off(self, what: str, error: Exception) -> bool:
        """Log, drop the broken connection, wait (0.5 s doubling to 5 s). True if shutting down."""
        self.failures += 1
        delay = min(MAX_BACKOFF, 0.5 * 2 ** (self.failures - 1))
        log.warning(
            "%s failed (%s); retrying in %.1fs (attempt %d)",
            what,
            str(error).strip() or type(error),
            delay,
            self.failures,
        )
        try:
            connection.close()
        except Exception:  # a dead connection may fail to close; the pool drops it either way
            log.debug("closing the broken connection failed", exc_info=True)
        return self.shutdown.wait(delay)

    def process_batch(self) -> int:
        """Project one batch. Returns how many messages it consumed.

        1. Consume up to `batch_size` events or `batch_wait` seconds (unless a batch is held).
        2. Decode them; a poison message goes to bank.deadletters (flushed before the
           database commit, so a crash can only duplicate a dead letter, never lose one).
        3. One database transaction: releases, projection rows, parked accounts, dead-letter
           rows, checkpoints. If PostgreSQL is down, hold the batch and try it again later.
        4. After the commit: push live updates (first: the pages wait for them), commit offsets to
           Kafka (for lag tools only), count.
        """
        if self.held is None:
            batch = [m for m in consume_batch(self.consumer, self.batch_size, self.batch_wait) if self._usable(m)]
            if not batch:
                # Idle: the position moves past the last transaction markers only on the poll after the batch.
                self._report_positions([tp.partition for tp in self.consumer.assignment()])
                return 0
            self.held = self._prepare(batch)
        held = self.held
        started = time.perf_counter()
        try:
            outcome = self._write(held)
        except (*DATABASE_DOWN, NotNow) as error:
            self._back_off(f"writing a batch of {len(held.messages)} events", error)
            return 0
        self.held = None
        if self.push:
            sent = updates.push(outcome)
            self.pushed += sent
            metrics.pushes_sent.inc(sent)
            pushed_at = datetime.now(UTC)
            for rows in outcome.audit.values():
                for row in rows:
                    metrics.event_to_push_seconds.observe((pushed_at - row.occurred_at).total_seconds())
        if self.failures:
            log.info("the database is back: wrote the held batch after %d failed attempt(s)", self.failures)
            self.failures = 0
        self.applied += outcome.applied
        self._count(held.events, outcome, held.ends, len(held.poison), time.perf_counter() - started)
        self.batches += 1
        if held.poison or self.batches % 20 == 1:
            # A gap or a refused row may have parked an account: counted now and then, and after poison.
            metrics.quarantined_accounts.labels("projector").set(ParkedAccount.objects.count())
        self._report_positions(list(held.ends))
        return len(held.messages)

    def _report_positions(self, partitions: list[int]) -> None:
        """Commit the consumer's positions to Kafka where they moved (for lag tools only; the checkpoints are
        in the database). The position, not the last offset + 1: past transaction markers, so lag can reach 0."""
        try:
            positions = self.consumer.position([TopicPartition(self.topic, p) for p in partitions])
            moved = [tp for tp in positions if tp.offset >= 0 and self._reported.get(tp.partition) != tp.offset]
            if moved:
                self.consumer.commit(offsets=moved, asynchronous=True)
                self._reported.update({tp.partition: tp.offset for tp in moved})
        except KafkaException as error:
            log.warning("could not commit offsets to Kafka (only lag reporting suffers): %s", error)

    def _prepare(self, batch: list[Message]) -> Held:
        events: list[store.Positioned] = []
        poison: list[tuple[Message, str, UUID | None]] = []
        records: list[parking.Record] = []
        for message in batch:
            partition, offset = message.partition() or 0, message.offset() or 0
            try:
                envelope = messages.decode_event(message.value())
            except messages.PoisonMessage as bad:
                named = messages.named_account(message.key(), message.value())
                poison.append((message, str(bad), named))
                records.append(parking.Poison(partition, offset, named, str(bad)))
                dead_letter(self.dead_letters, self.kafka, message, str(bad))
                continue
            event = store.Positioned(partition, offset, envelope, message.key())
            events.append(event)
            records.append(event)
        if poison and self.dead_letters.flush(30) > 0:
            raise ProjectorFailed("could not write dead letters to Kafka; will retry the batch after a restart")
        return Held(batch, events, poison, {tp.partition: tp.offset for tp in next_offsets(batch)}, records)

    def _write(self, held: Held) -> store.BatchChanges:
        """The batch's database transaction.

        1. The parking rules (parking.Parking, as in replay) over the batch's records in log order,
           from the parked spots and last sequences in the database: which events apply, which
           accounts park (a gap, poison naming them), which are released (their events read again
           from where they parked, accepting what parked them); write the spots that changed.
        2. Apply those events in a savepoint; a row the database refuses parks that account from
           its first event there and the batch is tried again without it.
        3. The dead-letter rows.
        """
        with transaction.atomic(), connection.cursor() as cursor:
            store.take_lock(cursor)
            # Read under the lock, every batch: a rebuild's swap (projections/generations.py) changes it between two.
            projections = generations.deployed(cursor)
            mentioned = list({e.envelope.account_id for e in held.events} | {a for _, _, a in held.poison if a})
            before = parking.parked(cursor, self.topic, mentioned)
            last = store.last_sequences(cursor, mentioned)
            rules = parking.Parking(dict(before), dict(last), reread=self._reread)
            plan = rules.decide(held.records)
            parking.save(cursor, self.topic, before, rules.spots)
            outcome = self._apply(cursor, plan.apply, held.ends, last, projections)
            for spot, applied in plan.released:
                log.info(
                    "released account %s: applied %d of its events from %s[%d]@%d on",
                    spot.account_id,
                    applied,
                    self.topic,
                    spot.partition,
                    spot.offset,
                )
            for message, error, _ in held.poison:
                store.record_dead_letter(
                    cursor,
                    self.topic,
                    message.partition() or 0,
                    message.offset() or 0,
                    message.key(),
                    message.value(),
                    error,
                )
        return outcome

    def _apply(
        self,
        cursor: object,
        todo: list[store.Positioned],
        ends: dict[int, int],
        last: dict[UUID, int],
        projections: list[registry.Projection],
    ) -> store.BatchChanges:
        """apply_batch in a savepoint, leaving out (and parking) each account that fails it, until it goes through."""
        while True:
            try:
                with transaction.atomic():
                    return store.apply_batch(cursor, self.topic, todo, ends, projections, sequences=last)
            except SequenceGap as gap:
                first = next(e for e in todo if e.envelope.event_id == gap.event_id)
                failed = {gap.account_id: (first, f"sequence gap: {gap}")}
            except DATABASE_DOWN:
                raise
            except DATABASE_REFUSED as error:
                failed = self._refused_by(cursor, todo, projections)
                accounts = {e.envelope.account_id for e in todo}
                if not failed or (len(accounts) > 1 and failed.keys() == accounts):
                    # Not one account's rows but all of them: the schema, not the data (e.g. a migration missing).
                    raise ProjectorFailed(f"the database refused the batch, not one account's rows: {error}") from error
            for account, (first, reason) in failed.items():
                parking.park(cursor, self.topic, parking.Parked(account, first.partition, first.offset, reason))
            todo = [
                e
                for e in todo
                if e.envelope.account_id not in failed or e.offset < failed[e.envelope.account_id][0].offset
            ]

    def _refused_by(
        self, cursor: object, todo: list[store.Positioned], projections: list[registry.Projection]
    ) -> dict[UUID, tuple[store.Positioned, str]]:
        """Which accounts' rows the database refuses: each account's events alone, in a savepoint rolled back."""
        by_account: dict[UUID, list[store.Positioned]] = {}
        for event in todo:
            by_account.setdefault(event.envelope.account_id, []).append(event)
        refused = {}
        for account, events in by_account.items():
            try:
                with transaction.atomic():
                    store.apply_batch(cursor, self.topic, events, {}, projections)
                    raise _Probe
            except (_Probe, SequenceGap):
                continue  # a gap is found by the next full try
            except DATABASE_DOWN:
                raise
            except DATABASE_REFUSED as error:
                refused[account] = (events[0], f"database refused a row: {str(error).strip()}")
        return refused

    def _reread(self, spot: parking.Parked, until: int) -> list[store.Positioned]:
        """A parked account's events from its spot up to `until`, read again (skipped when they passed)."""
        key = str(spot.account_id).encode()
        events = []
        for message in read_range(self.kafka, self.topic, spot.partition, spot.offset, until):
            if message.key() != key:
                continue
            try:
                envelope = messages.decode_event(message.value())
            except messages.PoisonMessage:
                continue  # dead-lettered when it was first read
            if envelope.account_id == spot.account_id:
                events.append(store.Positioned(spot.partition, message.offset() or 0, envelope, key))
        return events

    @staticmethod
    def _count(
        events: list[store.Positioned], outcome: store.BatchChanges, ends: dict[int, int], poison: int, seconds: float
    ) -> None:
        """The batch's figures, after its commit: applied per partition, duplicates, checkpoints, dead letters."""
        applied_ids = {row.event_id for rows in outcome.audit.values() for row in rows}
        per_partition = Counter(e.partition for e in events if e.envelope.event_id in applied_ids)
        for partition, count in per_partition.items():
            metrics.events_applied.labels(str(partition)).inc(count)
        metrics.duplicates_skipped.inc(outcome.duplicates)
        for partition, offset in ends.items():
            metrics.checkpoint_offset.labels(str(partition)).set(offset)
        if poison:
            metrics.dead_letters.labels("projector").inc(poison)
        metrics.projector_batch_size.observe(len(events) + poison)
        metrics.projector_batch_seconds.observe(seconds)

    def _usable(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return True
        if error.fatal():
            raise ProjectorFailed(f"fatal consumer error: {error.str()}")
        log.warning("consumer error (librdkafka retries by itself): %s", error.str())
        return False


def read_range(kafka: KafkaSettings, topic: str, partition: int, start: int, end: int) -> list[Message]:
    """The committed messages of one partition from `start` up to `end` (exclusive), within REREAD_TIMEOUT."""
    if start >= end:
        return []
    events = reader(kafka)
    try:
        events.assign([TopicPartition(topic, partition, start)])
        found: list[Message] = []
        deadline = time.monotonic() + REREAD_TIMEOUT
        while True:
            for m in events.consume(10_000, 0.2):
                if m.error() is None and (m.offset() or 0) < end:
                    found.append(m)
            if events.position([TopicPartition(topic, partition)])[0].offset >= end:
                return found
            if time.monotonic() > deadline:
                raise NotNow(f"could not read {topic}[{partition}] from {start} to {end} within {REREAD_TIMEOUT:g}s")
    finally:
        events.close()
