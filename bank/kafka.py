"""Kafka clients made in one place, and the log-reading helpers built on them: topics, offsets, dead letters.

Every client made here logs through Python logging (librdkafka's own lines under `bank.kafka.librdkafka`)
and reports errors through `error_cb`. A broker outage is one warning when it starts and one when it ends,
with its length (`BrokerWatch`), instead of a line per reconnect attempt of every client.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential

from bank.config import KafkaSettings

log = logging.getLogger(__name__)
librdkafka_log = logging.getLogger(f"{__name__}.librdkafka")

# An outage is over once no connection has failed for this long while a broker is up: longer than
# librdkafka's longest reconnect back-off (reconnect.backoff.max.ms, 10 s), so that a broker still
# down among several others does not end and restart the outage between two attempts.
QUIET_SECONDS = 12.0
STATS_INTERVAL_MS = 1000  # how often clients report broker states: how soon a recovery is seen
CONNECTION_ERRORS = (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE)


class BrokerWatch:
    """One process's view of whether the brokers of one bootstrap list can be reached, fed by every client.

    1. A connection failure (librdkafka's FAIL log lines, or a transport error in `error_cb`) starts an
       outage: one warning, with the first failure's reason; later failures are only counted.
    2. The statistics of the process's polled clients (every STATS_INTERVAL_MS, parsed only during an
       outage) show when a broker is UP again after the last failure.
    3. Once no failure has come for QUIET_SECONDS since then, the outage ends: one warning with its length.
    Callbacks run on the threads that poll the clients, hence the lock.

    `outages` counts the outages seen so far and `reachable()` says whether a broker is up now (no outage,
    or one seen UP since the last failure): a client whose calls may be left wedged by an outage (the
    processor's transactional producer) is renewed once it is over, before it is used again.
    """

    _watches: dict[str, BrokerWatch] = {}
    _watches_lock = threading.Lock()

    def __init__(self, servers: str) -> None:
        self.servers = servers
        self.since: float | None = None  # monotonic start of the outage in progress
        self.up_at: float | None = None  # when a broker was seen UP after the last failure
        self.last_failure = 0.0
        self.failures = 0
        self.outages = 0
        self._lock = threading.Lock()

    @classmethod
    def of(cls, servers: str) -> BrokerWatch:
        with cls._watches_lock:
            return cls._watches.setdefault(servers, cls(servers))

    def failed(self, client: str, reason: str) -> None:
        with self._lock:
            now = time.monotonic()
            self.last_failure, self.up_at = now, None
            if self.since is not None:
                self.failures += 1
                return
            self.since, self.failures = now, 1
            self.outages += 1
        log.warning("Kafka %s unreachable (%s: %s); retrying quietly until it is back", self.servers, client, reason)

    def reachable(self) -> bool:
        """No outage in progress, or a broker was seen UP since its last connection failure."""
        return self.since is None or self.up_at is not None

    def stats(self, report: str) -> None:
        if self.since is None:  # the common case: nothing to parse
            return
        now = time.monotonic()
        with self._lock:
            if self.since is None:
                return
            if self.up_at is None:
                brokers = json.loads(report).get("brokers", {}).values()
                if any(b.get("state") == "UP" for b in brokers):
                    self.up_at = now
                return
            if now - self.last_failure < QUIET_SECONDS:
                return
            length, failures = self.up_at - self.since, self.failures
            self.since = self.up_at = None
        log.warning("Kafka %s reachable again after %.1f s (%d connection failures)", self.servers, length, failures)


class _LibrdkafkaLog:
    """librdkafka's `logger`: connection failures go to the BrokerWatch, every other line to Python logging."""

    def __init__(self, watch: BrokerWatch, client: str) -> None:
        self.watch, self.client = watch, client

    def log(self, level: int, fmt: str, facility: str, name: str, message: str) -> None:
        if facility == "FAIL":
            self.watch.failed(self.client, message)
        else:
            librdkafka_log.log(level, "%s [%s] %s", facility, name, message)


def _config(kafka: KafkaSettings, client: str, polled: bool) -> dict[str, Any]:
    """What every client shares: connection settings, client.id, logging and error reporting.

    Statistics (how an outage is seen to end) only for `polled` clients: librdkafka queues them until
    the next poll, and a producer that is only flushed now and then would pile them up.
    """
    watch = BrokerWatch.of(kafka.bootstrap_servers)

    def on_error(error: KafkaError) -> None:
        if error.code() in CONNECTION_ERRORS:
            watch.failed(client, error.str())
        else:
            log.log(logging.ERROR if error.fatal() else logging.WARNING, "Kafka client %s: %s", client, error.str())

    return kafka.client_config() | {
        "client.id": client,
        "logger": _LibrdkafkaLog(watch, client),
        "error_cb": on_error,
        "stats_cb": watch.stats,
        "statistics.interval.ms": STATS_INTERVAL_MS if polled else 0,
        "log.connection.close": False,  # the broker closing an idle connection is no news
    }


def consumer(kafka: KafkaSettings, group: str, **extra: Any) -> Consumer:
    """A consumer that sees only committed transactions and never commits on its own."""
    return Consumer(
        _config(kafka, group, polled=True)
        | {
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "session.timeout.ms": kafka.session_timeout_ms,
            "heartbeat.interval.ms": max(250, kafka.session_timeout_ms // 4),
        }
        | extra
    )


def reader(kafka: KafkaSettings, **extra: Any) -> Consumer:
    """A group-less read_committed consumer for reading partitions from the start (rebuilds, inspection)."""
    return Consumer(
        _config(kafka, "bank-reader", polled=True)
        | {
            "group.id": "bank-reader",  # required by librdkafka, never used to commit
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 52428800,
            "max.partition.fetch.bytes": 10485760,
        }
        | extra
    )


@contextmanager
def reading(kafka: KafkaSettings, **extra: Any) -> Iterator[Consumer]:
    """A `reader`, closed on the way out."""
    with reader(kafka, **extra) as opened:
        yield opened


def producer(kafka: KafkaSettings, **extra: Any) -> Producer:
    """An idempotent producer that waits for all in-sync replicas (`client.id` in `extra` names it in the logs).

    Give a producer that is polled all the time (the command bus) `statistics.interval.ms` = STATS_INTERVAL_MS
    in `extra`, so that it too sees an outage end; others leave that to the consumers of their process.
    """
    return Producer(
        _config(kafka, str(extra.get("client.id", "bank-producer")), polled=False)
        | {
            "enable.idempotence": True,
            "acks": "all",
            # Java's partitioner, so that Kafka tools and other clients agree on key → partition.
            "partitioner": "murmur2_random",
            "linger.ms": 2,
        }
        | extra
    )


def transactional_producer(kafka: KafkaSettings, transactional_id: str, timeout_ms: int, **extra: Any) -> Producer:
    """A producer whose writes are Kafka transactions; a stable `transactional_id` fences a predecessor at once."""
    settings = {
        "client.id": transactional_id,
        "transactional.id": transactional_id,
        "transaction.timeout.ms": timeout_ms,
    }
    return producer(kafka, **settings | {"linger.ms": 5} | extra)


def admin(kafka: KafkaSettings) -> AdminClient:
    return AdminClient(_config(kafka, "bank-admin", polled=False))


def consume_batch(consumer: Consumer, size: int, wait: float) -> list[Message]:
    """Up to `size` messages: wait at most `wait` for the first, then take only what has already arrived.

    librdkafka's consume(n, t) waits the whole t unless n messages come, which would add t to
    the latency of every command in a quiet moment; under load the local queue fills the batch.
    """
    first = consumer.poll(wait)
    if first is None:
        return []
    return [first, *consumer.consume(size - 1, 0)] if size > 1 else [first]


def dead_letter(producer: Producer, kafka: KafkaSettings, message: Message, error: str) -> None:
    """Send a message that can never be processed to the dead-letter topic, with where it came from."""
    log.warning("dead-lettering %s[%d]@%d: %s", message.topic(), message.partition(), message.offset(), error)
    original: list[tuple[str, str | bytes | None]] = [(str(h[0]), h[1]) for h in message.headers() or []]
    headers = [
        *original,
        ("dlq.source.topic", (message.topic() or "").encode()),
        ("dlq.source.partition", str(message.partition()).encode()),
        ("dlq.source.offset", str(message.offset()).encode()),
        ("dlq.error", error.encode("utf-8", "replace")[:1000]),
    ]
    producer.produce(kafka.deadletters_topic, key=message.key(), value=message.value(), headers=headers)


def next_offsets(messages: Iterable[Message]) -> list[TopicPartition]:
    """The offsets to commit after `messages`: for each partition, the last offset + 1."""
    last: dict[tuple[str, int], int] = {}
    for message in messages:
        key = (message.topic() or "", message.partition() or 0)
        last[key] = max(last.get(key, -1), message.offset() or 0)
    return [TopicPartition(topic, partition, offset + 1) for (topic, partition), offset in last.items()]


# Leadership settling (a fresh topic, a restarted broker) is transient even when librdkafka does not say so.
_SETTLING = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._TIMED_OUT,
}
_retry_while_settling = retry(
    retry=retry_if_exception(
        lambda e: isinstance(e, KafkaException) and (e.args[0].retriable() or e.args[0].code() in _SETTLING)
    ),
    wait=wait_exponential(multiplier=0.05, max=1.0),
    stop=stop_after_delay(15),
    reraise=True,
)


@_retry_while_settling
def high_watermark(consumer: Consumer, topic: str, partition: int) -> int:
    """The end of a partition; retried while leadership settles (a fresh topic, a restarted broker).

    For a read_committed consumer this is the last stable offset: open transactions are not counted.
    """
    return int(consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1])


