"""The bank's rules, checked on the pure domain: no database, no broker."""

from __future__ import annotations

import functools
import uuid
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bank.domain import (
    CURRENCIES,
    DEFAULT_MAX_AMOUNT,
    MAX_NAME_LENGTH,
    Account,
    AccountClosed,
    AccountOpened,
    AccountReleased,
    CloseAccount,
    CommandRejected,
    Deposit,
    MoneyDeposited,
    MoneyWithdrawn,
    OpenAccount,
    Reason,
    ReleaseAccount,
    Status,
    Withdraw,
    decide,
    evolve,
)

ACCOUNT_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
LIMIT = 1_000  # a small limit passed to decide, so the properties reach it often


def fold(events, account_id=ACCOUNT_ID):
    return functools.reduce(evolve, events, Account.new(account_id))


def run(commands, state=None, max_amount=LIMIT):
    """Decide and evolve each command in turn; the final state and every event emitted."""
    state = state or Account.new(ACCOUNT_ID)
    events = []
    for command in commands:
        for event in decide(state, command, max_amount):
            state = evolve(state, event)
            events.append(event)
    return state, events


def opened(balance: int = 0) -> Account:
    state, _ = run([OpenAccount(ACCOUNT_ID, "alice", "Main", "EUR")], max_amount=max(balance, 1))
    if balance:
        state, _ = run([Deposit(ACCOUNT_ID, balance)], state, max_amount=balance)
    return state


def closed() -> Account:
    state, _ = run([CloseAccount(ACCOUNT_ID)], opened())
    return state


def rejected(command: str, reason: Reason, amount: int | None = None) -> list[CommandRejected]:
    return [CommandRejected(command, reason, amount)]


# --- opening ---


def test_it_opens_an_account():
    events = decide(Account.new(ACCOUNT_ID), OpenAccount(ACCOUNT_ID, "alice", "Main", "USD"))
    assert events == [AccountOpened("alice", "Main", "USD")]

    state = fold(events)
    assert state.status is Status.OPEN
    assert (state.owner, state.name, state.currency, state.balance) == ("alice", "Main", "USD", 0)


def test_it_strips_the_name_when_opening():
    events = decide(Account.new(ACCOUNT_ID), OpenAccount(ACCOUNT_ID, "alice", "  Savings \t", "EUR"))
    assert events == [AccountOpened("alice", "Savings", "EUR")]


@pytest.mark.parametrize("currency", CURRENCIES)
def test_it_accepts_every_supported_currency(currency):
    events = decide(Account.new(ACCOUNT_ID), OpenAccount(ACCOUNT_ID, "alice", "Main", currency))
    assert events == [AccountOpened("alice", "Main", currency)]


def test_it_rejects_opening_twice():
    command = OpenAccount(ACCOUNT_ID, "alice", "Other", "EUR")
    assert decide(opened(), command) == rejected("OpenAccount", Reason.ACCOUNT_EXISTS)


def test_it_rejects_reopening_a_closed_account():
    command = OpenAccount(ACCOUNT_ID, "alice", "Again", "EUR")
    assert decide(closed(), command) == rejected("OpenAccount", Reason.ACCOUNT_EXISTS)


@pytest.mark.parametrize("name", ["", " ", "\t\n  "])
def test_it_rejects_a_blank_name(name):
    command = OpenAccount(ACCOUNT_ID, "alice", name, "EUR")
    assert decide(Account.new(ACCOUNT_ID), command) == rejected("OpenAccount", Reason.INVALID_NAME)


def test_it_rejects_a_name_longer_than_the_limit():
    command = OpenAccount(ACCOUNT_ID, "alice", "x" * (MAX_NAME_LENGTH + 1), "EUR")
    assert decide(Account.new(ACCOUNT_ID), command) == rejected("OpenAccount", Reason.INVALID_NAME)


def test_it_accepts_a_name_exactly_at_the_limit():
    name = "x" * MAX_NAME_LENGTH
    events = decide(Account.new(ACCOUNT_ID), OpenAccount(ACCOUNT_ID, "alice", name, "EUR"))
    assert events == [AccountOpened("alice", name, "EUR")]


