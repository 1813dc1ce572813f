"""Transfers end to end against the real broker: the saga's steps, its refunds, and exactly once under SIGKILL.

The oracle is a plain read of bank.events: the committed raw values through orjson, never the project's
decoder, folded by hand (tests.helpers.Fold), so a bug shared by the writer and the reader cannot hide.
"""

from __future__ import annotations

import io
import random
import signal
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any
from uuid import UUID

import pytest
from django.core.management import call_command
from django.db import connection

from bank import domain
from bank.account_number import account_number
from bank.command_bus import CommandBus
from bank.config import KafkaSettings
from projections import replay
from projections.models import Account, AuditEntry, Transfer
from tests.helpers import Fold, Worker, raw_events, send, wait_until

pytestmark = pytest.mark.timeout(300)

ENDINGS = {"TransferCompleted", "TransferRefunded"}


def open_account(bus: CommandBus, currency: str = "EUR", deposit: int = 0, owner: str = "alice") -> UUID:
    account_id = uuid.uuid4()
    send(bus, domain.OpenAccount(account_id, owner, "Current", currency))
    if deposit:
        send(bus, domain.Deposit(account_id, deposit))
    return account_id


def transfer(bus: CommandBus, source: UUID, destination: UUID, amount: int) -> UUID:
    transfer_id = uuid.uuid4()
    send(bus, domain.TransferMoney(source, transfer_id, destination, amount), command_id=transfer_id)
    return transfer_id


def ended(kafka: KafkaSettings, transfers: set[str]) -> list[dict[str, Any]]:
    """Wait until each transfer has ended (or was rejected at the source); the raw events then."""

    def done() -> list[dict[str, Any]] | None:
        events = raw_events(kafka)
        finished = {e["data"]["transfer_id"] for e in events if e["type"] in ENDINGS}
        rejected = {e["command_id"] for e in events if e["type"] == "CommandRejected"}
        return events if transfers <= finished | rejected else None

    return wait_until(done, 150, 1.0, f"{len(transfers)} transfers to end")


def of_transfer(events: list[dict[str, Any]], transfer_id: UUID) -> list[tuple[str, str]]:
    return [(e["type"], e["account_id"]) for e in events if e["data"].get("transfer_id") == str(transfer_id)]


def test_it_moves_money_between_accounts_in_three_steps(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker
) -> None:
    source = open_account(bus, deposit=100_00)
    destination = open_account(bus, owner="bob")
    transfer_id = transfer(bus, source, destination, 40_00)
    events = ended(kafka, {str(transfer_id)})
    assert sorted(of_transfer(events, transfer_id)) == sorted(
        [("TransferDebited", str(source)), ("TransferCredited", str(destination)), ("TransferCompleted", str(source))]
    )
    assert Fold.of(events).reported == {str(source): 60_00, str(destination): 40_00}
    credit = next(e for e in events if e["type"] == "TransferCredited")
    assert credit["actor"] == domain.SAGA_ACTOR, "the payee's history must not name the payer"
    assert credit["command_id"] == str(domain.step_id(source, transfer_id, "credit"))

    out = io.StringIO()
    call_command("inspect_topic", "events", "--transfer", str(transfer_id), stdout=out)
    shown = out.getvalue()
    assert "3 message(s)" in shown
    assert f"= TransferCredited #2: account_id={account_number(destination)}" in shown
    assert f"from_account={account_number(source)}, amount=4000, currency=EUR" in shown
    out = io.StringIO()
    call_command("inspect_topic", "commands", "--transfer", str(transfer_id), stdout=out)
    assert "= CompleteTransfer:" in out.getvalue() and "= CreditTransfer:" in out.getvalue()


@pytest.mark.parametrize("case", ["closed", "unknown", "other currency"])
def test_it_refunds_a_transfer_the_destination_refuses(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker, case: str
) -> None:
    source = open_account(bus, deposit=100_00)
    if case == "closed":
        destination = open_account(bus)
        send(bus, domain.CloseAccount(destination))
    elif case == "unknown":
        destination = uuid.uuid4()
    else:
        destination = open_account(bus, currency="USD")
    transfer_id = transfer(bus, source, destination, 30_00)
    events = ended(kafka, {str(transfer_id)})
    steps = of_transfer(events, transfer_id)
    assert sorted(steps) == sorted(
        [("TransferDebited", str(source)), ("TransferRefused", str(destination)), ("TransferRefunded", str(source))]
    )
    refunded = next(e for e in events if e["type"] == "TransferRefunded")
    reason = {"closed": "account_closed", "unknown": "account_not_found", "other currency": "currency_mismatch"}[case]
    assert refunded["data"]["reason"] == reason
    assert Fold.of(events).reported[str(source)] == 100_00


def test_it_refuses_a_transfer_to_the_same_account_without_moving_money(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker
) -> None:
    source = open_account(bus, deposit=10_00)
    transfer_id = transfer(bus, source, source, 5_00)
    events = ended(kafka, {str(transfer_id)})
    rejection = next(e for e in events if e["command_id"] == str(transfer_id))
    assert (rejection["type"], rejection["data"]["reason"]) == ("CommandRejected", "same_account")
    assert Fold.of(events).reported == {str(source): 10_00}


