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

import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Callable
from uuid import UUID

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from bank import domain, messages, metrics
from bank.config import KafkaSettings
from bank.kafka import (
    BoundedCalls,
    BrokerWatch,
    CallOverran,
    LogStalled,
    ReadInterrupted,
    consume_batch,
    consumer,
    dead_letter,
    next_offsets,
    read_to_end,
    transactional_producer,
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

log = logging.getLogger("bank.processor")

# librdkafka's timeout for each transaction call, and how long past it the processor waits before it
# presumes the producer wedged (librdkafka #5456, #5511) and replaces it.
TXN_CALL_TIMEOUT = 10.0
TXN_CALL_GRACE = 5.0


class ProcessorFailed(RuntimeError):
    """The processor cannot go on (fenced by a newer instance, or a fatal broker error); restart it."""


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
        recovery: Mode = "state",
        dedup_window: int = DEFAULT_DEDUP_WINDOW,
        stop: Callable[[], bool] | None = None,
        max_stall: float = 120.0,
        fault_abort_every: int = 0,
        state_every: int = DEFAULT_STATE_EVERY,
        call_timeout: float = TXN_CALL_TIMEOUT,
        call_grace: float = TXN_CALL_GRACE,
        fault_wedge: float = 0.0,
    ) -> None:
        self.kafka = kafka
        self.instance = instance
        self.max_amount = max_amount
        self.batch_size = batch_size
        self.batch_wait = batch_wait
        self.window = dedup_window
        self.state_every = max(1, state_every)
        # Mode "full" (the benchmark's baseline) neither reads nor writes the state topic.
        self.store = recovery == "state"
        self.stop = stop or (lambda: False)
        self.loader = Loader(kafka, recovery, dedup_window, self.stop, max_stall)
        group = group or kafka.group("processor")
        self.consumer: Consumer = consumer(kafka, group)
        # Stable per instance: a restarted instance fences its predecessor's open transaction at once.
        self._transactional_id, self._transaction_timeout_ms = f"{group}-{instance}", transaction_timeout_ms
        self.call_timeout, self.call_grace = call_timeout, call_grace
        self.producers_replaced = 0
        self._brokers = BrokerWatch.of(kafka.bootstrap_servers)
        self._outages_before = self._brokers.outages  # the outages the current producer was made after
        self.producer = self._new_producer()
        self._calls = self._new_calls()
        # Fault injection for the tests: hold each transaction open this long before committing it,
        # abort every n-th transaction (as a failed commit would), and block the first commit for
        # `fault_wedge` seconds before making it (as librdkafka's calls past their timeout, #5456).
        self.fault_pause = fault_pause
        self.fault_abort_every = fault_abort_every
        self.fault_wedge = fault_wedge
        self.partitions: dict[int, Partition] = {}
        self.last_load = LoadCounts()
        self.decided = 0
        self.transactions = 0
        self.aborts = 0
        self._produced = 0
        self._delivered: list[tuple[int, int]] = []  # (partition, offset) of this transaction's events
        self._outcomes: list[tuple[str, str, str]] = []  # (type, outcome, reason) of the open transaction
        # Per partition whose every delivered command is committed: the committed offset (None: not looked up yet).
        self._committed: dict[int, int | None] = {}
        self._look_up_after = 0.0

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
        try:
            self.producer.flush(3)
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
        try:
            batch = consume_batch(self.consumer, self.batch_size, self.batch_wait)
        except ReadInterrupted as stopped:
            log.info("processor %s: %s", self.instance, stopped)
            return 0
        batch = self._without_errors(batch)
        pending = {p for p, part in self.partitions.items() if part.foreign}
        unsaved = {p for p, part in self.partitions.items() if part.dirty} if self.store else set()
        passed = [] if batch else self._past_markers()
        if not batch and not pending and not unsaved and not passed:
            return 0
        for message in batch:
            self._committed.pop(message.partition() or 0, None)
        # States are written every `state_every` transactions, when foreign records were found, and
        # when the processor is idle; in between, a restart folds the events since the last ones.
        checkpoint = self.store and (bool(pending) or not batch or self.transactions % self.state_every == 0)
        partitions = sorted({m.partition() or 0 for m in batch} | pending | (unsaved if checkpoint else set()))
        if self._brokers.outages != self._outages_before and (batch or self._brokers.reachable()):
            self._renew_after_outage()  # a batch in hand: the brokers answer, whatever the last statistics said
        self._delivered.clear()
        self._produced = 0
        started = time.perf_counter()
        self._outcomes.clear()
        try:
            self.producer.begin_transaction()
            decided = sum(self._handle(message) for message in batch)
            self._produce_side_records(checkpoint)
            if self.fault_pause:
                log.info(
                    "fault injection: holding a transaction of %d commands open for %.1fs", len(batch), self.fault_pause
                )
                time.sleep(self.fault_pause)
            if self.fault_abort_every and (self.transactions + 1) % self.fault_abort_every == 0:
                self.transactions += 1
                self.producer.flush(30)  # as a failed commit would: everything sent, then refused
                raise KafkaException(KafkaError(KafkaError._FAIL, "fault injection: abort this transaction"))
            # Deliver the events first: if a broker loss made them fail, the transaction is abortable and
            # send_offsets_to_transaction returns at once. Called while the group coordinator is gone it can
            # block past its timeout, forever (librdkafka #5456, #5511; seen here after losing two brokers).
            producer, timeout = self.producer, self.call_timeout
            self._txn("the events' delivery", lambda: producer.flush(timeout))
            offsets = next_offsets(batch) if batch else passed
            if offsets:
                group = self.consumer.consumer_group_metadata()
                self._retrying(
                    "the offsets sent to the transaction",
                    lambda: producer.send_offsets_to_transaction(offsets, group, timeout),
                )
            self._retrying("the commit", self._wedged_once(lambda: producer.commit_transaction(timeout)))
        except KafkaException as exc:
            metrics.transactions.labels("aborted").inc()
            self._recover(exc.args[0], partitions)
            return len(batch)
        except CallOverran as overran:
            metrics.transactions.labels("aborted").inc()
            self._recover(KafkaError(KafkaError._TIMED_OUT, str(overran), fatal=True), partitions)
            return len(batch)
        self.transactions += 1
        self._committed.update({tp.partition: tp.offset for tp in offsets})
        metrics.transactions.labels("committed").inc()
        metrics.processor_batch_size.observe(len(batch))
        metrics.processor_batch_seconds.observe(time.perf_counter() - started)
        for kind, outcome, reason in self._outcomes:
            metrics.commands_decided.labels(kind, outcome).inc()
            if reason:
                metrics.rejections.labels(reason).inc()
            if outcome == "poison":
                metrics.dead_letters.labels("processor").inc()
        if pending or self.transactions % 100 == 1 or any(kind == "ReleaseAccount" for kind, _, _ in self._outcomes):
            # Counting walks every account: only when a quarantine may have changed, and now and then.
            metrics.quarantined_accounts.labels("processor").set(
                sum(1 for part in self.partitions.values() for r in part.accounts.values() if r.quarantine)
            )
        self._outcomes.clear()
        self.decided += decided
        for p in partitions:
            if part := self.partitions.get(p):
                part.foreign.clear()
                if checkpoint or not self.store:
                    part.dirty.clear()
        self._check_own_offsets()
        return len(batch)

    def _past_markers(self) -> list[TopicPartition]:
        """When idle: the consumer's positions that have moved past the committed offsets over transaction
        markers (or aborted records) only, which a read_committed consumer never hands over. The offsets sent
        with a batch are its last command + 1: where a saga step's marker follows, the group would show a lag of
        1 on an idle bank. Only partitions whose every delivered command is committed count, so nothing that was
        work is passed; the offsets go in a transaction of their own, ordered with the others."""
        unknown = [p for p, offset in self._committed.items() if offset is None]
        if unknown:
            if time.monotonic() < self._look_up_after or not self._brokers.reachable():
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

    def _txn(self, what: str, call: Callable[[], object]) -> None:
        """A blocking producer call, bounded even where librdkafka overruns its timeout (CallOverran)."""
        self._calls.run(what, call, self.call_timeout + self.call_grace)

    def _wedged_once(self, call: Callable[[], None]) -> Callable[[], None]:
        if not self.fault_wedge:
            return call
        pause, self.fault_wedge = self.fault_wedge, 0.0

        def wedged() -> None:
            log.info("fault injection: this commit blocks for %.1fs before it is made", pause)
            time.sleep(pause)
            call()

        return wedged

    def _retrying(self, what: str, call: Callable[[], None], attempts: int = 10) -> None:
        """A transaction call again while librdkafka says it is retriable (for a commit: it is still under way,
        and aborting now would fail with "conflicting commit in progress", batch after batch). Bounded: the
        last failure goes to _recover."""
        for attempt in range(1, attempts + 1):
            try:
                self._txn(what, call)
                return
            except KafkaException as exc:
                error = exc.args[0]
                if not error.retriable() or error.txn_requires_abort() or attempt == attempts:
                    raise
                log.warning("processor %s: %s not confirmed yet (%s); retrying", self.instance, what, error.str())

    def _renew_after_outage(self) -> None:
        """A new transactional producer before the first transaction after a broker outage.

        The producer that lived through the outage may block its first send_offsets_to_transaction until
        the call's bound (seen after a single broker's restart: 15 s, then replaced anyway). Between two
        transactions nothing is open, so a new one with the same transactional.id costs one init_transactions
        and no reload: the in-memory state is what the last commit left."""
        log.info(
            "processor %s: the brokers are back after an outage; renewing the transactional producer", self.instance
        )
        self._replace_producer()
        self._init_transactions()

    def _new_producer(self) -> Producer:
        self._outages_before = self._brokers.outages
        return transactional_producer(self.kafka, self._transactional_id, self._transaction_timeout_ms)

    def _renew_producer(self, error: KafkaError) -> None:
        """A new transactional producer with the same transactional.id: init_transactions bumps its epoch, so
        whatever the old one left open is aborted; the caller then reloads the partitions' state.

        A wedged producer (a call overran) is left to its thread, untouched: any call on it may block too."""
        log.warning("processor %s: producer unusable (%s); making a new one", self.instance, error.str())
        if error.code() != KafkaError._TIMED_OUT:
            with contextlib.suppress(KafkaException):  # its queue is lost with its transaction, as it should be
                self.producer.flush(0)
        self._replace_producer()
        self._init_transactions()

    def _replace_producer(self) -> None:
        """A new producer with a new thread for its calls; the old thread ends when its call does, if ever."""
        self._calls.close()
        self.producers_replaced += 1
        metrics.producers_replaced.inc()
        self.producer = self._new_producer()
        self._calls = self._new_calls()

    def _new_calls(self) -> BoundedCalls:
        return BoundedCalls(f"processor {self.instance} transactions #{self.producers_replaced}", self.stop)

    def _init_transactions(self) -> None:
        """Register the transactional id with its coordinator, waiting as long as the coordinator is out of
        reach (a lost quorum): the processor resumes by itself when the brokers return. A fatal error
        (this instance is fenced, or not authorized) stops it."""
        attempt = 0
        while True:
            if self.stop():
                raise ReadInterrupted("stopped while waiting for the transaction coordinator")
            attempt += 1
            try:
                self._txn(
                    "the transaction coordinator", functools.partial(self.producer.init_transactions, self.call_timeout)
                )
                return
            except KafkaException as exc:
                error = exc.args[0]
                if error.fatal() or not error.retriable():
                    raise ProcessorFailed(f"fatal Kafka error, this instance must restart: {error.str()}") from exc
                reason = error.str()
            except CallOverran as overran:  # a wedged producer: a fresh one finds the coordinator anew
                reason = str(overran)
                self._replace_producer()
            log.warning(
                "processor %s: waiting for the transaction coordinator (attempt %d: %s)", self.instance, attempt, reason
            )
            time.sleep(1.0)  # a refusal can come at once: no busy loop

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
            self._outcomes.append(("unknown", "poison", ""))
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
        if repeated and not from_saga:
            log.info("command %s already decided; skipping the duplicate", command.command_id)
            self._outcomes.append((command.type, "duplicate", ""))
            return 0
        state = record.state
        if repeated:
            # A step id seen before: a transfer id reused on its source. Answered, never dropped (domain.repeated_step).
            events = domain.repeated_step(state, command.command, self.max_amount)
            log.info(
                "step %s (%s) seen before on %s: answered with %s",
                command.command_id,
                command.type,
                command.account_id,
                [type(e).__name__ for e in events] or "nothing (already answered)",
            )
            if not events:
                self._outcomes.append((command.type, "duplicate", ""))
                return 0
        elif isinstance(command.command, domain.ReleaseAccount):
            if record.quarantine:
                log.info("account %s released by %s (was: %s)", command.account_id, command.actor, record.quarantine)
            # Every foreign record before what this instance has seen is accepted as not the account's.
            record.quarantine, record.released_at = "", part.seen
            events = domain.decide(state, command.command, self.max_amount)
        elif record.quarantine:
            events = domain.quarantined(state, command.command, self.max_amount)
        else:
            events = domain.decide(state, command.command, self.max_amount)
        rejected = next((e for e in events if isinstance(e, domain.CommandRejected)), None)
        # Counted only once the transaction commits (process_batch): an aborted batch is decided again.
        self._outcomes.append(
            (command.type, "rejected" if rejected else "accepted", rejected.reason.value if rejected else "")
        )
        for event in events:
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
            self.producer.produce(
                self.kafka.events_topic,
                key=key,
                value=value,
                headers=headers,
                partition=partition,
                on_delivery=self._on_delivery,
            )
            self._produced += 1
            step = domain.next_step(command.account_id, event)
            if step is not None:
                self._produce_step(*step)
        record.state = state
        if not repeated:
            record.remember(command.command_id, from_saga)
        part.dirty.add(command.account_id)
        return 1

    def _produce_step(self, command_id: UUID, command: domain.Command) -> None:
        envelope = messages.CommandEnvelope.new(command, domain.SAGA_ACTOR, command_id)
        key, value, headers = messages.encode(envelope)
        self.producer.produce(self.kafka.commands_topic, key=key, value=value, headers=headers)

    def _produce_side_records(self, checkpoint: bool) -> None:
        """Into the open transaction: dead letters of foreign records, and at a checkpoint the state of
        every account changed since the last one, each saying which offset of bank.events it reflects."""
        for p, part in self.partitions.items():
            for message, error in part.foreign:
                dead_letter(self.producer, self.kafka, message, error)
            if not checkpoint:
                continue
            for account_id in part.dirty:
                self.producer.produce(
                    self.kafka.state_topic,
                    key=str(account_id).encode(),
                    value=encode_state(part.accounts[account_id], part.seen),
                    partition=p,
                )

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            self._delivered.append((message.partition() or 0, message.offset() or 0))

    def _check_own_offsets(self) -> None:
        """After a commit: did anyone else write to our partitions of bank.events since we last looked?

        This instance is the only writer of its partitions, so its events of one transaction
        follow what it has seen (and its last commit marker) without a hole. A hole holds records
        of another producer: they are read and treated as foreign (quarantine, dead letter).
        """
        deadline = time.monotonic() + 5
        while len(self._delivered) < self._produced and time.monotonic() < deadline:
            self.producer.poll(0.05)  # delivery reports not served yet
        if len(self._delivered) < self._produced:
            log.warning("missing delivery reports; reloading partitions %s", sorted(self.partitions))
            self._load(sorted(self.partitions))
            return
        offsets: dict[int, list[int]] = {}
        for p, offset in self._delivered:
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

    def _recover(self, error: KafkaError, partitions: list[int]) -> None:
        self._outcomes.clear()
        if error.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH):
            metrics.fenced.inc()
        log.warning("transaction failed (%s); aborting and reloading partitions %s", error.str(), partitions)
        self.aborts += 1
        fatal = error if error.fatal() else None
        if fatal is None:
            try:
                producer, timeout = self.producer, self.call_timeout
                self._retrying("the abort", lambda: producer.abort_transaction(timeout))
            except KafkaException as exc:
                if exc.args[0].fatal():
                    fatal = exc.args[0]
            except CallOverran as overran:
                fatal = KafkaError(KafkaError._TIMED_OUT, str(overran), fatal=True)
        if fatal is not None:
            # Fenced (the coordinator timed the transaction out, e.g. while brokers were down) or
            # another fatal producer error: this producer is done, the process need not be.
            self._renew_producer(fatal)
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
