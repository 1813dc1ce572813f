"""Ids a client chooses never meet the ids the saga derives, on the real broker.

A transfer is (source account, transfer id); its steps' ids depend on both; the processor
remembers clients' command ids and steps' ids apart. The oracle is a plain read of bank.events
(orjson over the raw values) and a fold by hand, never the project's apply/evolve functions.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bank import domain
from bank.command_bus import CommandBus
from bank.config import KafkaSettings
from tests.helpers import Fold, Worker, raw_events, send, wait_until
from tests.test_transfers import ended, open_account

pytestmark = pytest.mark.timeout(600)


def old_step_id(transfer_id: UUID, step: str) -> UUID:
    """How step ids were derived before they named the source: from the transfer id alone."""
    return uuid.uuid5(domain.STEP_NAMESPACE, f"{transfer_id}:{step}")


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
    assert Fold.of(events).reported == {str(x): 15_00, str(y): 13_00, str(payee): 12_00}
    Fold.of(events).check()


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
    assert Fold.of(events).reported == expected
    Fold.of(events).check()


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
    assert Fold.of(events).reported == {str(source): 8_25, str(payee): 2_00}
    Fold.of(events).check()


# --- arbitrary client-chosen ids ---


@dataclass
class Ids:
    """What a hostile client may know when it picks an id: its own earlier ids, other accounts', step ids."""

    transfers: list[tuple[UUID, UUID]] = field(default_factory=list)  # (source, transfer id) sent so far
    accounts: list[UUID] = field(default_factory=list)
    used: list[UUID] = field(default_factory=list)


def pick_id(data: st.DataObject, ids: Ids, source: UUID) -> UUID:
    # Every draw has the same shape whatever the earlier examples left in `ids` (hypothesis replays examples:
    # a strategy that depends on outside state is flaky), so indexes are taken modulo what is known.
    kind = data.draw(st.sampled_from(["fresh", "used", "account", "old", "new", "reuse"]))
    index = data.draw(st.integers(0, 2**16))
    step = data.draw(st.sampled_from(["credit", "complete", "refund"]))
    same_source = data.draw(st.booleans())
    fresh = data.draw(st.uuids())
    if kind == "used" and ids.used:
        return ids.used[index % len(ids.used)]
    if kind == "account" and ids.accounts:
        return ids.accounts[index % len(ids.accounts)]
    if kind in ("old", "new", "reuse") and ids.transfers:
        src, t = ids.transfers[index % len(ids.transfers)]
        if kind == "reuse":
            return t
        if kind == "old":
            return old_step_id(t, step)
        return domain.step_id(source if same_source else src, t, step)
    return fresh


@pytest.fixture
def known() -> Ids:
    """Shared by all the examples of one test (one broker, one processor): later examples reuse earlier ids."""
    return Ids()


