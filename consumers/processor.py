"""The command processor: commands in, events out, exactly once.

Commands for one account all land on one partition of bank.commands, and exactly one
processor of the group owns a partition at a time, so each account has a single writer.
Its events go to the same partition number of bank.events, in a Kafka transaction that
also commits the consumed command offsets and the new state of each changed account
(bank.account-state, see consumers/recovery.py): all happen or none does.

A record on bank.events that the processor did not write (undecodable, or out of sequence)
never stops it: it is dead-lettered, and the account it names is quarantined (its commands
are rejected with `account_quarantined`) until an operator sends ReleaseAccount.

A transfer's next step (`domain.next_step`) is a command for the other account: it goes to
bank.commands, keyed by that account (the producer's murmur2_random partitioner, as the
command bus), in the same transaction as the event that calls for it, with an id derived from
the transfer and the step. So a step is produced exactly when its cause is committed, and
decided once wherever it lands: the saga needs no database of its own.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from bank import domain, messages, metrics
from bank.config import KafkaSettings
from bank.kafka import (
    CallOverran,
    LogStalled,
    ReadInterrupted,
    Transactional,
    TransactionalProducer,
    consume_batch,
    consumer,
    dead_letter,
    next_offsets,
    read_to_end,
)
from consumers.recovery import (
    DEFAULT_DEDUP_WINDOW,
    DEFAULT_STATE_EVERY,
    LoadCounts,
    Loader,
    Mode,
    Partition,
    encode_state,
)

log = logging.getLogger(__name__)

# librdkafka's timeout for each transaction call, and how long past it the processor waits before it
# presumes the producer wedged (librdkafka #5456, #5511) and replaces it.
TXN_CALL_TIMEOUT = 10.0
TXN_CALL_GRACE = 5.0

# Fault injection, for tests only: called at named points of a transaction ("held": everything produced,
# nothing flushed; "commit": on the calls' thread, just before commit_transaction). It may sleep, or raise
# KafkaException as a failed call would. Installed by tests (tests/faulty_processor.py for a worker process,
# `faults=` for one in the test's process); None in production.
FaultHook = Callable[["Processor", str], None]
fault_hook: FaultHook | None = None


class ProcessorFailed(RuntimeError):
    """The processor cannot go on (fenced by a newer instance, or a fatal broker error); restart it."""


@dataclass(frozen=True)
class ProcessorConfig:
    instance: str  # stable per instance: its transactional.id, so a restart fences its predecessor at once
    group: str | None = None  # default: the settings' processor group
    max_amount: int = domain.DEFAULT_MAX_AMOUNT
    batch_size: int = 500
    batch_wait: float = 0.05
    transaction_timeout_ms: int = 10_000
    recovery: Mode = "state"  # "full" (the benchmark's baseline) neither reads nor writes the state topic
    dedup_window: int = DEFAULT_DEDUP_WINDOW
    max_stall: float = 120.0
    state_every: int = DEFAULT_STATE_EVERY
    call_timeout: float = TXN_CALL_TIMEOUT
    call_grace: float = TXN_CALL_GRACE


@dataclass
class Batch:
    """One transaction's worth of work: the commands, the partitions it touches, what it decided."""

    messages: list[Message]
    partitions: list[int]
    checkpoint: bool  # the changed accounts' states go in this transaction
    offsets: list[TopicPartition]
    started: float = field(default_factory=time.perf_counter)
    decided: int = 0
    outcomes: list[tuple[str, str, str]] = field(default_factory=list)  # (type, outcome, reason) per command


