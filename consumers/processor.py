"""The command processor: commands in, events out, exactly once.

Commands for one account all land on one partition of bank.commands, and exactly one
processor of the group owns a partition at a time, so each account has a single writer.
Its events go to the same partition number of bank.events, in a Kafka transaction that
also commits the consumed command offsets: either both happen or neither does.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from uuid import UUID

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from bank import domain, messages
from bank.config import KafkaSettings
from bank.kafka import consume_batch, consumer, dead_letter, next_offsets, read_to_end

log = logging.getLogger("bank.processor")


class ProcessorFailed(RuntimeError):
    """The processor cannot go on (fenced by a newer instance, or a fatal broker error); restart it."""


@dataclass
class AccountRecord:
    state: domain.Account
    command_ids: set[UUID] = field(default_factory=set)


Accounts = dict[UUID, AccountRecord]


def load_accounts(kafka: KafkaSettings, partitions: Iterable[int]) -> dict[int, Accounts]:
    """Fold bank.events of `partitions` (committed transactions only) into account states.

    Reading to the end waits out any transaction another instance left open, so that no
    decision is ever taken on a state that might still change.
    """
    wanted = sorted(set(partitions))
    accounts: dict[int, Accounts] = {p: {} for p in wanted}
    if not wanted:
        return accounts
    started, count = time.monotonic(), 0
    for batch in read_to_end(kafka, kafka.events_topic, wanted):
        for message in batch:
            apply_event(accounts[message.partition() or 0], message.value())
        count += len(batch)
    log.info("loaded %d events of partitions %s in %.2fs", count, wanted, time.monotonic() - started)
    return accounts


def apply_event(accounts: Accounts, value: bytes | None) -> None:
    envelope = messages.decode_event(value)
    record = accounts.get(envelope.account_id)
    if record is None:
        record = accounts[envelope.account_id] = AccountRecord(domain.Account.new(envelope.account_id))
    record.state = domain.evolve(record.state, envelope.event)
    record.command_ids.add(envelope.command_id)


class Processor:
    def __init__(
        self,
        kafka: KafkaSettings,
        instance: str,
        group: str | None = None,
        max_amount: int = domain.DEFAULT_MAX_AMOUNT,
        batch_size: int = 500,
        batch_wait: float = 0.05,
        transaction_timeout_ms: int = 10_000,
        fault_pause: float = 0.0,
    ) -> None:
        self.kafka = kafka
        self.instance = instance
        self.max_amount = max_amount
        self.batch_size = batch_size
        self.batch_wait = batch_wait
        group = group or kafka.group("processor")
        self.consumer: Consumer = consumer(kafka, group)
        self._producer_config = kafka.client_config() | {
            # Stable per instance: a restarted instance fences its predecessor's open transaction at once.
            "transactional.id": f"{group}-{instance}",
            "transaction.timeout.ms": transaction_timeout_ms,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
        }
        self.producer = Producer(self._producer_config)
        # Fault injection for the fencing tests: hold each transaction open this long before committing it.
        self.fault_pause = fault_pause
        self.accounts: dict[int, Accounts] = {}
        self.decided = 0
        self.aborts = 0

    # --- lifecycle ---

    def start(self) -> None:
        self._check_topics()
        self.producer.init_transactions(30)
        self.consumer.subscribe(
            [self.kafka.commands_topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )
        log.info("processor %s started on %s", self.instance, self.kafka.commands_topic)

    def close(self) -> None:
        self.consumer.close()
        try:
            self.producer.flush(10)
        except KafkaException as error:
            log.warning("processor %s: producer not flushed on close: %s", self.instance, error)
        log.info(
            "processor %s stopped after deciding %d commands (%d aborted batches)",
            self.instance,
            self.decided,
            self.aborts,
        )

    def _check_topics(self) -> None:
        topics = self.consumer.list_topics(timeout=10).topics
        counts = {}
        for name in (self.kafka.commands_topic, self.kafka.events_topic):
            if name not in topics:
                raise ProcessorFailed(f"topic {name} does not exist: run `manage.py create_topics`")
            counts[name] = len(topics[name].partitions)
        if len(set(counts.values())) != 1:
            raise ProcessorFailed(f"commands and events topics must have the same partition count, found {counts}")

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = [tp.partition for tp in partitions]
        log.info("processor %s assigned partitions %s; loading their accounts", self.instance, numbers)
        self.accounts.update(load_accounts(self.kafka, numbers))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = [tp.partition for tp in partitions]
        log.info("processor %s lost partitions %s", self.instance, numbers)
        for p in numbers:
            self.accounts.pop(p, None)

    # --- work ---

    def process_batch(self) -> int:
        """Decide one batch of commands in one transaction. Returns how many messages it consumed.

        1. Consume up to `batch_size` commands.
        2. Begin a transaction; for each command: decode (poison → dead-letter topic, in the
           same transaction), skip it if its command_id was decided before, `decide`, produce
           the events to the command's partition of bank.events, `evolve` the state.
        3. Add the consumed offsets to the transaction and commit it.
        4. On any failure: abort, then rebuild the batch's partitions from the log and seek
           back to their committed offsets, so the in-memory state matches what Kafka holds.
        """
        batch = consume_batch(self.consumer, self.batch_size, self.batch_wait)
        if not batch:
            return 0
        batch = self._without_errors(batch)
        if not batch:
            return 0
        partitions = sorted({m.partition() or 0 for m in batch})
        try:
            self.producer.begin_transaction()
            decided = sum(self._handle(message) for message in batch)
            if self.fault_pause:
                log.info(
                    "fault injection: holding a transaction of %d commands open for %.1fs", len(batch), self.fault_pause
                )
                time.sleep(self.fault_pause)
            # Deliver the events first: if a broker loss made them fail, the transaction is abortable and
            # send_offsets_to_transaction returns at once. Called while the group coordinator is gone it can
            # block past its timeout, forever (librdkafka #5456, #5511; seen here after losing two brokers).
            self.producer.flush(30)
            offsets, group = next_offsets(batch), self.consumer.consumer_group_metadata()
            self._retrying("send the offsets", lambda: self.producer.send_offsets_to_transaction(offsets, group, 30))
            self._retrying("commit", lambda: self.producer.commit_transaction(30))
        except KafkaException as exc:
            self._recover(exc.args[0], partitions)
            return len(batch)
        self.decided += decided
        return len(batch)

    def _retrying(self, what: str, call: Callable[[], None], attempts: int = 10) -> None:
        """A transaction call again while librdkafka says it is retriable (for a commit: it is still under way,
        and aborting now would fail with "conflicting commit in progress", batch after batch). Bounded: the
        last failure goes to _recover."""
        for attempt in range(1, attempts + 1):
            try:
                call()
                return
            except KafkaException as exc:
                error = exc.args[0]
                if not error.retriable() or error.txn_requires_abort() or attempt == attempts:
                    raise
                log.warning("processor %s: %s not confirmed yet (%s); retrying", self.instance, what, error.str())

    def _renew_producer(self, error: KafkaError) -> None:
        """A new transactional producer with the same transactional.id: init_transactions bumps its epoch, so
        whatever the old one left open is aborted; the caller then reloads the partitions' state."""
        log.warning("processor %s: producer unusable (%s); making a new one", self.instance, error.str())
        with contextlib.suppress(KafkaException):  # its queue is lost with its transaction, as it should be
            self.producer.flush(0)
        self.producer = Producer(self._producer_config)
        try:
            self.producer.init_transactions(30)
        except KafkaException as exc:
            raise ProcessorFailed(f"fatal Kafka error, this instance must restart: {exc.args[0].str()}") from exc

    def _without_errors(self, batch: list[Message]) -> list[Message]:
        good = []
        for message in batch:
            error = message.error()
            if error is None:
                good.append(message)
            elif error.fatal():
                raise ProcessorFailed(f"fatal consumer error: {error.str()}")
            else:
                log.warning("consumer error (librdkafka retries by itself): %s", error.str())
        return good

    def _handle(self, message: Message) -> int:
        try:
            command = messages.decode_command(message.value())
        except messages.PoisonMessage as error:
            dead_letter(self.producer, self.kafka, message, str(error))
            return 0
        partition = message.partition() or 0
        accounts = self.accounts.setdefault(partition, {})
        record = accounts.get(command.account_id)
        if record is None:
            record = accounts[command.account_id] = AccountRecord(domain.Account.new(command.account_id))
        if command.command_id in record.command_ids:
            log.info("command %s already decided; skipping the duplicate", command.command_id)
            return 0
        state = record.state
        for event in domain.decide(state, command.command, self.max_amount):
            state = domain.evolve(state, event)
            envelope = messages.EventEnvelope(
                event=event,
                event_id=uuid.uuid4(),
                account_id=command.account_id,
                sequence=state.version,
                occurred_at=messages.now(),
                command_id=command.command_id,
                actor=command.actor,
            )
            key, value, headers = messages.encode(envelope)
            self.producer.produce(self.kafka.events_topic, key=key, value=value, headers=headers, partition=partition)
        record.state = state
        record.command_ids.add(command.command_id)
        return 1

    def _recover(self, error: KafkaError, partitions: list[int]) -> None:
        log.warning("transaction failed (%s); aborting and reloading partitions %s", error.str(), partitions)
        self.aborts += 1
        fatal = error if error.fatal() else None
        if fatal is None:
            try:
                self._retrying("abort", lambda: self.producer.abort_transaction(30))
            except KafkaException as exc:
                if exc.args[0].fatal():
                    fatal = exc.args[0]
        if fatal is not None:
            # Fenced (the coordinator timed the transaction out, e.g. while brokers were down) or
            # another fatal producer error: this producer is done, the process need not be.
            self._renew_producer(fatal)
            partitions = sorted({*partitions, *(tp.partition for tp in self.consumer.assignment())})
        for p in partitions:
            self.accounts.pop(p, None)
        owned = {tp.partition for tp in self.consumer.assignment()}
        mine = [p for p in partitions if p in owned]
        if not mine:
            return
        try:
            committed = self.consumer.committed(
                [TopicPartition(self.kafka.commands_topic, p) for p in mine], timeout=30
            )
            for tp in committed:
                self.consumer.seek(
                    TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
                )
        except KafkaException as exc:
            # Most likely the partitions have just moved to another instance; the rebalance will sort it out.
            log.warning("could not seek back partitions %s: %s", mine, exc)
        self.accounts.update(load_accounts(self.kafka, mine))
