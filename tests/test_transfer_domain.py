"""Transfers on the pure domain: each step's rules, the saga's next steps, account numbers, and the
invariants over random interleavings (no negative balance, money conserved, every transfer ends)."""

from __future__ import annotations

import uuid
from collections import Counter
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bank.account_number import AccountNumberError, account_number, display, parse_account_number
from bank.domain import (
    STEP_NAMESPACE,
    Account,
    CloseAccount,
    CommandRejected,
    CompleteTransfer,
    CreditTransfer,
    Deposit,
    MoneyDeposited,
    MoneyWithdrawn,
    OpenAccount,
    Reason,
    RefundTransfer,
    TransferCompleted,
    TransferCredited,
    TransferDebited,
    TransferMoney,
    TransferRefunded,
    TransferRefused,
    Withdraw,
    caused_by_step,
    decide,
    evolve,
    is_step,
    next_step,
    repeated_step,
    step_id,
)

SRC = UUID("00000000-0000-4000-8000-00000000000a")
DST = UUID("00000000-0000-4000-8000-00000000000b")
T1 = UUID("00000000-0000-4000-8000-0000000000f1")
LIMIT = 1_000


def run(state: Account, *commands, max_amount: int = LIMIT) -> tuple[Account, list]:
    events = []
    for command in commands:
        for event in decide(state, command, max_amount):
            state = evolve(state, event)
            events.append(event)
    return state, events


def account(account_id: UUID, balance: int = 0, currency: str = "EUR") -> Account:
    state, _ = run(Account.new(account_id), OpenAccount(account_id, "alice", "Main", currency))
    if balance:
        state, _ = run(state, Deposit(account_id, balance))
    return state


# --- the debit on the source ---


def test_it_debits_the_source_and_keeps_the_money_in_flight():
    state, events = run(account(SRC, 500), TransferMoney(SRC, T1, DST, 200))
    assert events == [TransferDebited(T1, DST, 200, "EUR", 300)]
    assert (state.balance, state.in_flight) == (300, 200)


def test_it_refuses_a_transfer_beyond_the_balance():
    state, events = run(account(SRC, 100), TransferMoney(SRC, T1, DST, 101))
    assert events == [CommandRejected("TransferMoney", Reason.INSUFFICIENT_FUNDS, 101)]
    assert (state.balance, state.in_flight) == (100, 0)


def test_it_refuses_a_transfer_to_the_same_account():
    _, events = run(account(SRC, 100), TransferMoney(SRC, T1, SRC, 10))
    assert events == [CommandRejected("TransferMoney", Reason.SAME_ACCOUNT, 10)]


@pytest.mark.parametrize(
    ("amount", "reason"),
    [
        (0, Reason.INVALID_AMOUNT),
        (-5, Reason.INVALID_AMOUNT),
        (True, Reason.INVALID_AMOUNT),
        (LIMIT + 1, Reason.AMOUNT_ABOVE_LIMIT),
    ],
)
def test_it_applies_the_amount_rules_to_transfers(amount, reason):
    _, events = run(
        account(
            SRC,
            10 * LIMIT,
        ),
        TransferMoney(SRC, T1, DST, amount),
        max_amount=LIMIT,
    )
    assert events == [CommandRejected("TransferMoney", reason, amount)]


def test_it_refuses_a_transfer_from_a_closed_or_unknown_account():
    closed, _ = run(account(SRC), CloseAccount(SRC))
    assert run(closed, TransferMoney(SRC, T1, DST, 1))[1] == [
        CommandRejected("TransferMoney", Reason.ACCOUNT_CLOSED, 1)
    ]
    unknown = Account.new(SRC)
    assert run(unknown, TransferMoney(SRC, T1, DST, 1))[1] == [
        CommandRejected("TransferMoney", Reason.ACCOUNT_NOT_FOUND, 1)
    ]


def test_it_refuses_to_reuse_the_id_of_a_transfer_in_flight():
    state, _ = run(account(SRC, 500), TransferMoney(SRC, T1, DST, 100))
    _, events = run(state, TransferMoney(SRC, T1, DST, 100))
    assert events == [CommandRejected("TransferMoney", Reason.TRANSFER_EXISTS, 100)]


