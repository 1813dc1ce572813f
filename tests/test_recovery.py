"""The processor's state store, against the real broker: recovery from bank.account-state plus the
tail of events, the state topic equal to the fold of the events, foreign records quarantining one
account, emptied partitions, and stopping while loading."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from uuid import UUID

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]
from django.conf import settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from bank import domain, messages
from bank.command_bus import CommandBus
from bank.config import KafkaSettings
from bank.kafka import end_offsets, ensure_topics, producer
from consumers.processor import Processor, ProcessorConfig
from consumers.recovery import Loader, decode_state
from tests.faults import Faults
from tests.helpers import Fold, Worker, produce_raw, raw_events, read_events, read_raw, send, wait_until

pytestmark = pytest.mark.timeout(300)

FOREIGN = b'{"type":"MoneyDeposited","garbage":true}'


def fold(events: list[messages.EventEnvelope]) -> dict[UUID, domain.Account]:
    """The oracle: each account's state as the plain fold of its committed events, in log order."""
    states: dict[UUID, domain.Account] = {}
    for e in events:
        states[e.account_id] = domain.evolve(states.get(e.account_id) or domain.Account.new(e.account_id), e.event)
    return states


def produce_commands(kafka: KafkaSettings, commands: list[messages.CommandEnvelope]) -> None:
    """Straight onto bank.commands with the command bus's partitioner (murmur2_random), fast."""
    out = producer(kafka, **{"linger.ms": 20})
    for envelope in commands:
        key, value, headers = messages.encode(envelope)
        while True:
            try:
                out.produce(kafka.commands_topic, key=key, value=value, headers=headers)
                break
            except BufferError:
                out.poll(0.05)
    assert out.flush(60) == 0


def run_until(processor: Processor, done: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"processor stuck at {processor.decided} decided"
        processor.process_batch()


def in_process(kafka: KafkaSettings, faults: Faults | None = None, **options: object) -> Processor:
    config = ProcessorConfig(instance=f"t-{uuid.uuid4().hex[:6]}", **options)  # type: ignore[arg-type]
    processor = Processor(kafka, config, faults=faults)
    processor.start()
    run_until(processor, lambda: bool(processor.consumer.assignment()) and bool(processor.partitions), 60)
    return processor


def latest_states(kafka: KafkaSettings, window: int = 20) -> dict[UUID, domain.Account]:
    latest: dict[bytes, bytes] = {}
    for message in read_raw(kafka, kafka.state_topic):
        latest[message.key()] = message.value()
    return {UUID(key.decode()): decode_state(value, window)[0].state for key, value in latest.items()}


def test_it_recovers_from_the_state_topic_and_only_the_tail_of_events(kafka: KafkaSettings) -> None:
    accounts = [uuid.uuid4() for _ in range(1000)]
    commands = [
        messages.CommandEnvelope.new(domain.OpenAccount(a, "alice", "Main", "EUR"), "user:alice") for a in accounts
    ]
    commands += [
        messages.CommandEnvelope.new(domain.Deposit(accounts[i % 1000], 1 + i % 7), "user:alice")
        for i in range(199_000)
    ]
    produce_commands(kafka, commands)
    first = in_process(kafka)
    run_until(first, lambda: first.decided >= len(commands), 240)
    first.close()

    restarted = in_process(kafka)
    counts = restarted.last_load
    recovered = {a: r.state for part in restarted.partitions.values() for a, r in part.accounts.items()}
    restarted.close()
    assert counts.accounts == 1000
    # Only the events since the last states written (every `state_every` transactions) are read again:
    # bounded by the write interval (two of them: a partition's batches are not all full, and its states
    # reflect the offset of the transaction that wrote them), never by the 200,000 events of history.
    assert counts.events <= 2 * first.state_every * first.batch_size, counts
    assert counts.events * 20 < len(commands), counts
    assert counts.states < 200_000, counts  # compaction brings it down to ~1,000 once the cleaner has run

    expected = fold(read_events(kafka))
    assert sum(1 for _ in expected) == 1000
    assert recovered == expected
    full, full_counts = Loader(kafka, "full").load(range(kafka.partitions))
    assert full_counts.events == 200_000
    assert {a: r.state for part in full.values() for a, r in part.accounts.items()} == expected


ACCOUNTS = [UUID(int=n, version=4) for n in (1, 2, 3)]
command_strategy = st.one_of(
    st.builds(domain.OpenAccount, st.sampled_from(ACCOUNTS), st.just("alice"), st.just("Main"), st.just("EUR")),
    st.builds(domain.Deposit, st.sampled_from(ACCOUNTS), st.integers(1, 500)),
    st.builds(domain.Withdraw, st.sampled_from(ACCOUNTS), st.integers(1, 500)),
    st.builds(domain.CloseAccount, st.sampled_from(ACCOUNTS)),
    st.builds(domain.ReleaseAccount, st.sampled_from(ACCOUNTS)),
)


@pytest.fixture
def fresh_topics(kafka: KafkaSettings) -> Iterator[Callable[[], KafkaSettings]]:
    """Topics of their own for each hypothesis example."""

    def make() -> KafkaSettings:
        fresh = dataclasses.replace(kafka, topic_prefix=f"h{uuid.uuid4().hex[:10]}.")
        ensure_topics(fresh)
        return fresh

    yield make


@hypothesis_settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    commands=st.lists(command_strategy, min_size=1, max_size=40),
    batch_size=st.integers(1, 6),
    abort_every=st.sampled_from([0, 2, 3]),
    state_every=st.sampled_from([1, 3]),
)
def test_it_keeps_the_state_topic_equal_to_the_fold_of_the_events(
    fresh_topics: Callable[[], KafkaSettings],
    commands: list[domain.Command],
    batch_size: int,
    abort_every: int,
    state_every: int,
) -> None:
    kafka = fresh_topics()
    envelopes = [messages.CommandEnvelope.new(c, "user:alice") for c in commands]
    processor = in_process(
        kafka, Faults(abort_every=abort_every), batch_size=batch_size, dedup_window=3, state_every=state_every
    )
    produce_commands(kafka, envelopes)
    run_until(processor, lambda: processor.decided >= len(envelopes), 120)
    # Mid-stream, a load (state + tail) equals the fold; once idle, the state topic itself does.
    mid, _ = Loader(kafka, "state", window=3).load(range(kafka.partitions))
    assert {a: r.state for part in mid.values() for a, r in part.accounts.items()} == fold(read_events(kafka))
    run_until(processor, lambda: not any(part.dirty for part in processor.partitions.values()), 60)
    processor.close()
    if abort_every and processor.transactions >= abort_every:
        assert processor.aborts > 0

    events = read_events(kafka)
    expected = fold(events)
    assert latest_states(kafka, 3) == expected
    # The command ids remembered are the last 3 of each account, oldest first.
    ids: dict[UUID, list[bytes]] = defaultdict(list)
    for e in events:
        ids[e.account_id].append(e.command_id.bytes)
    loaded, counts = Loader(kafka, "state", window=3).load(range(kafka.partitions))
    assert counts.foreign == 0
    records = {a: r for part in loaded.values() for a, r in part.accounts.items()}
    assert {a: r.state for a, r in records.items()} == expected
    assert {a: list(r.command_ids) for a, r in records.items()} == {a: i[-3:] for a, i in ids.items()}


