"""The command processor against the real broker: exactly once, no overdraft, failover, fencing."""

from __future__ import annotations

import shutil
import signal
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from uuid import UUID

import pytest

from bank import domain, messages
from bank.command_bus import CommandBus, CommandNotConfirmed
from bank.config import KafkaSettings
from bank.kafka import ensure_topics
from devservices.kafka import KafkaNode
from devservices.process import free_port
from tests import faults
from tests.helpers import (
    VAR,
    Fold,
    Worker,
    opened_accounts,
    produce_raw,
    raw_events,
    read_events,
    read_raw,
    send,
    stream_commands,
    wait_until,
)

pytestmark = pytest.mark.timeout(240)


def open_account(bus: CommandBus, balance: int = 0) -> UUID:
    account_id = uuid.uuid4()
    send(bus, domain.OpenAccount(account_id, "alice", "Savings", "EUR"))
    if balance:
        send(bus, domain.Deposit(account_id, balance))
    return account_id


def wait_for_events(kafka: KafkaSettings, count: int, timeout: float = 90.0) -> list[messages.EventEnvelope]:
    return wait_until(lambda: (e := read_events(kafka)) and len(e) >= count and e, timeout, 0.5, f"{count} events")


def assert_exactly_once(events: list[messages.EventEnvelope], command_ids: set[UUID]) -> None:
    """Every command decided exactly once (each of these commands yields one event), sequences 1..N per account."""
    decided = Counter(e.command_id for e in events)
    assert set(decided) == command_ids, "lost or unknown commands"
    assert max(decided.values()) == 1, f"commands decided twice: {[c for c, n in decided.items() if n > 1][:5]}"
    by_account: dict[UUID, list[int]] = defaultdict(list)
    for event in events:
        by_account[event.account_id].append(event.sequence)
    for account_id, sequences in by_account.items():
        assert sequences == list(range(1, len(sequences) + 1)), f"gap or reorder in {account_id}: {sequences[:20]}"


def assert_balances_add_up(kafka: KafkaSettings) -> None:
    """The oracle, apart from the code under test: bank.events as plain JSON folded by hand (tests.helpers.Fold),
    each balance the sum of its deposits less its withdrawals, never below zero, equal to what the events state."""
    Fold.of(raw_events(kafka)).check()


