"""`domain.handle`: one command on one account's state, as the processor decides it, without Kafka.

The expected events, steps and states are written out by hand (not folded with `evolve`)."""

from __future__ import annotations

import uuid

from bank.domain import (
    STEP_NAMESPACE,
    Account,
    AccountReleased,
    CommandRejected,
    CompleteTransfer,
    CreditTransfer,
    Deposit,
    InFlight,
    Reason,
    RefundTransfer,
    ReleaseAccount,
    Status,
    TransferDebited,
    TransferMoney,
    TransferRefused,
    handle,
)

SOURCE, DESTINATION, TRANSFER = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
OPEN = Account(SOURCE, version=3, status=Status.OPEN, owner="alice", name="Main", currency="EUR", balance=500)


def test_a_transfer_is_debited_and_calls_for_the_credit_with_the_steps_id() -> None:
    decision = handle(OPEN, TransferMoney(SOURCE, TRANSFER, DESTINATION, 200), repeated=False, quarantine=False)
    assert decision.outcome == "accepted"
    assert decision.events == [TransferDebited(TRANSFER, DESTINATION, 200, "EUR", 300)]
    credit_id = uuid.uuid5(STEP_NAMESPACE, f"{SOURCE}:{TRANSFER}:credit")
    assert decision.steps == [(credit_id, CreditTransfer(DESTINATION, TRANSFER, SOURCE, 200, "EUR"))]
    assert decision.state == Account(
        SOURCE, 4, Status.OPEN, "alice", "Main", "EUR", 300, {TRANSFER: InFlight(DESTINATION, 200)}
    )


def test_a_clients_command_seen_before_is_a_duplicate_and_changes_nothing() -> None:
    decision = handle(OPEN, Deposit(SOURCE, 100), repeated=True, quarantine=False)
    assert (decision.outcome, decision.events, decision.steps, decision.state) == ("duplicate", [], [], OPEN)


def test_a_quarantined_account_rejects_a_deposit_but_can_be_released() -> None:
    rejected = handle(OPEN, Deposit(SOURCE, 100), repeated=False, quarantine=True)
    assert (rejected.outcome, rejected.reason) == ("rejected", "account_quarantined")
    assert rejected.events == [CommandRejected("Deposit", Reason.ACCOUNT_QUARANTINED, 100)]
    assert rejected.state.balance == 500 and rejected.state.version == 4
    released = handle(OPEN, ReleaseAccount(SOURCE), repeated=False, quarantine=True)
    assert (released.outcome, released.events) == ("accepted", [AccountReleased()])


def test_a_credit_step_seen_before_is_refused_and_calls_for_the_refund() -> None:
    payee = Account(DESTINATION, 1, Status.OPEN, "bob", "Main", "EUR", 0)
    decision = handle(payee, CreditTransfer(DESTINATION, TRANSFER, SOURCE, 200, "EUR"), repeated=True, quarantine=False)
    assert decision.events == [TransferRefused(TRANSFER, SOURCE, 200, "EUR", Reason.TRANSFER_EXISTS)]
    refund_id = uuid.uuid5(STEP_NAMESPACE, f"{SOURCE}:{TRANSFER}:refund")
    assert decision.steps == [(refund_id, RefundTransfer(SOURCE, TRANSFER, Reason.TRANSFER_EXISTS))]
    assert decision.state.balance == 0


def test_a_completion_seen_before_with_nothing_in_flight_is_answered_already() -> None:
    decision = handle(OPEN, CompleteTransfer(SOURCE, TRANSFER), repeated=True, quarantine=False)
    assert (decision.outcome, decision.events, decision.state) == ("duplicate", [], OPEN)