@pytest.mark.parametrize("currency", ["JPY", "eur", "", "EURO"])
def test_it_rejects_an_unsupported_currency(currency):
    command = OpenAccount(ACCOUNT_ID, "alice", "Main", currency)
    assert decide(Account.new(ACCOUNT_ID), command) == rejected("OpenAccount", Reason.UNSUPPORTED_CURRENCY)


# --- deposits ---


def test_it_deposits_money_and_reports_the_new_balance():
    state = opened(balance=300)
    events = decide(state, Deposit(ACCOUNT_ID, 200))
    assert events == [MoneyDeposited(200, 500)]
    assert evolve(state, events[0]).balance == 500


@pytest.mark.parametrize("amount", [0, -1, -500])
def test_it_rejects_a_deposit_that_is_not_positive(amount):
    assert decide(opened(), Deposit(ACCOUNT_ID, amount)) == rejected("Deposit", Reason.INVALID_AMOUNT, amount)


@pytest.mark.parametrize("amount", [True, False])
def test_it_rejects_a_bool_deposit(amount):
    assert decide(opened(), Deposit(ACCOUNT_ID, amount)) == rejected("Deposit", Reason.INVALID_AMOUNT, amount)


@pytest.mark.parametrize("amount", [10.0, 10.5, "10"])
def test_it_rejects_a_deposit_that_is_not_an_int(amount):
    assert decide(opened(), Deposit(ACCOUNT_ID, amount)) == rejected("Deposit", Reason.INVALID_AMOUNT, amount)


def test_it_rejects_a_deposit_above_the_limit_passed_to_decide():
    events = decide(opened(), Deposit(ACCOUNT_ID, 501), max_amount=500)
    assert events == rejected("Deposit", Reason.AMOUNT_ABOVE_LIMIT, 501)


def test_it_accepts_a_deposit_exactly_at_the_limit():
    assert decide(opened(), Deposit(ACCOUNT_ID, 500), max_amount=500) == [MoneyDeposited(500, 500)]


def test_it_uses_the_default_limit_when_none_is_given():
    state = opened()
    assert decide(state, Deposit(ACCOUNT_ID, DEFAULT_MAX_AMOUNT)) == [
        MoneyDeposited(DEFAULT_MAX_AMOUNT, DEFAULT_MAX_AMOUNT)
    ]
    assert decide(state, Deposit(ACCOUNT_ID, DEFAULT_MAX_AMOUNT + 1)) == rejected(
        "Deposit", Reason.AMOUNT_ABOVE_LIMIT, DEFAULT_MAX_AMOUNT + 1
    )


def test_it_rejects_a_deposit_on_an_unknown_account():
    events = decide(Account.new(ACCOUNT_ID), Deposit(ACCOUNT_ID, 100))
    assert events == rejected("Deposit", Reason.ACCOUNT_NOT_FOUND, 100)


def test_it_rejects_a_deposit_on_a_closed_account():
    assert decide(closed(), Deposit(ACCOUNT_ID, 100)) == rejected("Deposit", Reason.ACCOUNT_CLOSED, 100)


def test_it_reports_a_missing_account_before_a_bad_amount():
    events = decide(Account.new(ACCOUNT_ID), Deposit(ACCOUNT_ID, 0))
    assert events == rejected("Deposit", Reason.ACCOUNT_NOT_FOUND, 0)


# --- withdrawals ---


def test_it_withdraws_money_and_reports_the_new_balance():
    assert decide(opened(balance=300), Withdraw(ACCOUNT_ID, 120)) == [MoneyWithdrawn(120, 180)]


def test_it_allows_withdrawing_the_whole_balance():
    state = opened(balance=300)
    events = decide(state, Withdraw(ACCOUNT_ID, 300))
    assert events == [MoneyWithdrawn(300, 0)]
    assert evolve(state, events[0]).balance == 0