def test_it_refuses_to_close_an_account_with_money_in_flight():
    state, _ = run(account(SRC, 100), TransferMoney(SRC, T1, DST, 100))
    assert state.balance == 0
    assert run(state, CloseAccount(SRC))[1] == [CommandRejected("CloseAccount", Reason.TRANSFERS_IN_FLIGHT)]


# --- the credit on the destination ---


def test_it_credits_the_destination():
    state, events = run(account(DST, 50), CreditTransfer(DST, T1, SRC, 200, "EUR"))
    assert events == [TransferCredited(T1, SRC, 200, "EUR", 250)]
    assert state.balance == 250


@pytest.mark.parametrize(
    ("destination", "reason"),
    [
        (Account.new(DST), Reason.ACCOUNT_NOT_FOUND),
        (run(account(DST), CloseAccount(DST))[0], Reason.ACCOUNT_CLOSED),
        (account(DST, 50, currency="USD"), Reason.CURRENCY_MISMATCH),
    ],
)
def test_it_refuses_a_credit_the_destination_cannot_take(destination, reason):
    state, events = run(destination, CreditTransfer(DST, T1, SRC, 200, "EUR"))
    assert events == [TransferRefused(T1, SRC, 200, "EUR", reason)]
    assert state.balance == destination.balance
    assert state.version == destination.version + 1


# --- back on the source ---


def test_it_completes_a_transfer_and_clears_the_money_in_flight():
    state, _ = run(account(SRC, 500), TransferMoney(SRC, T1, DST, 200))
    state, events = run(state, CompleteTransfer(SRC, T1))
    assert events == [TransferCompleted(T1, DST, 200, "EUR")]
    assert (state.balance, state.in_flight) == (300, 0)


def test_it_refunds_a_refused_transfer():
    state, _ = run(account(SRC, 500), TransferMoney(SRC, T1, DST, 200))
    state, events = run(state, RefundTransfer(SRC, T1, Reason.ACCOUNT_CLOSED))
    assert events == [TransferRefunded(T1, DST, 200, "EUR", Reason.ACCOUNT_CLOSED, 500)]
    assert (state.balance, state.in_flight) == (500, 0)


def test_it_rejects_completing_or_refunding_a_transfer_not_in_flight():
    state = account(SRC, 500)
    assert run(state, CompleteTransfer(SRC, T1))[1] == [CommandRejected("CompleteTransfer", Reason.UNKNOWN_TRANSFER)]
    state, _ = run(state, TransferMoney(SRC, T1, DST, 200), CompleteTransfer(SRC, T1))
    assert run(state, RefundTransfer(SRC, T1, Reason.ACCOUNT_CLOSED))[1] == [
        CommandRejected("RefundTransfer", Reason.UNKNOWN_TRANSFER)
    ]
    assert state.balance == 300


# --- the saga's next steps ---


def test_it_names_the_next_step_of_each_event_with_a_stable_id():
    debited = TransferDebited(T1, DST, 200, "EUR", 300)
    assert next_step(SRC, debited) == (step_id(SRC, T1, "credit"), CreditTransfer(DST, T1, SRC, 200, "EUR"))
    credited = TransferCredited(T1, SRC, 200, "EUR", 250)
    assert next_step(DST, credited) == (step_id(SRC, T1, "complete"), CompleteTransfer(SRC, T1))
    refused = TransferRefused(T1, SRC, 200, "EUR", Reason.CURRENCY_MISMATCH)
    assert next_step(DST, refused) == (step_id(SRC, T1, "refund"), RefundTransfer(SRC, T1, Reason.CURRENCY_MISMATCH))
    assert next_step(SRC, TransferCompleted(T1, DST, 200, "EUR")) is None
    assert len({step_id(SRC, T1, s) for s in ("credit", "complete", "refund")} | {T1}) == 4
    assert step_id(SRC, T1, "credit") == step_id(UUID(str(SRC)), UUID(str(T1)), "credit")