class Processor:
    def __init__(
        self,
        kafka: KafkaSettings,
        config: ProcessorConfig,
        stop: Callable[[], bool] | None = None,
        faults: FaultHook | None = None,
    ) -> None:
        self.kafka, self.config = kafka, config
        self.instance = config.instance
        self.max_amount = config.max_amount
        self.batch_size = config.batch_size
        self.batch_wait = config.batch_wait
        self.window = config.dedup_window
        self.state_every = max(1, config.state_every)
        self.store = config.recovery == "state"
        self.stop = stop or (lambda: False)
        self.faults = faults or fault_hook
        self.loader = Loader(kafka, config.recovery, config.dedup_window, self.stop, config.max_stall)
        group = config.group or kafka.group("processor")
        self.consumer: Consumer = consumer(kafka, group)
        self.txn = TransactionalProducer(
            kafka,
            f"{group}-{config.instance}",
            config.transaction_timeout_ms,
            config.call_timeout,
            config.call_grace,
            self.stop,
            f"processor {config.instance}",
            wrap_commit=self._fault_at_commit,
            on_replace=metrics.producers_replaced.inc,
        )
        self.partitions: dict[int, Partition] = {}
        self.last_load = LoadCounts()
        self.decided = 0
        self.transactions = 0
        self.aborts = 0
        # Per partition whose every delivered command is committed: the committed offset (None: not looked up yet).
        self._committed: dict[int, int | None] = {}
        self._look_up_after = 0.0

    @property
    def producers_replaced(self) -> int:
        return self.txn.replaced

    # --- lifecycle ---

    def start(self) -> None:
        self._check_topics()
        self._init_transactions()
        self.consumer.subscribe(
            [self.kafka.commands_topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )
        log.info(
            "processor %s started on %s (recovery from %s, last %d command ids per account remembered)",
            self.instance,
            self.kafka.commands_topic,
            self.kafka.state_topic if self.store else "the full history",
            self.window,
        )

    def close(self) -> None:
        self.consumer.close()
        self.txn.close()
        log.info(
            "processor %s stopped after deciding %d commands (%d aborted batches)",
            self.instance,
            self.decided,
            self.aborts,
        )

    def _check_topics(self) -> None:
        topics = self.consumer.list_topics(timeout=10).topics
        counts = {}
        names = [self.kafka.commands_topic, self.kafka.events_topic]
        if self.store:
            names.append(self.kafka.state_topic)
        for name in names:
            if name not in topics:
                raise ProcessorFailed(f"topic {name} does not exist: run `manage.py create_topics`")
            counts[name] = len(topics[name].partitions)
        if len(set(counts.values())) != 1:
            raise ProcessorFailed(f"the processor's topics must have the same partition count, found {counts}")

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = [tp.partition for tp in partitions]
        log.info("processor %s assigned partitions %s; loading their accounts", self.instance, numbers)
        self._load(numbers)
        self._committed.update(dict.fromkeys(numbers))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = [tp.partition for tp in partitions]
        log.info("processor %s lost partitions %s", self.instance, numbers)
        for p in numbers:
            self.partitions.pop(p, None)
            self._committed.pop(p, None)

    def _load(self, numbers: list[int]) -> None:
        try:
            loaded, self.last_load = self.loader.load(numbers)
        except LogStalled as error:
            raise ProcessorFailed(f"cannot load partitions {numbers}: {error}") from error
        self.partitions.update(loaded)

    # --- work ---

    def process_batch(self) -> int:
        """Decide one batch of commands in one transaction. Returns how many messages it consumed.

        1. Consume up to `batch_size` commands (an assignment loads its partitions first).
        2. Begin a transaction; for each command: decode (poison → dead-letter topic, in the
           same transaction), skip it if its command_id is among the account's recent ones,
           reject it if the account is quarantined, else `decide`; produce the events to the
           command's partition of bank.events, `evolve` the state.
        3. Add the foreign records found since the last transaction (dead letters) and, every
           `state_every` transactions (and when idle), the new state of every account changed
           since (bank.account-state), then the consumed offsets, and commit: events, states and
           offsets together or not at all.
        4. Check that the transaction's events sit right after what this instance has seen of
           each partition; if another producer wrote in between, read and quarantine what it wrote.
        5. On any failure: abort, then rebuild the batch's partitions from the log and seek
           back to their committed offsets, so the in-memory state matches what Kafka holds.
        """
        # 1. Consume.
        try:
            messages_in = self._without_errors(consume_batch(self.consumer, self.batch_size, self.batch_wait))
        except ReadInterrupted as stopped:
            log.info("processor %s: %s", self.instance, stopped)
            return 0
        batch = self._plan(messages_in)
        if batch is None:
            return 0
        self.txn.renew_if_outage_over(busy=bool(batch.messages))
        try:
            # 2. Decide each command into the open transaction.
            self.txn.begin()
            batch.decided = sum(self._handle(message, batch) for message in batch.messages)
            # 3. Side records, the offsets, and commit.
            self._produce_side_records(batch.checkpoint)
            if self.faults:
                self.faults(self, "held")
            self.txn.commit(batch.offsets, self.consumer)
        except KafkaException as exc:
            self._recover(exc.args[0], batch)  # 5.
            return len(batch.messages)
        except CallOverran as overran:
            self._recover(KafkaError(KafkaError._TIMED_OUT, str(overran), fatal=True), batch)  # 5.
            return len(batch.messages)
        self._committed_batch(batch)
        self._check_own_offsets()  # 4.
        return len(batch.messages)

    def _plan(self, messages_in: list[Message]) -> Batch | None:
        """The batch to make of what was consumed, or None when there is nothing to do (idle, nothing owed)."""
        pending = {p for p, part in self.partitions.items() if part.foreign}
        unsaved = {p for p, part in self.partitions.items() if part.dirty} if self.store else set()
        passed = [] if messages_in else self._past_markers()
        if not messages_in and not pending and not unsaved and not passed:
            return None
        for message in messages_in:
            self._committed.pop(message.partition() or 0, None)
        # States are written every `state_every` transactions, when foreign records were found, and
        # when the processor is idle; in between, a restart folds the events since the last ones.
        checkpoint = self.store and (bool(pending) or not messages_in or self.transactions % self.state_every == 0)
        partitions = sorted({m.partition() or 0 for m in messages_in} | pending | (unsaved if checkpoint else set()))
        offsets = next_offsets(messages_in) if messages_in else passed
        return Batch(messages_in, partitions, checkpoint, offsets)

    def _committed_batch(self, batch: Batch) -> None:
        """After a commit: count it, and clear what the transaction has written."""
        self.transactions += 1
        self._committed.update({tp.partition: tp.offset for tp in batch.offsets})
        metrics.transactions.labels("committed").inc()
        metrics.processor_batch_size.observe(len(batch.messages))
        metrics.processor_batch_seconds.observe(time.perf_counter() - batch.started)
        for kind, outcome, reason in batch.outcomes:
            metrics.commands_decided.labels(kind, outcome).inc()
            if reason:
                metrics.rejections.labels(reason).inc()
            if outcome == "poison":
                metrics.dead_letters.labels("processor").inc()
        pending = any(part.foreign for p in batch.partitions if (part := self.partitions.get(p)))
        released = any(kind == "ReleaseAccount" for kind, _, _ in batch.outcomes)
        if pending or self.transactions % 100 == 1 or released:
            # Counting walks every account: only when a quarantine may have changed, and now and then.
            metrics.quarantined_accounts.labels("processor").set(
                sum(1 for part in self.partitions.values() for r in part.accounts.values() if r.quarantine)
            )
        self.decided += batch.decided
        for p in batch.partitions:
            if part := self.partitions.get(p):
                part.foreign.clear()
                if batch.checkpoint or not self.store:
                    part.dirty.clear()

    def _past_markers(self) -> list[TopicPartition]:
        """When idle: the consumer's positions that have moved past the committed offsets over transaction
        markers (or aborted records) only, which a read_committed consumer never hands over. The offsets sent
        with a batch are its last command + 1: where a saga step's marker follows, the group would show a lag of
        1 on an idle bank. Only partitions whose every delivered command is committed count, so nothing that was
        work is passed; the offsets go in a transaction of their own, ordered with the others."""
        unknown = [p for p, offset in self._committed.items() if offset is None]
        if unknown:
            if time.monotonic() < self._look_up_after or not self.txn.brokers.reachable():
                return []
            self._look_up_after = time.monotonic() + 5.0  # at most one broker round trip per 5 s while idle
            try:
                found = self.consumer.committed([TopicPartition(self.kafka.commands_topic, p) for p in unknown], 2.0)
            except KafkaException as error:
                log.debug("committed offsets not read (%s); trying again later", error)
                return []
            for tp in found:
                if tp.partition in self._committed:
                    self._committed[tp.partition] = max(tp.offset, 0)  # never committed: nothing consumed
        known = {p: offset for p, offset in self._committed.items() if offset is not None}
        if not known:
            return []
        positions = self.consumer.position([TopicPartition(self.kafka.commands_topic, p) for p in known])
        return [tp for tp in positions if tp.offset >= 0 and tp.offset > known[tp.partition]]

    def _fault_at_commit(self, call: Callable[[], None]) -> Callable[[], None]:
        def commit() -> None:
            if self.faults:
                self.faults(self, "commit")
            call()

        return commit if self.faults else call

    def _init_transactions(self) -> None:
        try:
            self.txn.init()
        except Transactional as error:
            raise ProcessorFailed(str(error)) from error

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

    def _handle(self, message: Message, batch: Batch) -> int:
        try:
            command = messages.decode_command(message.value())
        except messages.PoisonMessage as error:
            dead_letter(self.txn.producer, self.kafka, message, str(error))
            batch.outcomes.append(("unknown", "poison", ""))
            return 0
        partition = message.partition() or 0
        part = self.partitions.get(partition)
        if part is None:  # cannot happen after an assignment; never decide on a state not loaded
            self._load([partition])
            part = self.partitions[partition]
        record = part.record(command.account_id, self.window)
        # Clients' commands and the saga's steps are remembered apart: one kind never hides the other.
        from_saga = domain.is_step(command.command)
        repeated = record.seen(command.command_id, from_saga)
        if isinstance(command.command, domain.ReleaseAccount) and not repeated:
            if record.quarantine:
                log.info("account %s released by %s (was: %s)", command.account_id, command.actor, record.quarantine)
            # Every foreign record before what this instance has seen is accepted as not the account's.
            record.quarantine, record.released_at = "", part.seen
        decision = domain.handle(record.state, command.command, repeated, bool(record.quarantine), self.max_amount)
        # Counted only once the transaction commits (process_batch): an aborted batch is decided again.
        batch.outcomes.append((command.type, decision.outcome, decision.reason))
        if repeated:
            log.info(
                "%s %s (%s) seen before on %s: %s",
                "step" if from_saga else "command",
                command.command_id,
                command.type,
                command.account_id,
                [type(e).__name__ for e in decision.events] or "nothing (already decided)",
            )
        if decision.outcome == "duplicate":
            return 0
        for sequence, event in enumerate(decision.events, start=record.state.version + 1):
            envelope = messages.EventEnvelope(
                event=event,
                event_id=uuid.uuid4(),
                account_id=command.account_id,
                sequence=sequence,
                occurred_at=messages.now(),
                command_id=command.command_id,
                actor=command.actor,
            )
            key, value, headers = messages.encode(envelope)
            self.txn.produce(self.kafka.events_topic, key, value, track=True, headers=headers, partition=partition)
        for command_id, step in decision.steps:
            key, value, headers = messages.encode(messages.CommandEnvelope.new(step, domain.SAGA_ACTOR, command_id))
            self.txn.produce(self.kafka.commands_topic, key, value, headers=headers)
        record.state = decision.state
        if not repeated:
            record.remember(command.command_id, from_saga)
        part.dirty.add(command.account_id)
        return 1

    def _produce_side_records(self, checkpoint: bool) -> None:
        """Into the open transaction: dead letters of foreign records, and at a checkpoint the state of
        every account changed since the last one, each saying which offset of bank.events it reflects."""
        for p, part in self.partitions.items():
            for message, error in part.foreign:
                dead_letter(self.txn.producer, self.kafka, message, error)
            if not checkpoint:
                continue
            for account_id in part.dirty:
                value = encode_state(part.accounts[account_id], part.seen)
                self.txn.produce(self.kafka.state_topic, str(account_id).encode(), value, partition=p)

    def _check_own_offsets(self) -> None:
        """After a commit: did anyone else write to our partitions of bank.events since we last looked?

        This instance is the only writer of its partitions, so its events of one transaction
        follow what it has seen (and its last commit marker) without a hole. A hole holds records
        of another producer: they are read and treated as foreign (quarantine, dead letter).
        """
        if not self.txn.wait_delivery_reports(5.0):
            log.warning("missing delivery reports; reloading partitions %s", sorted(self.partitions))
            self._load(sorted(self.partitions))
            return
        offsets: dict[int, list[int]] = {}
        for p, offset in self.txn.current.delivered:
            offsets.setdefault(p, []).append(offset)
        for p, own in offsets.items():
            part = self.partitions.get(p)
            if part is None:
                continue
            own.sort()
            expected = part.seen + (1 if part.marker_pending else 0)
            if own[0] != expected or own[-1] - own[0] + 1 != len(own):
                self._read_foreign(p, part, own)
            part.seen, part.marker_pending = own[-1] + 1, True

    def _read_foreign(self, p: int, part: Partition, own: list[int]) -> None:
        mine = set(own)
        found = 0
        try:
            batches = list(
                read_to_end(
                    self.kafka,
                    self.kafka.events_topic,
                    ends={p: own[-1] + 1},
                    starts={p: part.seen},
                    stop=self.stop,
                    max_stall=self.loader.max_stall,
                )
            )
        except LogStalled as error:
            raise ProcessorFailed(f"cannot read what another producer wrote to partition {p}: {error}") from error
        for batch in batches:
            for message in batch:
                if (message.offset() or 0) in mine:
                    continue
                found += 1
                try:
                    messages.decode_event(message.value())
                    why = "written by another producer than the processor that owns the partition"
                except messages.PoisonMessage as poison:
                    why = str(poison)
                part.note_foreign(message, why, self.window)
        if found:
            log.warning("%d foreign records on %s[%d] since offset %d", found, self.kafka.events_topic, p, part.seen)

    def _recover(self, error: KafkaError, batch: Batch) -> None:
        """5. Abort, and rebuild the batch's partitions from the log at their committed offsets."""
        metrics.transactions.labels("aborted").inc()
        if error.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH):
            metrics.fenced.inc()
        partitions = batch.partitions
        log.warning("transaction failed (%s); aborting and reloading partitions %s", error.str(), partitions)
        self.aborts += 1
        fatal = error if error.fatal() else self.txn.abort()
        if fatal is not None:
            # Fenced (the coordinator timed the transaction out, e.g. while brokers were down) or
            # another fatal producer error: this producer is done, the process need not be.
            try:
                self.txn.renew(fatal)
            except Transactional as failed:
                raise ProcessorFailed(str(failed)) from failed
            partitions = sorted({*partitions, *(tp.partition for tp in self.consumer.assignment())})
        for p in partitions:
            self.partitions.pop(p, None)
            self._committed.pop(p, None)
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
                self._committed[tp.partition] = max(tp.offset, 0)  # back at the committed offset
        except KafkaException as exc:
            # Most likely the partitions have just moved to another instance; the rebalance will sort it out.
            log.warning("could not seek back partitions %s: %s", mine, exc)
        self._load(mine)