# --- foreign records, emptied partitions, stopping ---


def accounts_on_one_partition(kafka: KafkaSettings, bus: CommandBus, n: int = 2) -> tuple[int, list[UUID]]:
    """Open accounts until `n` of them share a partition of bank.events; that partition and those accounts."""
    by_partition: dict[int, list[UUID]] = defaultdict(list)
    opened: list[UUID] = []
    while True:
        account_id = uuid.uuid4()
        send(bus, domain.OpenAccount(account_id, "alice", "Main", "EUR"))
        opened.append(account_id)
        events = wait_until(lambda: (e := read_raw(kafka, kafka.events_topic)) and len(e) >= len(opened) and e, 60)
        for message in events:
            key = UUID(message.key().decode())
            if key == account_id:
                by_partition[message.partition()].append(account_id)
        for partition, accounts in by_partition.items():
            if len(accounts) >= n:
                return partition, accounts[:n]


def decodable_events(kafka: KafkaSettings) -> list[messages.EventEnvelope]:
    """The events of bank.events that decode (foreign records left out)."""
    out = []
    for message in read_raw(kafka, kafka.events_topic):
        with contextlib.suppress(messages.PoisonMessage):
            out.append(messages.decode_event(message.value()))
    return out


def outcome(kafka: KafkaSettings, command_id: UUID, timeout: float = 60.0) -> domain.Event:
    return wait_until(  # type: ignore[no-any-return]
        lambda: next((e.event for e in decodable_events(kafka) if e.command_id == command_id), None),
        timeout,
        0.3,
        f"the outcome of {command_id}",
    )


def write_foreign(kafka: KafkaSettings, key: bytes | None, partition: int, value: bytes = FOREIGN) -> None:
    produce_raw(kafka, kafka.events_topic, key, value, partition)