def test_it_rejects_withdrawal_beyond_balance():
    events = decide(opened(balance=300), Withdraw(ACCOUNT_ID, 301))
    assert events == rejected("Withdraw", Reason.INSUFFICIENT_FUNDS, 301)


def test_it_rejects_any_withdrawal_from_an_empty_account():
    assert decide(opened(), Withdraw(ACCOUNT_ID, 1)) == rejected("Withdraw", Reason.INSUFFICIENT_FUNDS, 1)


@pytest.mark.parametrize("amount", [0, -1, True, False, 10.0])
def test_it_rejects_a_withdrawal_that_is_not_a_positive_int(amount):
    events = decide(opened(balance=300), Withdraw(ACCOUNT_ID, amount))
    assert events == rejected("Withdraw", Reason.INVALID_AMOUNT, amount)


def test_it_rejects_a_withdrawal_above_the_limit_even_with_enough_money():
    events = decide(opened(balance=2_000), Withdraw(ACCOUNT_ID, 1_001), max_amount=1_000)
    assert events == rejected("Withdraw", Reason.AMOUNT_ABOVE_LIMIT, 1_001)


def test_it_rejects_a_withdrawal_on_an_unknown_account():
    events = decide(Account.new(ACCOUNT_ID), Withdraw(ACCOUNT_ID, 1))
    assert events == rejected("Withdraw", Reason.ACCOUNT_NOT_FOUND, 1)


def test_it_rejects_a_withdrawal_on_a_closed_account():
    assert decide(closed(), Withdraw(ACCOUNT_ID, 1)) == rejected("Withdraw", Reason.ACCOUNT_CLOSED, 1)


# --- closing ---


def test_it_closes_an_empty_account():
    state = opened()
    events = decide(state, CloseAccount(ACCOUNT_ID))
    assert events == [AccountClosed()]
    assert evolve(state, events[0]).status is Status.CLOSED


def test_it_refuses_to_close_an_account_with_money_in_it():
    assert decide(opened(balance=1), CloseAccount(ACCOUNT_ID)) == rejected("CloseAccount", Reason.BALANCE_NOT_ZERO)


def test_it_closes_once_the_balance_is_back_to_zero():
    state, _ = run([Withdraw(ACCOUNT_ID, 50)], opened(balance=50))
    assert decide(state, CloseAccount(ACCOUNT_ID)) == [AccountClosed()]


def test_it_rejects_closing_an_unknown_account():
    events = decide(Account.new(ACCOUNT_ID), CloseAccount(ACCOUNT_ID))
    assert events == rejected("CloseAccount", Reason.ACCOUNT_NOT_FOUND)


def test_it_rejects_closing_twice():
    assert decide(closed(), CloseAccount(ACCOUNT_ID)) == rejected("CloseAccount", Reason.ACCOUNT_CLOSED)


# --- releasing (lifting a quarantine) ---


@pytest.mark.parametrize("state", [opened(balance=70), closed()], ids=["open", "closed"])
def test_it_releases_any_existing_account(state):
    assert decide(state, ReleaseAccount(ACCOUNT_ID)) == [AccountReleased()]
    assert evolve(state, AccountReleased()) == replace(state, version=state.version + 1)


def test_it_rejects_releasing_an_unknown_account():
    events = decide(Account.new(ACCOUNT_ID), ReleaseAccount(ACCOUNT_ID))
    assert events == rejected("ReleaseAccount", Reason.ACCOUNT_NOT_FOUND)


# --- versions and evolve ---


@pytest.mark.parametrize(
    "event",
    [
        AccountOpened("alice", "Main", "EUR"),
        MoneyDeposited(10, 10),
        MoneyWithdrawn(10, 0),
        AccountClosed(),
        AccountReleased(),
        CommandRejected("Deposit", Reason.INVALID_AMOUNT, 0),
    ],
    ids=lambda event: type(event).__name__,
)
def test_it_advances_the_version_by_one_for_every_event(event):
    state = replace(Account.new(ACCOUNT_ID), version=41)
    assert evolve(state, event).version == 42