@_retry_while_settling
def watermarks(consumer: Consumer, topic: str, partition: int) -> tuple[int, int]:
    """(log start, end) of a partition: records before the start were deleted (retention, delete-records)."""
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
    return int(low), int(high)


def log_ends(kafka: KafkaSettings, topic: str, partitions: Iterable[int]) -> dict[int, int]:
    """The true end of each partition, open transactions included (a read_uncommitted view): a reader
    that goes that far has waited out every transaction open now, so nothing decided before can still change."""
    with reading(kafka, **{"isolation.level": "read_uncommitted"}) as c:
        return {p: high_watermark(c, topic, p) for p in partitions}


def end_offsets(kafka: KafkaSettings, topic: str, partitions: Iterable[int] | None = None) -> dict[int, int]:
    """The current end (high watermark) of `partitions` of `topic` (default: all)."""
    with reading(kafka) as c:
        if partitions is None:
            partitions = c.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: high_watermark(c, topic, p) for p in partitions}


def offsets_at(kafka: KafkaSettings, topic: str, moment_ms: int) -> dict[int, int]:
    """Per partition, the first offset whose timestamp is at or after `moment_ms` (the end if none is)."""
    ends = end_offsets(kafka, topic)
    with reading(kafka) as c:
        found = c.offsets_for_times([TopicPartition(topic, p, moment_ms) for p in ends], timeout=10)
    return {tp.partition: tp.offset if tp.offset >= 0 else ends[tp.partition] for tp in found}