def test_it_quarantines_only_the_account_a_foreign_record_names(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker, workers: Callable[..., Worker]
) -> None:
    partition, (victim, neighbour) = accounts_on_one_partition(kafka, bus)
    write_foreign(kafka, str(victim).encode(), partition)
    write_foreign(kafka, None, partition, b"not even json")  # names no account: dead-lettered and skipped
    # The neighbour's command is decided; its transaction shows the processor that someone else wrote.
    assert isinstance(outcome(kafka, send(bus, domain.Deposit(neighbour, 10_00))), domain.MoneyDeposited)
    processor.wait_for_log("quarantined until released")

    rejected = outcome(kafka, send(bus, domain.Deposit(victim, 5_00)))
    assert rejected == domain.CommandRejected("Deposit", domain.Reason.ACCOUNT_QUARANTINED, 5_00)
    assert isinstance(outcome(kafka, send(bus, domain.Withdraw(neighbour, 1_00))), domain.MoneyWithdrawn)
    dead = wait_until(lambda: (d := read_raw(kafka, kafka.deadletters_topic)) and len(d) >= 2 and d, 30)
    assert sorted(m.value() for m in dead) == sorted([FOREIGN, b"not even json"])
    for message in dead:
        headers = dict(message.headers())
        assert headers["dlq.source.topic"] == kafka.events_topic.encode()
        assert int(headers["dlq.source.partition"]) == partition

    assert outcome(kafka, send(bus, domain.ReleaseAccount(victim), actor="admin:carol")) == domain.AccountReleased()
    assert outcome(kafka, send(bus, domain.Deposit(victim, 7_00))) == domain.MoneyDeposited(7_00, 7_00)

    # A restart keeps the release and does not dead-letter the records again.
    processor.stop()
    restarted = workers("processor-restarted", ["run_processor", "--instance", "p1"], kafka)
    restarted.wait_for_log("loaded partitions")
    assert outcome(kafka, send(bus, domain.Deposit(victim, 1))) == domain.MoneyDeposited(1, 7_01)
    assert len(read_raw(kafka, kafka.deadletters_topic)) == 2
    assert "Traceback" not in processor.log() + restarted.log()


def test_it_quarantines_a_foreign_record_written_while_no_processor_ran(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker, workers: Callable[..., Worker]
) -> None:
    partition, (victim, neighbour) = accounts_on_one_partition(kafka, bus)
    processor.stop()
    write_foreign(kafka, str(victim).encode(), partition)
    restarted = workers("processor-restarted", ["run_processor", "--instance", "p1"], kafka)
    restarted.wait_for_log("quarantined until released")
    assert isinstance(outcome(kafka, send(bus, domain.Deposit(neighbour, 1))), domain.MoneyDeposited)
    rejected = outcome(kafka, send(bus, domain.Withdraw(victim, 1)))
    assert rejected == domain.CommandRejected("Withdraw", domain.Reason.ACCOUNT_QUARANTINED, 1)
    assert [m.value() for m in read_raw(kafka, kafka.deadletters_topic)] == [FOREIGN]


def test_it_serves_a_partition_whose_records_were_deleted(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker, workers: Callable[..., Worker]
) -> None:
    partition, (account_id,) = accounts_on_one_partition(kafka, bus, 1)
    assert isinstance(outcome(kafka, send(bus, domain.Deposit(account_id, 3_00))), domain.MoneyDeposited)
    processor.stop()
    admin = AdminClient(kafka.client_config())
    end = end_offsets(kafka, kafka.events_topic)[partition]
    for future in admin.delete_records([TopicPartition(kafka.events_topic, partition, end)]).values():
        future.result()
    assert [m for m in read_raw(kafka, kafka.events_topic) if m.partition() == partition] == []

    restarted = workers("processor-restarted", ["run_processor", "--instance", "p1"], kafka)
    restarted.wait_for_log("loaded partitions", timeout=30)
    # The state topic still knows the account: the deposit lands on top of the balance before.
    assert outcome(kafka, send(bus, domain.Deposit(account_id, 1_00))) == domain.MoneyDeposited(1_00, 4_00)


def test_it_stops_within_seconds_of_sigterm_while_loading(kafka: KafkaSettings, workers: Callable[..., Worker]) -> None:
    # A foreign producer's open transaction holds read_committed readers back: the load waits on it.
    hold = Producer(
        kafka.client_config() | {"transactional.id": f"holder-{uuid.uuid4()}", "transaction.timeout.ms": 120_000}
    )
    hold.init_transactions(30)
    hold.begin_transaction()
    hold.produce(kafka.events_topic, key=b"x", value=FOREIGN, partition=0)
    hold.flush(10)
    try:
        worker = workers("processor-loading", ["run_processor", "--instance", "p1"], kafka)
        worker.wait_for_log(f"waiting on {kafka.events_topic} partitions [0]", timeout=60)
        worker.signal(signal.SIGTERM)
        started = time.monotonic()
        worker.process.wait(timeout=20)
        stopped_after = time.monotonic() - started
        assert stopped_after < 10, f"took {stopped_after:.1f}s to stop (target 5s)"
        assert "stopped while reading" in worker.log()
        assert "Traceback" not in worker.log()
    finally:
        hold.abort_transaction(30)


