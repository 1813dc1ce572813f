"""The bank's domain: commands, events, account state, and the rules between them.

Plain Python on purpose: no Django, no Kafka. `decide` says what happens when a
command meets the current state; `evolve` says how an event changes the state.
The state of an account is the fold of its events: ``functools.reduce(evolve, events, Account.new(id))``.
Money is always an integer number of minor units (cents).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from uuid import UUID

DEFAULT_MAX_AMOUNT = 100_000_000  # 1,000,000.00 in minor units
CURRENCIES = ("EUR", "USD", "GBP", "CHF")  # all with two decimals, as the forms assume
MAX_NAME_LENGTH = 80


# --- commands (imperative names) ---


@dataclass(frozen=True)
class OpenAccount:
    account_id: UUID
    owner: str
    name: str
    currency: str


@dataclass(frozen=True)
class Deposit:
    account_id: UUID
    amount: int


@dataclass(frozen=True)
class Withdraw:
    account_id: UUID
    amount: int


@dataclass(frozen=True)
class CloseAccount:
    account_id: UUID


@dataclass(frozen=True)
class ReleaseAccount:
    """An operator's word that the foreign records seen so far on the account's partition are not
    part of its history: the processor lifts the account's quarantine (see consumers/processor.py)."""

    account_id: UUID


Command = OpenAccount | Deposit | Withdraw | CloseAccount | ReleaseAccount


# --- events (past tense) ---


@dataclass(frozen=True)
class AccountOpened:
    owner: str
    name: str
    currency: str


@dataclass(frozen=True)
class MoneyDeposited:
    amount: int
    balance: int  # balance after the deposit: the audit history shows it without refolding


@dataclass(frozen=True)
class MoneyWithdrawn:
    amount: int
    balance: int


@dataclass(frozen=True)
class AccountClosed:
    pass


@dataclass(frozen=True)
class AccountReleased:
    """The account's quarantine was lifted by an operator; its commands are decided again."""


class Reason(enum.StrEnum):
    INSUFFICIENT_FUNDS = "insufficient_funds"
    INVALID_AMOUNT = "invalid_amount"
    AMOUNT_ABOVE_LIMIT = "amount_above_limit"
    ACCOUNT_NOT_FOUND = "account_not_found"
    ACCOUNT_CLOSED = "account_closed"
    ACCOUNT_EXISTS = "account_exists"
    BALANCE_NOT_ZERO = "balance_not_zero"
    INVALID_NAME = "invalid_name"
    UNSUPPORTED_CURRENCY = "unsupported_currency"
    # Not decided by `decide`: the processor rejects every command of an account that a foreign
    # or undecodable record on bank.events names, until an operator sends ReleaseAccount.
    ACCOUNT_QUARANTINED = "account_quarantined"


@dataclass(frozen=True)
class CommandRejected:
    """A command that broke a rule. It changes no balance but belongs in the history."""

    command: str  # the rejected command's type name
    reason: Reason
    amount: int | None = None


Event = AccountOpened | MoneyDeposited | MoneyWithdrawn | AccountClosed | AccountReleased | CommandRejected


# --- state ---


class Status(enum.StrEnum):
    NONE = "none"  # no AccountOpened yet
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True)
class Account:
    account_id: UUID
    version: int = 0  # sequence of the last event applied; the next event gets version + 1
    status: Status = Status.NONE
    owner: str = ""
    name: str = ""
    currency: str = ""
    balance: int = 0

    @classmethod
    def new(cls, account_id: UUID) -> Account:
        return cls(account_id)


class Rejection(Exception):
    """A command breaks a rule; `decide` turns it into a CommandRejected event."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason.value)
        self.reason = reason


def decide(state: Account, command: Command, max_amount: int = DEFAULT_MAX_AMOUNT) -> list[Event]:
    """The events a command produces against `state`: the outcome, or one CommandRejected."""
    try:
        return _decide(state, command, max_amount)
    except Rejection as rejection:
        return reject(command, rejection.reason)


def reject(command: Command, reason: Reason) -> list[Event]:
    """The one event that records `command` as rejected for `reason`."""
    return [CommandRejected(type(command).__name__, reason, getattr(command, "amount", None))]


def _decide(state: Account, command: Command, max_amount: int) -> list[Event]:
    match command:
        case OpenAccount(owner=owner, name=name, currency=currency):
            if state.status is not Status.NONE:
                raise Rejection(Reason.ACCOUNT_EXISTS)
            if not name.strip() or len(name) > MAX_NAME_LENGTH:
                raise Rejection(Reason.INVALID_NAME)
            if currency not in CURRENCIES:
                raise Rejection(Reason.UNSUPPORTED_CURRENCY)
            return [AccountOpened(owner, name.strip(), currency)]
        case Deposit(amount=amount):
            _require_open(state)
            _check_amount(amount, max_amount)
            return [MoneyDeposited(amount, state.balance + amount)]
        case Withdraw(amount=amount):
            _require_open(state)
            _check_amount(amount, max_amount)
            if amount > state.balance:
                raise Rejection(Reason.INSUFFICIENT_FUNDS)
            return [MoneyWithdrawn(amount, state.balance - amount)]
        case CloseAccount():
            _require_open(state)
            if state.balance != 0:
                raise Rejection(Reason.BALANCE_NOT_ZERO)
            return [AccountClosed()]
        case ReleaseAccount():
            # Any account that exists, open or closed: releasing is about the log, not the balance.
            if state.status is Status.NONE:
                raise Rejection(Reason.ACCOUNT_NOT_FOUND)
            return [AccountReleased()]
    raise TypeError(f"unknown command {command!r}")


def _require_open(state: Account) -> None:
    if state.status is Status.NONE:
        raise Rejection(Reason.ACCOUNT_NOT_FOUND)
    if state.status is Status.CLOSED:
        raise Rejection(Reason.ACCOUNT_CLOSED)


def _check_amount(amount: int, max_amount: int) -> None:
    # bool is an int subclass; True must not deposit one cent.
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise Rejection(Reason.INVALID_AMOUNT)
    if amount > max_amount:
        raise Rejection(Reason.AMOUNT_ABOVE_LIMIT)


def evolve(state: Account, event: Event) -> Account:
    """The state after `event`. Every event, rejections included, advances the version."""
    version = state.version + 1
    match event:
        case AccountOpened(owner=owner, name=name, currency=currency):
            return replace(state, version=version, status=Status.OPEN, owner=owner, name=name, currency=currency)
        case MoneyDeposited(balance=balance) | MoneyWithdrawn(balance=balance):
            return replace(state, version=version, balance=balance)
        case AccountClosed():
            return replace(state, version=version, status=Status.CLOSED)
        case AccountReleased() | CommandRejected():
            return replace(state, version=version)
    raise TypeError(f"unknown event {event!r}")