def test_it_decides_1000_racing_withdrawals_without_overdraft(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker
) -> None:
    account_id = open_account(bus, balance=500_00)

    def withdraw_many(n: int) -> None:
        for _ in range(n):
            send(bus, domain.Withdraw(account_id, 1_00))

    threads = [threading.Thread(target=withdraw_many, args=(125,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    events = wait_for_events(kafka, 1002)
    assert len(events) == 1002
    kinds = Counter(type(e.event).__name__ for e in events)
    assert kinds["MoneyWithdrawn"] == 500
    rejections = [e.event for e in events if isinstance(e.event, domain.CommandRejected)]
    assert len(rejections) == 500
    assert {r.reason for r in rejections} == {domain.Reason.INSUFFICIENT_FUNDS}
    assert [e.sequence for e in events] == list(range(1, 1003))
    raw = raw_events(kafka)
    kinds = Counter(e["type"] for e in raw)
    assert kinds["MoneyDeposited"] == 1 and 500_00 - 1_00 * kinds["MoneyWithdrawn"] == 0, kinds
    assert Fold.of(raw).reported[str(account_id)] == 0
    assert_balances_add_up(kafka)
    assert all(
        isinstance(e.event, domain.CommandRejected) or e.event.balance >= 0
        for e in events
        if hasattr(e.event, "balance")
    )


def test_it_decides_a_repeated_command_once(kafka: KafkaSettings, bus: CommandBus, processor: Worker) -> None:
    account_id = open_account(bus)
    command_id = uuid.uuid4()
    for _ in range(3):
        send(bus, domain.Deposit(account_id, 25_00), command_id=command_id)
    marker = send(bus, domain.Deposit(account_id, 1))  # once this is decided, the repeats were too
    events = wait_until(lambda: (e := read_events(kafka)) and any(x.command_id == marker for x in e) and e, 60)
    assert [type(e.event).__name__ for e in events] == ["AccountOpened", "MoneyDeposited", "MoneyDeposited"]
    assert Counter(e["type"] for e in raw_events(kafka))["MoneyDeposited"] == 2
    assert Fold.of(raw_events(kafka)).balances[str(account_id)] == 25_01


def test_it_decides_every_command_once_across_a_sigkill(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker, workers: Callable[..., Worker]
) -> None:
    accounts, ids = opened_accounts(kafka, bus, 12)
    sender = threading.Thread(target=lambda: ids.update(stream_commands(bus, accounts, 100, pause=0.01)))
    sender.start()
    wait_until(lambda: len(read_events(kafka)) > 300, 60, what="the processor to be mid-stream")
    processor.signal(signal.SIGKILL)
    processor.process.wait()
    restarted = workers("processor-restarted", ["run_processor", "--instance", "p1"], kafka)
    sender.join()
    events = wait_for_events(kafka, len(ids))
    assert_exactly_once(events, ids)
    assert_balances_add_up(kafka)
    assert "assigned partitions" in restarted.log()


def test_it_decides_every_command_once_across_a_sigkill_with_a_transaction_open(
    kafka: KafkaSettings, bus: CommandBus, workers: Callable[..., Worker]
) -> None:
    # Each transaction is held open for a second, so the SIGKILL lands while one is open.
    doomed = workers(
        "processor-doomed", ["run_processor", "--instance", "p1"], kafka, faults.program(), FAULT_PAUSE="1.0"
    )
    doomed.wait_for_log("assigned partitions")
    accounts, ids = opened_accounts(kafka, bus, 6)
    sender = threading.Thread(target=lambda: ids.update(stream_commands(bus, accounts, 30, pause=0.01)))
    sender.start()
    doomed.wait_for_log("holding a transaction")
    doomed.signal(signal.SIGKILL)
    doomed.process.wait()
    # The same instance id fences the open transaction at once (init_transactions aborts it).
    restarted = workers("processor-restarted", ["run_processor", "--instance", "p1"], kafka)
    sender.join()
    events = wait_for_events(kafka, len(ids))
    assert_exactly_once(events, ids)
    assert_balances_add_up(kafka)
    assert "loaded partitions" in restarted.log()


def test_it_stops_within_seconds_on_sigterm_while_a_commit_is_blocked_in_librdkafka(
    kafka: KafkaSettings, bus: CommandBus, workers: Callable[..., Worker]
) -> None:
    # The first commit blocks for ten minutes, as librdkafka's can past their timeout (#5456).
    wedged = workers(
        "processor-wedged", ["run_processor", "--instance", "w1"], kafka, faults.program(), FAULT_WEDGE="600"
    )
    wedged.wait_for_log("assigned partitions")
    send(bus, domain.OpenAccount(uuid.uuid4(), "alice", "Main", "EUR"))
    wedged.wait_for_log("this commit blocks")
    wedged.signal(signal.SIGTERM)
    assert wedged.process.wait(timeout=15) == 0
    assert "stopped while waiting for the commit" in wedged.log()


def test_it_fails_over_to_a_second_instance(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker, workers: Callable[..., Worker]
) -> None:
    second = workers("processor-2", ["run_processor", "--instance", "p2"], kafka)
    second.wait_for_log("assigned partitions")
    accounts, ids = opened_accounts(kafka, bus, 12)
    sender = threading.Thread(target=lambda: ids.update(stream_commands(bus, accounts, 100, pause=0.01)))
    sender.start()
    wait_until(lambda: len(read_events(kafka)) > 300, 60, what="both instances to be mid-stream")
    processor.signal(signal.SIGKILL)
    sender.join()
    events = wait_for_events(kafka, len(ids))
    assert_exactly_once(events, ids)
    assert f"assigned partitions {list(range(kafka.partitions))}" in second.log()


def test_it_fences_a_frozen_zombie_instance(
    kafka: KafkaSettings, bus: CommandBus, workers: Callable[..., Worker]
) -> None:
    # The zombie holds each transaction open for a second, so it is frozen with one open.
    zombie = workers("zombie", ["run_processor", "--instance", "zombie"], kafka, faults.program(), FAULT_PAUSE="1.0")
    zombie.wait_for_log("assigned partitions")
    accounts, ids = opened_accounts(kafka, bus, 12)
    sender = threading.Thread(target=lambda: ids.update(stream_commands(bus, accounts, 60, pause=0.02)))
    sender.start()
    zombie.wait_for_log("holding a transaction")
    zombie.signal(signal.SIGSTOP)
    # Past its 2 s session timeout, the zombie's partitions move to the healthy instance.
    healthy = workers("healthy", ["run_processor", "--instance", "healthy"], kafka)
    healthy.wait_for_log(f"assigned partitions {list(range(kafka.partitions))}", timeout=60)
    sender.join()
    events = wait_for_events(kafka, len(ids))
    zombie.signal(signal.SIGCONT)  # it wakes up and tries to commit what it decided while frozen
    # Fenced: either its transaction aborts (stale group generation) or, if the coordinator already
    # timed it out, the producer is fenced for good and the instance stops for its supervisor to restart.
    wait_until(
        lambda: "transaction failed" in zombie.log() or "must restart" in zombie.log(),
        30,
        what="the zombie to be fenced",
    )
    # A marker on every account, decided by the healthy instance: once each is readable (read_committed), whatever
    # the zombie wrote before it on that partition has been committed or aborted, so nothing of it can come later.
    markers = {send(bus, domain.Deposit(a, 1)) for a in accounts}
    events = wait_until(
        lambda: (e := read_events(kafka)) and markers <= {x.command_id for x in e} and e, 60, 0.3, "the markers"
    )
    assert_exactly_once(events, ids | markers)
    assert_balances_add_up(kafka)


def test_it_dead_letters_poison_commands_and_keeps_going(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker
) -> None:
    account_id = uuid.uuid4()
    good = messages.CommandEnvelope.new(domain.Deposit(account_id, 5), "user:alice").to_dict()
    poison = [
        b"{not json",
        messages.orjson.dumps({**good, "type": "TransferEverything"}),
        messages.orjson.dumps({**good, "data": {"amount": "five"}}),
    ]
    for value in poison:  # keyed by the account: the same partition as the commands after it
        produce_raw(kafka, kafka.commands_topic, str(account_id).encode(), value)
    send(bus, domain.OpenAccount(account_id, "alice", "After poison", "EUR"))
    events = wait_for_events(kafka, 1)
    assert [type(e.event).__name__ for e in events] == ["AccountOpened"]
    dead = wait_until(lambda: (d := read_raw(kafka, kafka.deadletters_topic)) and len(d) >= 3 and d, 30)
    assert sorted(m.value() for m in dead) == sorted(poison)
    [opened] = read_raw(kafka, kafka.events_topic)
    assert {int(dict(m.headers())["dlq.source.partition"]) for m in dead} == {opened.partition()}
    for message in dead:
        headers = dict(message.headers())
        assert headers["dlq.source.topic"] == kafka.commands_topic.encode()
        assert int(headers["dlq.source.offset"]) >= 0
        assert headers["dlq.error"]
    assert "dead-lettering" in processor.log()


def test_it_says_clearly_when_the_broker_cannot_confirm(kafka_node: KafkaNode) -> None:
    shutil.rmtree(VAR / "kafka-down", ignore_errors=True)
    node = KafkaNode(VAR / "kafka-down", port=free_port(), controller_port=free_port(), internal_partitions=1)
    node.start(wait=90)
    try:
        kafka = KafkaSettings(bootstrap_servers=node.bootstrap, topic_prefix="down.", partitions=1, command_timeout=2.0)
        ensure_topics(kafka)
        bus = CommandBus(kafka)
        account_id = uuid.uuid4()
        send(bus, domain.OpenAccount(account_id, "alice", "Before", "EUR"))
        node.stop()
        started = time.monotonic()
        with pytest.raises(CommandNotConfirmed, match="did not"):
            send(bus, domain.Deposit(account_id, 1_00))
        assert time.monotonic() - started < kafka.command_timeout + 1.5
        bus.close()
        node.start(wait=90)
        commands = read_raw(kafka, kafka.commands_topic)
        assert [messages.decode_command(m.value()).type for m in commands] == ["OpenAccount"]
    finally:
        node.stop()


def test_it_decides_the_first_command_after_a_broker_restart_without_waiting_out_a_wedged_call(
    kafka_node: KafkaNode, workers: Callable[..., Worker]
) -> None:
    # A broker of the test's own, stopped and started again under a running processor. The producer that
    # lived through the outage blocked its first send_offsets_to_transaction until the call's bound (15 s),
    # then was replaced: the first command after the restart waited ~17 s. The delay is printed, not asserted.
    shutil.rmtree(VAR / "kafka-restart", ignore_errors=True)
    node = KafkaNode(
        VAR / "kafka-restart",
        port=free_port(),
        controller_port=free_port(),
        internal_partitions=1,
        extra={"group.min.session.timeout.ms": "1000"},
    )
    node.start(wait=90)
    try:
        kafka = KafkaSettings(bootstrap_servers=node.bootstrap, topic_prefix="restart.", partitions=1)
        ensure_topics(kafka)
        processor = workers("processor-restart", ["run_processor", "--instance", "r1"], kafka)
        processor.wait_for_log("assigned partitions")
        bus = CommandBus(kafka)
        account_id = uuid.uuid4()
        send(bus, domain.OpenAccount(account_id, "alice", "Before", "EUR"))
        wait_for_events(kafka, 1)
        node.stop()
        time.sleep(5)
        node.start(wait=90)
        reachable = time.monotonic()
        while True:  # the command bus reconnects on its own; a command it could not confirm was not sent
            try:
                deposit = send(bus, domain.Deposit(account_id, 1_00))
                break
            except CommandNotConfirmed:
                continue
        events = wait_for_events(kafka, 2)
        print(f"first command after the restart decided {time.monotonic() - reachable:.1f}s after the broker was back")
        bus.close()
        assert [e.command_id for e in events].count(deposit) == 1
        assert "still blocked" not in processor.log()  # no call was waited out to its bound
    finally:
        node.stop()