@settings(
    # Each example is a round trip through the broker (~0.2 s): 100 in the suite, more on request.
    max_examples=int(os.environ.get("BANK_PROPERTY_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(data=st.data())
def test_any_ids_a_client_picks_keep_money_conserved_and_every_transfer_ends(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker, tail: EventTail, known: Ids, data: st.DataObject
) -> None:
    """One processor for all examples; each example opens three accounts (two of one owner), sends a few
    deposits, withdrawals and transfers with ids drawn from everything a client could know or compute,
    waits until each account's last command is decided and every transfer has ended, and checks the fold."""
    ids = known
    own = [open_account(bus, deposit=10_00), open_account(bus, deposit=10_00)]
    other = open_account(bus, owner="bob")
    accounts = [*own, other]
    ids.accounts += accounts
    for _ in range(data.draw(st.integers(1, 6))):
        source = data.draw(st.sampled_from(own))
        command_id = pick_id(data, ids, source)
        kind = data.draw(st.sampled_from(["deposit", "withdraw", "transfer", "transfer", "transfer"]))
        amount = data.draw(st.integers(1, 12_00))
        if kind == "deposit":
            send(bus, domain.Deposit(source, amount), command_id=command_id)
        elif kind == "withdraw":
            send(bus, domain.Withdraw(source, amount), command_id=command_id)
        else:
            nowhere = data.draw(st.uuids())  # a well-formed number of no account: refunded
            destination = data.draw(st.sampled_from([*accounts, uuid.UUID(int=1), nowhere]))
            transfer_with(bus, source, command_id, destination, amount)
            ids.transfers.append((source, command_id))
        ids.used.append(command_id)
    # A fresh id per account, sent last: once it is decided, so is everything sent to that account before it.
    markers = {send(bus, domain.Deposit(a, 1)) for a in accounts}
    wait_until(lambda: tail.decided(markers), 60, 0.05, "each account's last command")
    wait_until(tail.settled, 60, 0.05, "every transfer to end")
    with tail.lock:
        tail.fold.check()


# --- a storm ---


def test_a_storm_with_reused_and_step_ids_conserves_money_to_the_cent(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker
) -> None:
    """8 clients at once over 24 accounts (12 owners of two each): transfers, withdrawals and deposits; some reuse
    a transfer id from their other account, some pick ids equal to steps' ids (old and new derivation)."""
    pairs = [(open_account(bus, deposit=300_00), open_account(bus, deposit=300_00)) for _ in range(12)]
    accounts = [a for pair in pairs for a in pair]
    nowhere = [uuid.uuid4() for _ in range(3)]  # well-formed numbers of no account: refunds
    sent: list[UUID] = []
    lock = threading.Lock()
    counts: Counter[str] = Counter()

    def client(seed: int, n: int) -> None:
        r = random.Random(seed)
        mine: list[tuple[UUID, UUID]] = []
        for _ in range(n):
            x, y = r.choice(pairs)
            source = r.choice((x, y))
            roll = r.random()
            if roll < 0.15 and mine:  # one transfer id from the other account of the pair, or again from its own
                _, t = r.choice(mine)
                kind = "reused"
            elif roll < 0.3 and mine:  # a client id equal to a step's id, as deposit or withdrawal
                src, t = r.choice(mine)
                step = r.choice(["credit", "complete", "refund"])
                chosen = old_step_id(t, step) if r.random() < 0.5 else domain.step_id(src, t, step)
                command: domain.Command = (
                    domain.Deposit(source, r.randint(1, 500)) if r.random() < 0.5 else domain.Withdraw(source, 1_00)
                )
                send(bus, command, command_id=chosen)
                with lock:
                    counts["step id"] += 1
                continue
            elif roll < 0.45:
                send(bus, domain.Withdraw(source, r.randint(1, 20_00)))
                with lock:
                    counts["withdrawal"] += 1
                continue
            else:
                t, kind = uuid.uuid4(), "transfer"
            destination = r.choice([*accounts, *nowhere]) if r.random() < 0.95 else source
            transfer_with(bus, source, t, destination, r.randint(1, 40_00))
            mine.append((source, t))
            with lock:
                sent.append(t)
                counts[kind] += 1

    threads = [threading.Thread(target=client, args=(seed, 250)) for seed in range(8)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    markers = {send(bus, domain.Deposit(a, 1)) for a in accounts}

    def settled() -> list[dict[str, Any]] | None:
        events = raw_events(kafka)
        decided = {e["command_id"] for e in events}
        return events if {str(m) for m in markers} <= decided and not Fold.of(events).open_transfers() else None

    events = wait_until(settled, 240, 1.0, "the storm to settle")
    f = Fold.of(events)
    f.check()
    assert counts["reused"] > 50 and counts["step id"] > 50, counts
    assert len(f.debits) > 500, "most transfers should have gone through"
    print(f"storm: {dict(counts)}, {f.events} events, {time.monotonic() - started:.1f}s")


# --- the state topic, before and after steps had a window of their own ---


def test_it_reads_state_records_of_both_formats() -> None:
    import base64

    from consumers.recovery import AccountRecord, decode_state, encode_state

    account, t, client, step = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    old = {
        "format": 1, "account_id": str(account), "version": 3, "status": "open", "owner": "1", "name": "Current",
        "currency": "EUR", "balance": 7_00, "transfers": {str(t): [str(uuid.uuid4()), 3_00]}, "quarantine": "",
        "released_at": -1, "events_offset": 12, "command_ids": base64.b64encode(client.bytes + step.bytes).decode(),
    }  # fmt: skip
    record, offset = decode_state(orjson.dumps(old), 20)
    assert offset == 12 and record.state.balance == 7_00 and record.state.in_flight == 3_00
    # One list of both kinds before: all count as clients' ids (steps are only ever checked among steps).
    assert list(record.command_ids) == [client.bytes, step.bytes] and not record.step_ids
    assert record.seen(client, step=False) and not record.seen(step, step=True)

    fresh = AccountRecord.new(account, 20)
    fresh.remember(client, step=False)
    fresh.remember(step, step=True)
    again, _ = decode_state(encode_state(fresh, 5), 20)
    assert again.seen(client, step=False) and not again.seen(client, step=True)
    assert again.seen(step, step=True) and not again.seen(step, step=False)