T = TypeVar("T")


class CallOverran(RuntimeError):
    """A librdkafka call ran past its own timeout and a grace period: the client is presumed wedged."""


class BoundedCalls:
    """Blocking librdkafka calls made on a daemon thread of their own, and waited for at most `limit` seconds.

    Some transaction calls block far past the timeout they are given while a coordinator moves
    (`send_offsets_to_transaction`: librdkafka #5456 and #5511, open in 2.16; seen here after losing two
    of three brokers). The caller then gets CallOverran, gives the client up and makes a new one instead
    of hanging with it. The thread is a daemon, so a wedged call never holds the process at exit, and the
    wait wakes at least once a second on `stop()` (ReadInterrupted), so SIGTERM still stops the worker.
    """

    def __init__(self, name: str, stop: Callable[[], bool], say_every: float = 5.0) -> None:
        self.name, self._stop, self._say_every = name, stop, say_every
        self._given_up: str | None = None  # the call the caller stopped waiting for, if any
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def close(self) -> None:
        """The thread ends after its current call (at once if idle; whenever a wedged call returns, if ever)."""
        self._jobs.put(None)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            call, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as error:  # handed to the waiting caller as it is
                future.set_exception(error)
            if self._given_up:
                outcome = future.exception()
                log.info("%s: %s returned late: %s", self.name, self._given_up, outcome or "succeeded")

    def run(self, what: str, call: Callable[[], T], limit: float) -> T:
        """call() on the thread; its result or its exception here. CallOverran after `limit` seconds."""
        future: Future[T] = Future()
        self._jobs.put((call, future))
        started = said = time.monotonic()
        while True:
            try:
                return future.result(timeout=1.0)
            except TimeoutError:
                pass
            now = time.monotonic()
            if self._stop():
                raise ReadInterrupted(f"stopped while waiting for {what}")
            if now - started >= limit:
                self._given_up = what
                raise CallOverran(f"{what} still blocked after {now - started:.0f}s (limit {limit:.0f}s)")
            if now - said >= self._say_every:
                said = now
                log.info("%s: still waiting for %s (%.0fs of at most %.0fs)", self.name, what, now - started, limit)