def test_it_gives_one_transfer_id_from_two_sources_different_step_ids():
    other = uuid.uuid4()
    for step in ("credit", "complete", "refund"):
        assert step_id(SRC, T1, step) != step_id(other, T1, step)
        assert step_id(SRC, T1, step) != uuid.uuid5(STEP_NAMESPACE, f"{T1}:{step}"), "not the old derivation"


def test_it_tells_steps_from_clients_commands():
    assert all(is_step(c) for c in (CreditTransfer(DST, T1, SRC, 1, "EUR"), CompleteTransfer(SRC, T1)))
    assert is_step(RefundTransfer(SRC, T1, Reason.ACCOUNT_CLOSED))
    assert not any(is_step(c) for c in (TransferMoney(SRC, T1, DST, 1), Deposit(SRC, 1), Withdraw(SRC, 1)))
    assert caused_by_step(TransferCredited(T1, SRC, 1, "EUR", 1))
    assert caused_by_step(CommandRejected("CompleteTransfer", Reason.UNKNOWN_TRANSFER))
    assert not caused_by_step(CommandRejected("TransferMoney", Reason.INSUFFICIENT_FUNDS))
    assert not caused_by_step(TransferDebited(T1, DST, 1, "EUR", 1))


def test_it_answers_a_repeated_step_instead_of_dropping_it():
    """A transfer id reused on its source after its first transfer ended: the steps' ids repeat."""
    state, _ = run(account(SRC, 500), TransferMoney(SRC, T1, DST, 200), CompleteTransfer(SRC, T1))
    state, events = run(state, TransferMoney(SRC, T1, DST, 100))
    assert events == [TransferDebited(T1, DST, 100, "EUR", 200)]
    # The payee refuses the second credit (the source refunds it); the source decides on its state.
    assert repeated_step(account(DST), CreditTransfer(DST, T1, SRC, 100, "EUR")) == [
        TransferRefused(T1, SRC, 100, "EUR", Reason.TRANSFER_EXISTS)
    ]
    refund = RefundTransfer(SRC, T1, Reason.TRANSFER_EXISTS)
    assert repeated_step(state, refund) == [TransferRefunded(T1, DST, 100, "EUR", Reason.TRANSFER_EXISTS, 300)]
    assert repeated_step(state, CompleteTransfer(SRC, T1)) == [TransferCompleted(T1, DST, 100, "EUR")]
    ended, _ = run(state, refund)
    assert repeated_step(ended, CompleteTransfer(SRC, T1)) == [], "nothing in flight: answered already"
    assert repeated_step(ended, refund) == []


# --- account numbers ---


@given(st.uuids())
def test_it_turns_an_account_number_back_into_its_id(account_id):
    number = account_number(account_id)
    assert number.startswith("KB") and len(number) == 30
    assert parse_account_number(number) == account_id
    assert parse_account_number(display(number).lower()) == account_id


@given(st.uuids(), st.integers(min_value=2, max_value=29), st.sampled_from("0123456789ABCDEFGHJKMNPQRSTVWXYZ"))
def test_it_catches_a_mistyped_character(account_id, position, char):
    """Positions 2-3 are the check digits, 4+ the id: a wrong character anywhere is caught."""
    number = account_number(account_id)
    typo = number[:position] + char + number[position + 1 :]
    if typo != number:
        with pytest.raises(AccountNumberError):
            parse_account_number(typo)


@given(st.uuids(), st.integers(min_value=4, max_value=28))
def test_it_catches_two_swapped_neighbours(account_id, position):
    number = account_number(account_id)
    swapped = number[:position] + number[position + 1] + number[position] + number[position + 2 :]
    if swapped != number:
        with pytest.raises(AccountNumberError):
            parse_account_number(swapped)


@pytest.mark.parametrize(
    "text", ["", "  ", "KB12", "DE89370400440532013000", "KB00" + "0" * 26, "KB12" + "!" * 26, "KB" + "9" * 40]
)
def test_it_refuses_what_is_not_an_account_number(text):
    with pytest.raises(AccountNumberError):
        parse_account_number(text)