def test_it_names_the_stalled_partitions_and_gives_up_after_its_bound(kafka: KafkaSettings) -> None:
    hold = Producer(
        kafka.client_config() | {"transactional.id": f"holder-{uuid.uuid4()}", "transaction.timeout.ms": 120_000}
    )
    hold.init_transactions(30)
    hold.begin_transaction()
    hold.produce(kafka.events_topic, key=b"x", value=FOREIGN, partition=1)
    hold.flush(10)
    try:
        with pytest.raises(Exception, match=rf"{kafka.events_topic} partitions \[1\] made no progress"):
            Loader(kafka, "state", max_stall=2).load(range(kafka.partitions))
    finally:
        hold.abort_transaction(30)


def test_it_reads_the_tail_after_a_restart_of_a_log_written_without_state_topic(kafka: KafkaSettings) -> None:
    """A log from before the state topic (no states): the first load folds it all, and keeps going from there."""
    accounts = [uuid.uuid4() for _ in range(20)]
    processor = in_process(kafka, recovery="full")
    produce_commands(
        kafka,
        [messages.CommandEnvelope.new(domain.OpenAccount(a, "alice", "Main", "EUR"), "user:alice") for a in accounts]
        + [messages.CommandEnvelope.new(domain.Deposit(a, 2_00), "user:alice") for a in accounts],
    )
    run_until(processor, lambda: processor.decided >= 40)
    processor.close()
    assert read_raw(kafka, kafka.state_topic) == []
    taking_over = in_process(kafka)
    assert taking_over.last_load.events == 40 and taking_over.last_load.states == 0
    produce_commands(kafka, [messages.CommandEnvelope.new(domain.Withdraw(a, 50), "user:alice") for a in accounts])
    run_until(taking_over, lambda: taking_over.decided >= 20)
    run_until(taking_over, lambda: not any(part.dirty for part in taking_over.partitions.values()), 60)
    taking_over.close()
    assert latest_states(kafka) == fold(read_events(kafka))
    assert all(s.balance == 1_50 for s in latest_states(kafka).values())


def test_settings_name_the_state_topic_after_the_prefix() -> None:
    assert settings.KAFKA.state_topic == f"{settings.KAFKA.topic_prefix}account-state"


# --- a producer wedged inside librdkafka ---


def test_it_replaces_a_wedged_producer_and_the_late_commit_changes_nothing(
    fresh_topics: Callable[[], KafkaSettings], caplog: pytest.LogCaptureFixture
) -> None:
    """librdkafka can block a transaction call past its timeout (#5456, #5511). The processor gives that
    producer up after timeout + grace, makes a new one (which fences it) and decides the batch again; when
    the wedged commit returns late, it is refused: every command is decided exactly once."""
    kafka = fresh_topics()
    accounts = [uuid.uuid4() for _ in range(5)]
    envelopes = [
        messages.CommandEnvelope.new(domain.OpenAccount(a, "alice", "Main", "EUR"), "user:alice") for a in accounts
    ]
    envelopes += [
        messages.CommandEnvelope.new(domain.Deposit(accounts[i % 5], 100 + i), "user:alice") for i in range(40)
    ]
    processor = in_process(kafka, Faults(wedge=6.0), call_timeout=2.0, call_grace=1.0)
    try:
        produce_commands(kafka, envelopes)
        run_until(processor, lambda: processor.decided >= len(envelopes), 120)
        assert processor.producers_replaced == 1
        assert processor.aborts >= 1
        wedged = f"processor {processor.instance} transactions #0"
        wait_until(
            lambda: wedged not in {t.name for t in threading.enumerate()}, timeout=30, what="the wedged commit returned"
        )
        late = [r.getMessage() for r in caplog.records if "returned late" in r.getMessage()]
        assert len(late) == 1 and "fenced" in late[0], late  # the zombie commit was refused by the broker
        run_until(processor, lambda: not any(part.dirty for part in processor.partitions.values()), 60)
    finally:
        processor.close()

    events = read_events(kafka)
    per_command = Counter(e.command_id for e in events)
    assert per_command == Counter({e.command_id: 1 for e in envelopes})
    balances = {a: 0 for a in accounts}
    for i in range(40):
        balances[accounts[i % 5]] += 100 + i
    assert {UUID(a): v for a, v in Fold.of(raw_events(kafka)).balances.items()} == balances
