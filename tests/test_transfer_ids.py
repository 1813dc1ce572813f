"""Ids a client chooses never meet the ids the saga derives, on the real broker.

A transfer is (source account, transfer id); its steps' ids depend on both; the processor
remembers clients' command ids and steps' ids apart. The oracle is a plain read of bank.events
(orjson over the raw values) and a fold by hand, never the project's apply/evolve functions.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from bank import domain
from bank.command_bus import CommandBus
from bank.config import KafkaSettings
from tests.helpers import Worker, send, wait_until
from tests.test_transfers import ended, last_balances, open_account, raw_events

pytestmark = pytest.mark.timeout(600)


def old_step_id(transfer_id: UUID, step: str) -> UUID:
    """How step ids were derived before they named the source: from the transfer id alone."""
    return uuid.uuid5(domain.STEP_NAMESPACE, f"{transfer_id}:{step}")


@dataclass
class Fold:
    """bank.events folded by hand, from plain JSON: balances, money in flight per (source, transfer id)."""

    balances: Counter[str] = field(default_factory=Counter)
    reported: dict[str, int] = field(default_factory=dict)  # the last balance each account's events state
    deposited: int = 0
    withdrawn: int = 0
    debits: Counter[tuple[str, str]] = field(default_factory=Counter)
    ends: Counter[tuple[str, str]] = field(default_factory=Counter)
    in_flight: int = 0
    sequences: dict[str, int] = field(default_factory=dict)
    events: int = 0

    def add(self, e: dict[str, Any]) -> None:
        self.events += 1
        account, data, kind = e["account_id"], e["data"], e["type"]
        assert e["sequence"] == self.sequences.get(account, 0) + 1, f"gap or repeat on {account}: {e}"
        self.sequences[account] = e["sequence"]
        amount = data.get("amount") or 0
        if kind == "MoneyDeposited":
            self.balances[account] += amount
            self.deposited += amount
        elif kind == "MoneyWithdrawn":
            self.balances[account] -= amount
            self.withdrawn += amount
        elif kind == "TransferDebited":
            self.balances[account] -= amount
            self.in_flight += amount
            self.debits[(account, data["transfer_id"])] += 1
        elif kind == "TransferCredited":
            self.balances[account] += amount
            self.in_flight -= amount
        elif kind == "TransferRefunded":
            self.balances[account] += amount
            self.in_flight -= amount
            self.ends[(account, data["transfer_id"])] += 1
        elif kind == "TransferCompleted":
            self.ends[(account, data["transfer_id"])] += 1
        if "balance" in data:
            self.reported[account] = data["balance"]

    def open_transfers(self) -> list[tuple[str, str]]:
        """Transfers debited more often than they ended (completed or refunded)."""
        return [key for key, n in self.debits.items() if self.ends[key] < n]

    def check(self) -> None:
        """Money conserved to the cent, nothing in flight, every transfer ended once, balances as reported."""
        assert not self.open_transfers(), f"transfers that never ended: {self.open_transfers()[:5]}"
        assert all(self.ends[k] == n for k, n in self.debits.items()), "a transfer ended twice"
        assert self.in_flight == 0, self.in_flight
        assert sum(self.balances.values()) == self.deposited - self.withdrawn
        assert all(v >= 0 for v in self.balances.values()), "a balance went negative"
        assert {a: v for a, v in self.balances.items() if a in self.reported} == self.reported


class EventTail:
    """A read_committed consumer of bank.events for the whole test, folding every event by hand."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.fold = Fold()
        self.by_command: set[str] = set()  # command ids that have an event (client commands and steps)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.consumer = Consumer(
            {
                "bootstrap.servers": kafka.bootstrap_servers,
                "group.id": f"tail-{uuid.uuid4().hex}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
        parts = self.consumer.list_topics(kafka.events_topic, timeout=10).topics[kafka.events_topic].partitions
        self.consumer.assign([TopicPartition(kafka.events_topic, p, OFFSET_BEGINNING) for p in parts])
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for message in self.consumer.consume(500, 0.2):
                if message.error() is None:
                    e = orjson.loads(message.value())
                    with self.lock:
                        self.fold.add(e)
                        self.by_command.add(e["command_id"])

    def decided(self, command_ids: set[UUID]) -> bool:
        with self.lock:
            return {str(c) for c in command_ids} <= self.by_command

    def settled(self) -> bool:
        with self.lock:
            return not self.fold.open_transfers()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.consumer.close()


@pytest.fixture
def tail(kafka: KafkaSettings) -> Iterator[EventTail]:
    events = EventTail(kafka)
    yield events
    events.close()


def transfer_with(bus: CommandBus, source: UUID, transfer_id: UUID, destination: UUID, amount: int) -> None:
    send(bus, domain.TransferMoney(source, transfer_id, destination, amount), command_id=transfer_id)


def events_when(kafka: KafkaSettings, ready: Callable[[list[dict[str, Any]]], bool], what: str) -> list[dict[str, Any]]:
    def check() -> list[dict[str, Any]] | None:
        events = raw_events(kafka)
        return events if ready(events) else None

    return wait_until(check, 60, 0.5, what)


def fold(events: list[dict[str, Any]]) -> Fold:
    f = Fold()
    for e in events:
        f.add(e)
    return f


# --- each collision found by probing ---


def test_it_keeps_apart_one_transfer_id_sent_from_two_own_accounts(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker
) -> None:
    x, y = open_account(bus, deposit=20_00), open_account(bus, deposit=20_00)
    payee = open_account(bus, owner="bob")
    t = uuid.uuid4()
    transfer_with(bus, x, t, payee, 5_00)
    wait_until(lambda: ended(kafka, {str(t)}), 30, what="the first transfer to end")
    transfer_with(bus, y, t, payee, 7_00)
    events = events_when(kafka, lambda e: sum(x["type"] == "TransferCompleted" for x in e) == 2, "both to complete")
    assert last_balances(events) == {str(x): 15_00, str(y): 13_00, str(payee): 12_00}
    fold(events).check()


@pytest.mark.parametrize("derivation", ["old", "new"])
@pytest.mark.parametrize("step", ["complete", "refund"])
def test_a_deposit_id_equal_to_a_future_step_id_does_not_stop_the_transfer(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker, step: str, derivation: str
) -> None:
    """A refund needs a payee number of no account; a completion, one that exists."""
    source = open_account(bus, deposit=10_00)
    payee = open_account(bus, owner="bob") if step == "complete" else uuid.uuid4()
    t = uuid.uuid4()
    chosen = old_step_id(t, step) if derivation == "old" else domain.step_id(source, t, step)
    send(bus, domain.Deposit(source, 1), command_id=chosen)
    transfer_with(bus, source, t, payee, 3_00)
    events = ended(kafka, {str(t)})
    kinds = [e["type"] for e in events if e["data"].get("transfer_id") == str(t)]
    assert kinds.count("TransferCompleted" if step == "complete" else "TransferRefunded") == 1, kinds
    expected = {str(source): 7_01 if step == "complete" else 10_01} | ({str(payee): 3_00} if step == "complete" else {})
    assert last_balances(events) == expected
    fold(events).check()


def test_a_transfer_id_reused_on_its_source_after_the_window_still_ends(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker
) -> None:
    """Past the processor's memory of client ids the reuse is decided again; its steps' ids repeat, so
    the payee refuses the second credit and the source refunds it: conserved, and it ends."""
    source = open_account(bus, deposit=10_00)
    payee = open_account(bus, owner="bob")
    t = uuid.uuid4()
    transfer_with(bus, source, t, payee, 2_00)
    ended(kafka, {str(t)})
    for _ in range(25):  # more than the 20 command ids the processor remembers per account
        send(bus, domain.Deposit(source, 1))
    transfer_with(bus, source, t, payee, 3_00)
    events = events_when(kafka, lambda e: any(x["type"] == "TransferRefunded" for x in e), "the reuse refunded")
    refunded = next(e for e in events if e["type"] == "TransferRefunded")
    assert refunded["data"]["reason"] == "transfer_exists"
    assert last_balances(events) == {str(source): 8_25, str(payee): 2_00}
    fold(events).check()