def money_in_the_projections() -> tuple[int, int]:
    """(sum of balances, money in flight) by plain SQL, in one snapshot.

    In flight as DESIGN.md has it: debited, neither credited nor refunded. The debit and the
    credit sit on different partitions, so the projector may commit a credit before the debit
    it follows: until the debit arrives, that transfer counts as minus its amount (the
    destination's balance has it, the source's still too). Once settled the term is zero.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT coalesce(sum(balance), 0) FROM projections_account), "
            "(SELECT coalesce(sum(amount * ((debited_at IS NOT NULL)::int - (credited_at IS NOT NULL)::int "
            "- (refunded_at IS NOT NULL)::int)), 0) FROM projections_transfer)"
        )
        balances, in_flight = cursor.fetchone()
        return int(balances), int(in_flight)


@pytest.mark.django_db(transaction=True)
def test_it_ends_1000_concurrent_transfers_exactly_once_across_a_sigkill(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker, projector: Worker, workers: Callable[..., Worker]
) -> None:
    """20 accounts on every partition (two in USD, one closed), two processor instances, one SIGKILLed mid-way;
    the projector runs all along, and the money it shows is conserved after every batch."""
    second = workers("processor-2", ["run_processor", "--instance", "p2"], kafka)
    second.wait_for_log("assigned partitions")
    rng = random.Random(11)
    deposits = {open_account(bus, currency="USD" if i in (3, 7) else "EUR", deposit=500_00): 500_00 for i in range(19)}
    closed = open_account(bus)
    send(bus, domain.CloseAccount(closed))
    accounts = [*deposits, closed]
    total = sum(deposits.values())
    wait_until(lambda: money_in_the_projections() == (total, 0), 60, 0.3, "the deposits to be projected")
    plan = [(rng.choice(accounts[:19]), rng.choice(accounts), rng.randint(1, 30_00)) for _ in range(1000)]
    sent: set[str] = set()
    lock = threading.Lock()

    def sender(part: list[tuple[UUID, UUID, int]]) -> None:
        for source, destination, amount in part:
            transfer_id = transfer(bus, source, destination, amount)
            with lock:
                sent.add(str(transfer_id))

    threads = [threading.Thread(target=sender, args=(plan[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    wait_until(lambda: len(sent) > 300, 60, what="a third of the transfers to be sent")
    processor.signal(signal.SIGKILL)
    while any(t.is_alive() for t in threads):
        # Each projector batch is one database transaction: any moment's snapshot must add up.
        balances, in_flight = money_in_the_projections()
        assert balances + in_flight == total, (balances, in_flight)
        threads[0].join(0.2)
    for t in threads:
        t.join()
    assert len(sent) == 1000
    events = ended(kafka, sent)

    kinds: dict[str, Counter[str]] = defaultdict(Counter)
    for e in events:
        if "transfer_id" in e["data"]:
            kinds[e["data"]["transfer_id"]][e["type"]] += 1
    rejected = {e["command_id"] for e in events if e["type"] == "CommandRejected"}
    debited = {t for t in sent if kinds[t]["TransferDebited"]}
    assert debited | rejected >= sent and not debited & rejected
    for t in debited:
        k = kinds[t]
        assert k["TransferDebited"] == 1, (t, k)
        assert k["TransferCredited"] + k["TransferRefused"] == 1, (t, k)
        assert k["TransferCompleted"] + k["TransferRefunded"] == 1, (t, k)
        assert k["TransferCredited"] == k["TransferCompleted"], (t, k)
    assert len(debited) > 500, "most transfers should have gone through"
    assert any(kinds[t]["TransferRefunded"] for t in debited), "some transfers should have been refunded"

    # Balances: an independent fold of the raw amounts, and the last balance each account's events report.
    expected = dict.fromkeys(map(str, accounts), 0) | {str(a): amount for a, amount in deposits.items()}
    for e in events:
        amount = e["data"].get("amount")
        if e["type"] == "TransferDebited":
            expected[e["account_id"]] -= amount
        elif e["type"] in ("TransferCredited", "TransferRefunded"):
            expected[e["account_id"]] += amount
    assert all(v >= 0 for v in expected.values())
    assert sum(expected.values()) == sum(deposits.values()), "money conserved once nothing is in flight"
    assert Fold.of(events).reported == {a: v for a, v in expected.items() if a != str(closed)}
    sequences: dict[str, list[int]] = defaultdict(list)
    for e in events:
        sequences[e["account_id"]].append(e["sequence"])
    assert all(s == list(range(1, len(s) + 1)) for s in sequences.values()), "no gaps, nothing twice"
    assert "assigned partitions [0, 1, 2]" in second.log()

    # The read side: every transfer row ended, balances as folded, nothing in flight, and replay agrees.
    wait_until(
        lambda: Transfer.objects.filter(status__in=["completed", "refunded"]).count() == len(debited),
        90,
        0.5,
        "the projector to see every transfer end",
    )
    assert set(map(str, Transfer.objects.values_list("transfer_id", flat=True))) == debited
    assert all(
        (row.status == "completed") == bool(kinds[str(row.transfer_id)]["TransferCompleted"])
        for row in Transfer.objects.all()
    )
    wait_until(
        lambda: (
            {str(a.id): a.balance for a in Account.objects.exclude(id=closed)}
            == {a: v for a, v in expected.items() if a != str(closed)}
        ),
        60,
        0.5,
        "the projected balances to match the fold",
    )
    assert money_in_the_projections() == (total, 0)
    assert not Account.objects.exclude(in_flight=0).exists()
    assert AuditEntry.objects.filter(type="TransferDebited").count() == len(debited)
    assert replay.verify(kafka, progress=False) == []