class DeliveryFailed(KafkaException):
    """A record of the open transaction was refused by the broker: the first such error, typed.

    A KafkaException (args[0] is the KafkaError), so it is handled as a failed commit: abort and retry."""


class Transactional(RuntimeError):
    """The transactional producer cannot go on (fenced by a newer instance, or a fatal error); restart."""


@dataclass
class Transaction:
    """What one transaction has sent: how many tracked records, where they landed, the first refusal."""

    produced: int = 0
    delivered: list[tuple[int, int]] = field(default_factory=list)  # (partition, offset) of tracked records
    error: KafkaError | None = None

    def on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            if self.error is None:
                self.error = error
        else:
            self.delivered.append((message.partition() or 0, message.offset() or 0))

    @property
    def reported(self) -> bool:
        return len(self.delivered) >= self.produced


class TransactionalProducer:
    """A transactional producer and the care it needs: the transaction calls, their bounds, retries, renewal.

    - Every blocking call runs on a thread of its own (BoundedCalls), bounded at `call_timeout` (librdkafka's
      own bound) plus `call_grace` (librdkafka #5456, #5511: some calls block past their timeout).
    - A commit or offsets call that librdkafka calls retriable is made again (at most 10 times).
    - The first delivery error of a transaction is remembered and raised (DeliveryFailed) before its offsets
      are sent, instead of surfacing later as missing delivery reports.
    - `renew()` makes a new producer with the same transactional.id (init_transactions bumps the epoch, so
      whatever the old one left open is aborted); a wedged one is left to its thread, untouched.
    - After a broker outage the producer is renewed before its next transaction (`renew_if_outage_over`):
      one that lived through it may block its first send_offsets_to_transaction until the call's bound.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        transactional_id: str,
        timeout_ms: int,
        call_timeout: float,
        call_grace: float,
        stop: Callable[[], bool],
        name: str,
        wrap_commit: Callable[[Callable[[], None]], Callable[[], None]] | None = None,
        on_replace: Callable[[], None] | None = None,
    ) -> None:
        self.kafka, self.transactional_id, self.timeout_ms = kafka, transactional_id, timeout_ms
        self.call_timeout, self.call_grace, self.stop, self.name = call_timeout, call_grace, stop, name
        self.wrap_commit = wrap_commit or (lambda call: call)  # a test's fault hook may wrap the commit
        self.on_replace = on_replace or (lambda: None)  # e.g. a metric
        self.replaced = 0
        self.brokers = BrokerWatch.of(kafka.bootstrap_servers)
        self.current = Transaction()
        self.producer = self._new()

    def _call(self, what: str, call: Callable[[], object]) -> None:
        self._calls.run(what, call, self.call_timeout + self.call_grace)

    def _retrying(self, what: str, call: Callable[[], None], attempts: int = 10) -> None:
        """A call again while librdkafka says it is retriable (a commit still under way: aborting now would
        fail with "conflicting commit in progress", batch after batch). The last failure is raised."""
        for attempt in range(1, attempts + 1):
            try:
                self._call(what, call)
                return
            except KafkaException as exc:
                error = exc.args[0]
                if not error.retriable() or error.txn_requires_abort() or attempt == attempts:
                    raise
                log.warning("%s: %s not confirmed yet (%s); retrying", self.name, what, error.str())

    # --- the transaction ---

    def begin(self) -> Transaction:
        self.current = Transaction()
        self.producer.begin_transaction()
        return self.current

    def produce(self, topic: str, key: bytes | None, value: bytes, track: bool = False, **options: Any) -> None:
        """Into the open transaction; a `track`ed record's delivery is counted (where it landed, or its error)."""
        if track:
            self.current.produced += 1
            options["on_delivery"] = self.current.on_delivery
        self.producer.produce(topic, key=key, value=value, **options)

    def flush(self, timeout: float) -> None:
        self.producer.flush(timeout)

    def commit(self, offsets: list[TopicPartition], consumer: Consumer) -> None:
        """Deliver what was produced, send the consumed offsets, commit. KafkaException or CallOverran on failure.

        The records are delivered first: if a broker loss made them fail, the transaction is abortable and
        send_offsets_to_transaction returns at once; called while the group coordinator is gone it can block
        past its timeout, forever (librdkafka #5456, #5511)."""
        producer, timeout = self.producer, self.call_timeout
        self._call("the events' delivery", lambda: producer.flush(timeout))
        if self.current.error is not None:
            raise DeliveryFailed(self.current.error)
        if offsets:
            group = consumer.consumer_group_metadata()
            self._retrying(
                "the offsets sent to the transaction",
                lambda: producer.send_offsets_to_transaction(offsets, group, timeout),
            )
        self._retrying("the commit", self.wrap_commit(lambda: producer.commit_transaction(timeout)))

    def abort(self) -> KafkaError | None:
        """Abort the open transaction; the fatal error that makes this producer unusable, if any."""
        try:
            producer, timeout = self.producer, self.call_timeout
            self._retrying("the abort", lambda: producer.abort_transaction(timeout))
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.fatal():
                return error
        except CallOverran as overran:
            return KafkaError(KafkaError._TIMED_OUT, str(overran), fatal=True)
        return None

    def wait_delivery_reports(self, seconds: float) -> bool:
        """Serve the delivery reports of the committed transaction; whether all came within `seconds`."""
        deadline = time.monotonic() + seconds
        while not self.current.reported and time.monotonic() < deadline:
            self.producer.poll(0.05)
        return self.current.reported

    # --- the producer's life ---

    def init(self) -> None:
        """Register the transactional id with its coordinator, waiting as long as the coordinator is out of
        reach (a lost quorum): the caller resumes by itself when the brokers return. A fatal error (fenced,
        not authorized) raises Transactional."""
        attempt = 0
        while True:
            if self.stop():
                raise ReadInterrupted("stopped while waiting for the transaction coordinator")
            attempt += 1
            try:
                self._call(
                    "the transaction coordinator", functools.partial(self.producer.init_transactions, self.call_timeout)
                )
                return
            except KafkaException as exc:
                error = exc.args[0]
                if error.fatal() or not error.retriable():
                    raise Transactional(f"fatal Kafka error, this instance must restart: {error.str()}") from exc
                reason = error.str()
            except CallOverran as overran:  # a wedged producer: a fresh one finds the coordinator anew
                reason = str(overran)
                self._replace()
            log.warning("%s: waiting for the transaction coordinator (attempt %d: %s)", self.name, attempt, reason)
            time.sleep(1.0)  # a refusal can come at once: no busy loop

    def renew(self, error: KafkaError) -> None:
        """A new producer with the same transactional.id, registered (see the class docstring)."""
        log.warning("%s: producer unusable (%s); making a new one", self.name, error.str())
        if error.code() != KafkaError._TIMED_OUT:
            with contextlib.suppress(KafkaException):  # its queue is lost with its transaction, as it should be
                self.producer.flush(0)
        self._replace()
        self.init()

    def renew_if_outage_over(self, busy: bool) -> None:
        """Before a transaction: a new producer if an outage happened since this one was made and is over
        (`busy`: a batch in hand, so the brokers answer whatever the last statistics said). Between two
        transactions nothing is open: it costs one init_transactions and no reload."""
        if self.brokers.outages != self._outages_before and (busy or self.brokers.reachable()):
            log.info("%s: the brokers are back after an outage; renewing the transactional producer", self.name)
            self._replace()
            self.init()

    def _replace(self) -> None:
        """A new producer with a new thread for its calls; the old thread ends when its call does, if ever."""
        self._calls.close()
        self.replaced += 1
        self.on_replace()
        self.producer = self._new()

    def _new(self) -> Producer:
        self._outages_before = self.brokers.outages  # the outages this producer was made after
        self._calls = BoundedCalls(f"{self.name} transactions #{self.replaced}", self.stop)
        return transactional_producer(self.kafka, self.transactional_id, self.timeout_ms)

    def close(self, timeout: float = 3.0) -> None:
        try:
            self.producer.flush(timeout)
        except KafkaException as error:
            log.warning("%s: producer not flushed on close: %s", self.name, error)