def test_it_changes_nothing_but_the_version_on_a_rejection():
    state = opened(balance=300)
    [event] = decide(state, Withdraw(ACCOUNT_ID, 1_000_000))
    assert isinstance(event, CommandRejected)
    assert evolve(state, event) == replace(state, version=state.version + 1)


def test_it_does_not_change_the_state_while_deciding():
    state = opened(balance=300)
    before = replace(state)
    decide(state, Withdraw(ACCOUNT_ID, 100))
    assert state == before


def test_it_rebuilds_the_state_by_folding_events():
    events = [AccountOpened("alice", "Main", "GBP"), MoneyDeposited(500, 500), MoneyWithdrawn(200, 300)]
    state = fold(events)
    assert state == Account(ACCOUNT_ID, 3, Status.OPEN, "alice", "Main", "GBP", 300)


def test_it_refuses_an_unknown_command():
    with pytest.raises(TypeError):
        decide(Account.new(ACCOUNT_ID), object())  # type: ignore[arg-type]


def test_it_refuses_an_unknown_event():
    with pytest.raises(TypeError):
        evolve(Account.new(ACCOUNT_ID), object())  # type: ignore[arg-type]


# --- properties: any sequence of commands ---

amounts = st.one_of(
    st.integers(min_value=-5, max_value=LIMIT + 5),
    st.sampled_from([0, -1, 1, LIMIT, LIMIT + 1, 10 * LIMIT]),
    st.booleans(),
)
open_commands = st.builds(
    OpenAccount,
    account_id=st.just(ACCOUNT_ID),
    owner=st.just("alice"),
    name=st.sampled_from(["Main", " Savings ", "", "   ", "x" * MAX_NAME_LENGTH, "x" * (MAX_NAME_LENGTH + 1)]),
    currency=st.sampled_from([*CURRENCIES, "JPY", "eur"]),
)
commands = st.one_of(
    open_commands,
    st.builds(Deposit, account_id=st.just(ACCOUNT_ID), amount=amounts),
    st.builds(Withdraw, account_id=st.just(ACCOUNT_ID), amount=amounts),
    st.just(CloseAccount(ACCOUNT_ID)),
)
# Most histories start with an opening, so deposits and withdrawals are usually accepted.
histories = st.builds(
    lambda opening, rest: [*opening, *rest],
    st.one_of(st.just([]), st.lists(open_commands, min_size=1, max_size=1)),
    st.lists(commands, max_size=30),
)

property_settings = settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@property_settings
@given(histories)
def test_it_never_lets_the_balance_go_negative(history):
    state = Account.new(ACCOUNT_ID)
    for command in history:
        for event in decide(state, command, LIMIT):
            state = evolve(state, event)
            assert state.balance >= 0


@property_settings
@given(histories)
def test_it_keeps_the_balance_equal_to_accepted_deposits_minus_withdrawals(history):
    state = Account.new(ACCOUNT_ID)
    total = 0
    for command in history:
        for event in decide(state, command, LIMIT):
            if isinstance(event, MoneyDeposited):
                assert event.amount == command.amount and 0 < event.amount <= LIMIT
                assert event.balance == state.balance + event.amount
                total += event.amount
            elif isinstance(event, MoneyWithdrawn):
                assert event.amount == command.amount and 0 < event.amount <= LIMIT
                assert event.balance == state.balance - event.amount
                total -= event.amount
            state = evolve(state, event)
    assert state.balance == total


@property_settings
@given(histories)
def test_it_rebuilds_the_same_state_from_the_emitted_events(history):
    state, events = run(history)
    assert fold(events) == state


@property_settings
@given(histories)
def test_it_counts_one_version_per_event(history):
    state = Account.new(ACCOUNT_ID)
    count = 0
    for command in history:
        events = decide(state, command, LIMIT)
        assert len(events) == 1  # every command leaves exactly one trace, rejections included
        for event in events:
            state = evolve(state, event)
            count += 1
        assert state.version == count
    assert state.version == len(history)