# --- invariants over random interleavings ---

# Five accounts: three in EUR, one in USD, one closed, and one id never opened.
ACCOUNTS = [UUID(int=i) for i in range(1, 7)]
CURRENCY = {ACCOUNTS[0]: "EUR", ACCOUNTS[1]: "EUR", ACCOUNTS[2]: "EUR", ACCOUNTS[3]: "USD", ACCOUNTS[4]: "EUR"}

indexes = st.integers(min_value=0, max_value=len(ACCOUNTS) - 1)
small_amounts = st.integers(min_value=-2, max_value=LIMIT + 2)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("deposit"), indexes, small_amounts),
        st.tuples(st.just("withdraw"), indexes, small_amounts),
        st.tuples(st.just("transfer"), indexes, indexes, small_amounts),
        st.tuples(st.just("deliver"), st.integers(min_value=0, max_value=50)),
        st.tuples(st.just("close"), indexes),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_it_conserves_money_and_ends_every_transfer(ops):
    """The saga's step commands are a bag delivered in any order; a hand-kept ledger is the oracle.

    In flight (DESIGN.md) = debited, and neither credited nor refunded yet.
    """
    states = {a: Account.new(a) for a in ACCOUNTS}
    for a, currency in CURRENCY.items():
        states[a], _ = run(states[a], OpenAccount(a, "alice", "A", currency))
    states[ACCOUNTS[4]], _ = run(states[ACCOUNTS[4]], CloseAccount(ACCOUNTS[4]))
    ledger = {"deposited": 0, "withdrawn": 0}
    bag: list = []  # step commands produced and not yet delivered
    debited: dict[UUID, int] = {}
    landed: Counter[UUID] = Counter()  # credits and refusals per transfer: exactly one each
    credited: set[UUID] = set()
    ended: dict[UUID, str] = {}

    def in_flight() -> int:
        return sum(amount for t, amount in debited.items() if t not in credited and ended.get(t) != "refunded")

    def decide_on(command) -> None:
        account_id = command.account_id
        for event in decide(states[account_id], command, LIMIT):
            states[account_id] = evolve(states[account_id], event)
            match event:
                case MoneyDeposited(amount=amount):
                    ledger["deposited"] += amount
                case MoneyWithdrawn(amount=amount):
                    ledger["withdrawn"] += amount
                case TransferDebited(transfer_id=t, amount=amount):
                    debited[t] = amount
                case TransferCredited(transfer_id=t):
                    landed[t] += 1
                    credited.add(t)
                case TransferRefused(transfer_id=t):
                    landed[t] += 1
                case TransferCompleted(transfer_id=t):
                    ended[t] = "completed"
                case TransferRefunded(transfer_id=t):
                    ended[t] = "refunded"
            step = next_step(account_id, event)
            if step is not None:
                bag.append(step[1])
        assert all(s.balance >= 0 for s in states.values())
        assert sum(s.balance for s in states.values()) + in_flight() == ledger["deposited"] - ledger["withdrawn"]

    for op in ops:
        match op:
            case ("deposit", i, amount):
                decide_on(Deposit(ACCOUNTS[i], amount))
            case ("withdraw", i, amount):
                decide_on(Withdraw(ACCOUNTS[i], amount))
            case ("transfer", i, j, amount):
                decide_on(TransferMoney(ACCOUNTS[i], uuid.uuid4(), ACCOUNTS[j], amount))
            case ("deliver", k) if bag:
                decide_on(bag.pop(k % len(bag)))
            case ("close", i):
                decide_on(CloseAccount(ACCOUNTS[i]))
    while bag:
        decide_on(bag.pop(0))

    assert set(ended) == set(debited), "every debited transfer ends completed or refunded"
    assert all(landed[t] == 1 for t in debited), "exactly one credit or refusal per transfer"
    assert all(s.in_flight == 0 for s in states.values())
    assert {t for t, how in ended.items() if how == "completed"} == credited
    assert sum(s.balance for s in states.values()) == ledger["deposited"] - ledger["withdrawn"]