class LogStalled(RuntimeError):
    """A read of the log made no progress for longer than its bound (an open transaction held it back)."""


class ReadInterrupted(Exception):
    """A read of the log was stopped by its `stop` callable (the worker received SIGTERM)."""


def read_to_end(
    kafka: KafkaSettings,
    topic: str,
    partitions: Iterable[int] | None = None,
    ends: dict[int, int] | None = None,
    say_every: float = 5.0,
    batch_size: int = 10_000,
    starts: dict[int, int] | None = None,
    stop: Callable[[], bool] | None = None,
    max_stall: float = 120.0,
) -> Iterator[list[Message]]:
    """Batches of the committed messages of `topic` from `starts` (default: the log start) up to `ends`
    (default: the current end).

    `partitions` defaults to all of them, or to the keys of `ends`. If a transaction is still
    open near the end, this waits until it commits or aborts: read_committed readers cannot
    pass it, and the end is only known after it. Every wait is bounded: `stop()` is checked
    several times a second (ReadInterrupted), and `max_stall` seconds without progress raise
    LogStalled. A partition whose records were all deleted (log start = end) or whose last
    offsets are transaction markers or compacted away is done at once: it is judged by the
    broker's watermarks and the consumer's position, never by waiting for a record.
    """
    with reading(kafka) as events:
        if partitions is None:
            partitions = (
                ends.keys() if ends is not None else events.list_topics(topic, timeout=10).topics[topic].partitions
            )
        wanted = sorted(set(partitions))
        marks = {p: watermarks(events, topic, p) for p in wanted}
        if ends is None:
            ends = log_ends(kafka, topic, wanted)
        first = {p: max(marks[p][0], (starts or {}).get(p, 0)) for p in wanted}
        remaining = {p for p in wanted if first[p] < ends[p]}
        if not remaining:
            return
        events.assign([TopicPartition(topic, p, first[p]) for p in sorted(remaining)])
        last_said = last_progress = time.monotonic()
        while remaining:
            if stop is not None and stop():
                raise ReadInterrupted(f"stopped while reading {topic} partitions {sorted(remaining)}")
            batch = [
                m
                for m in events.consume(batch_size, 0.05)
                if m.error() is None and (m.offset() or 0) < ends[m.partition() or 0]
            ]
            if batch:
                last_progress = time.monotonic()
                yield batch
            positions = {}
            for tp in events.position([TopicPartition(topic, p) for p in remaining]):
                positions[tp.partition] = tp.offset
                if tp.offset >= ends[tp.partition]:
                    remaining.discard(tp.partition)
                    last_progress = time.monotonic()
            now = time.monotonic()
            if remaining and now - last_progress > max_stall:
                raise LogStalled(
                    f"{topic} partitions {sorted(remaining)} made no progress for {max_stall:.0f}s "
                    f"(positions {positions}, ends { {p: ends[p] for p in sorted(remaining)} }): "
                    "an open transaction of another producer holds them back"
                )
            if remaining and now - last_progress > say_every and now - last_said > say_every:
                last_said = now
                log.info(
                    "waiting on %s partitions %s (positions %s, ends %s): an open transaction may hold them back",
                    topic,
                    sorted(remaining),
                    {p: positions.get(p) for p in sorted(remaining)},
                    {p: ends[p] for p in sorted(remaining)},
                )


def ensure_topics(kafka: KafkaSettings, timeout: float = 30.0) -> list[str]:
    """Create the bank's topics if they are missing. Returns the names created now."""
    rf = kafka.replication_factor
    wanted = {
        kafka.commands_topic: {"retention.ms": str(7 * 24 * 3600 * 1000)},
        kafka.events_topic: {"retention.ms": "-1", "retention.bytes": "-1"},
        kafka.deadletters_topic: {"retention.ms": "-1", "retention.bytes": "-1"},
        # The processor's state per account, read on every assignment. Kafka compacts only closed
        # segments, so segments roll often (by time and size) and the cleaner starts early, keeping
        # what recovery reads near one record per account (bench/recovery.py measures it).
        kafka.state_topic: {
            "cleanup.policy": "compact",
            "segment.ms": str(60_000),
            "segment.bytes": str(8 * 1024 * 1024),
            "min.cleanable.dirty.ratio": "0.1",
            "max.compaction.lag.ms": str(120_000),
            "retention.ms": "-1",
        },
    }
    if rf > 1:
        for config in wanted.values():
            config["min.insync.replicas"] = str(min(2, rf))
    created = []
    with admin(kafka) as client:
        existing = client.list_topics(timeout=timeout).topics
        missing = [NewTopic(name, kafka.partitions, rf, config=c) for name, c in wanted.items() if name not in existing]
        for name, future in (client.create_topics(missing, operation_timeout=timeout) if missing else {}).items():
            try:
                future.result()
                created.append(name)
            except KafkaException as error:
                if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
        _wait_for_leaders(client, list(wanted), timeout)
    return created


def _wait_for_leaders(client: AdminClient, topics: list[str], timeout: float) -> None:
    """A created topic is usable only once every partition has a leader the brokers know of."""
    deadline = time.monotonic() + timeout
    while True:
        metadata = client.list_topics(timeout=timeout).topics
        if all(
            name in metadata
            and metadata[name].partitions
            and all(p.leader >= 0 for p in metadata[name].partitions.values())
            for name in topics
        ):
            return
        if time.monotonic() > deadline:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"topics {topics} have no leaders after {timeout}s"))
        time.sleep(0.1)
