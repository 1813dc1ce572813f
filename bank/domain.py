"""The bank's domain: commands, events, account state, and the rules between them.

Plain Python on purpose: no Django, no Kafka. `decide` says what happens when a
command meets the current state; `evolve` says how an event changes the state.
The state of an account is the fold of its events: ``functools.reduce(evolve, events, Account.new(id))``.
Money is always an integer number of minor units (cents).

A transfer is a saga of steps, each decided by the owner of one account (the two
accounts usually sit on different partitions, so no single writer sees both):

    TransferMoney(src)   → TransferDebited on src   → next: CreditTransfer(dst)
    CreditTransfer(dst)  → TransferCredited on dst  → next: CompleteTransfer(src) → TransferCompleted on src
                         → TransferRefused on dst   → next: RefundTransfer(src)   → TransferRefunded on src

`next_step` names the command an event calls for; the processor produces it in the same
Kafka transaction as the event, with the id `step_id(source, transfer_id, step)`, so every step
happens exactly once. Between the debit and the completion or refund, the amount is in
the source's `transfers` (money in flight).

The completion is a third decision on purpose: the source must hear that a transfer ended to forget it.
A refund is accepted only for a transfer in flight and removes it, so it happens once and never for a
transfer that was not debited; without a completion the source would have to remember every transfer it
ever sent (a late refund can come at any time), could never close (a refund may still come back), and would
show the money in flight for good. The payee sees the credit before the completion is decided; see
docs/how-it-works.md ("Why three decisions and not two").

Ids a client chooses never meet the ids of steps: a transfer is (source account, transfer id),
a step's id depends on both, and the processor remembers the two kinds apart (a client's
command id can never make a step look like a duplicate, nor the reverse). A step that
arrives again with an id already seen is answered by `repeated_step`, never dropped in silence.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
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


@dataclass(frozen=True)
class TransferMoney:
    """Move `amount` from this account to `to_account`; `transfer_id` names the saga (the form's command id)."""

    account_id: UUID
    transfer_id: UUID
    to_account: UUID
    amount: int


@dataclass(frozen=True)
class CreditTransfer:
    """The saga's second step, on the destination: take in what the source has debited."""

    account_id: UUID
    transfer_id: UUID
    from_account: UUID
    amount: int
    currency: str


@dataclass(frozen=True)
class CompleteTransfer:
    """Back on the source: the destination was credited, the money is no longer in flight."""

    account_id: UUID
    transfer_id: UUID


@dataclass(frozen=True)
class RefundTransfer:
    """Back on the source: the destination refused the credit, give the money back."""

    account_id: UUID
    transfer_id: UUID
    reason: Reason


Command = (
    OpenAccount
    | Deposit
    | Withdraw
    | CloseAccount
    | ReleaseAccount
    | TransferMoney
    | CreditTransfer
    | CompleteTransfer
    | RefundTransfer
)


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


@dataclass(frozen=True)
class TransferDebited:
    """On the source: the money has left the balance and is in flight."""

    transfer_id: UUID
    to_account: UUID
    amount: int
    currency: str
    balance: int


@dataclass(frozen=True)
class TransferCredited:
    """On the destination."""

    transfer_id: UUID
    from_account: UUID
    amount: int
    currency: str
    balance: int


@dataclass(frozen=True)
class TransferRefused:
    """On the destination (even one never opened): the credit broke a rule; the source refunds."""

    transfer_id: UUID
    from_account: UUID
    amount: int
    currency: str
    reason: Reason


@dataclass(frozen=True)
class TransferCompleted:
    """On the source: the destination has the money."""

    transfer_id: UUID
    to_account: UUID
    amount: int
    currency: str


@dataclass(frozen=True)
class TransferRefunded:
    """On the source: the money is back in the balance."""

    transfer_id: UUID
    to_account: UUID
    amount: int
    currency: str
    reason: Reason
    balance: int


TransferEvent = TransferDebited | TransferCredited | TransferRefused | TransferCompleted | TransferRefunded


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
    SAME_ACCOUNT = "same_account"
    CURRENCY_MISMATCH = "currency_mismatch"
    UNKNOWN_TRANSFER = "unknown_transfer"
    TRANSFER_EXISTS = "transfer_exists"
    TRANSFERS_IN_FLIGHT = "transfers_in_flight"


@dataclass(frozen=True)
class CommandRejected:
    """A command that broke a rule. It changes no balance but belongs in the history."""

    command: str  # the rejected command's type name
    reason: Reason
    amount: int | None = None


Event = (
    AccountOpened | MoneyDeposited | MoneyWithdrawn | AccountClosed | AccountReleased | CommandRejected | TransferEvent
)


# --- state ---


class Status(enum.StrEnum):
    NONE = "none"  # no AccountOpened yet
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True)
class InFlight:
    to_account: UUID
    amount: int


@dataclass(frozen=True)
class Account:
    account_id: UUID
    version: int = 0  # sequence of the last event applied; the next event gets version + 1
    status: Status = Status.NONE
    owner: str = ""
    name: str = ""
    currency: str = ""
    balance: int = 0
    # Transfers debited here and not yet completed or refunded (money in flight). Never mutated: evolve copies it.
    transfers: Mapping[UUID, InFlight] = field(default_factory=dict)

    @classmethod
    def new(cls, account_id: UUID) -> Account:
        return cls(account_id)

    @property
    def in_flight(self) -> int:
        return sum(t.amount for t in self.transfers.values())


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


def quarantined(state: Account, command: Command, max_amount: int = DEFAULT_MAX_AMOUNT) -> list[Event]:
    """What a command gets on a quarantined account: a rejection, except for the saga's steps.

    A transfer that has left its source must end: a credit is refused (so the source refunds),
    and the completion or refund of a transfer this account sent is decided as usual (rejecting
    it would leave the money in flight for good).
    """
    match command:
        case CreditTransfer(transfer_id=t, from_account=source, amount=amount, currency=currency):
            return [TransferRefused(t, source, amount, currency, Reason.ACCOUNT_QUARANTINED)]
        case CompleteTransfer() | RefundTransfer():
            return decide(state, command, max_amount)
    return reject(command, Reason.ACCOUNT_QUARANTINED)


def has_visible_character(text: str) -> bool:
    """Not only spaces and invisible characters (zero-width, bidi controls: str.isprintable says no to them)."""
    return any(c.isprintable() and not c.isspace() for c in text)


def _decide(state: Account, command: Command, max_amount: int) -> list[Event]:
    match command:
        case OpenAccount(owner=owner, name=name, currency=currency):
            if state.status is not Status.NONE:
                raise Rejection(Reason.ACCOUNT_EXISTS)
            if not has_visible_character(name) or len(name) > MAX_NAME_LENGTH:
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
            if state.transfers:  # a refund may still come back to it
                raise Rejection(Reason.TRANSFERS_IN_FLIGHT)
            return [AccountClosed()]
        case ReleaseAccount():
            # Any account that exists, open or closed: releasing is about the log, not the balance.
            if state.status is Status.NONE:
                raise Rejection(Reason.ACCOUNT_NOT_FOUND)
            return [AccountReleased()]
        case TransferMoney(transfer_id=transfer_id, to_account=to_account, amount=amount):
            _require_open(state)
            _check_amount(amount, max_amount)
            if to_account == state.account_id:
                raise Rejection(Reason.SAME_ACCOUNT)
            if transfer_id in state.transfers:
                raise Rejection(Reason.TRANSFER_EXISTS)  # a second saga may not reuse a live transfer's id
            if amount > state.balance:
                raise Rejection(Reason.INSUFFICIENT_FUNDS)
            return [TransferDebited(transfer_id, to_account, amount, state.currency, state.balance - amount)]
        case CreditTransfer(transfer_id=transfer_id, from_account=source, amount=amount, currency=currency):
            # Never a CommandRejected: the source waits for an answer, so a refusal is an event naming the transfer.
            refusal = _credit_refusal(state, amount, currency)
            if refusal is not None:
                return [TransferRefused(transfer_id, source, amount, currency, refusal)]
            return [TransferCredited(transfer_id, source, amount, currency, state.balance + amount)]
        case CompleteTransfer(transfer_id=transfer_id):
            pending = _in_flight(state, transfer_id)
            return [TransferCompleted(transfer_id, pending.to_account, pending.amount, state.currency)]
        case RefundTransfer(transfer_id=transfer_id, reason=reason):
            pending = _in_flight(state, transfer_id)
            balance = state.balance + pending.amount
            return [TransferRefunded(transfer_id, pending.to_account, pending.amount, state.currency, reason, balance)]
    raise TypeError(f"unknown command {command!r}")


def _credit_refusal(state: Account, amount: int, currency: str) -> Reason | None:
    if state.status is Status.NONE:
        return Reason.ACCOUNT_NOT_FOUND
    if state.status is Status.CLOSED:
        return Reason.ACCOUNT_CLOSED
    if currency != state.currency:
        return Reason.CURRENCY_MISMATCH
    # The source checked the limit; a credit that fails this is not from a transfer the bank made.
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        return Reason.INVALID_AMOUNT
    return None


def _in_flight(state: Account, transfer_id: UUID) -> InFlight:
    pending = state.transfers.get(transfer_id)
    if pending is None:
        raise Rejection(Reason.UNKNOWN_TRANSFER)
    return pending


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
        case AccountReleased() | CommandRejected() | TransferRefused():
            return replace(state, version=version)
        case TransferDebited(transfer_id=transfer_id, to_account=to_account, amount=amount, balance=balance):
            transfers = {**state.transfers, transfer_id: InFlight(to_account, amount)}
            return replace(state, version=version, balance=balance, transfers=transfers)
        case TransferCredited(balance=balance):
            return replace(state, version=version, balance=balance)
        case TransferCompleted(transfer_id=transfer_id):
            return replace(state, version=version, transfers=_without(state.transfers, transfer_id))
        case TransferRefunded(transfer_id=transfer_id, balance=balance):
            return replace(state, version=version, balance=balance, transfers=_without(state.transfers, transfer_id))
    raise TypeError(f"unknown event {event!r}")


def _without(transfers: Mapping[UUID, InFlight], transfer_id: UUID) -> dict[UUID, InFlight]:
    return {k: v for k, v in transfers.items() if k != transfer_id}


# --- the saga's next step ---

# Namespace of the steps' command ids: uuid5(namespace, "<source account>:<transfer id>:<step>").
# (Steps written before the source was part of the name have uuid5(namespace, "<transfer id>:<step>"):
# they are still decided, as the processor keeps step ids apart from client ids whatever their form.)
STEP_NAMESPACE = UUID("5b0f3c8e-7f5a-4d43-9a57-2f1f0c6f9e11")
SAGA_ACTOR = "bank:transfer"  # who the follow-up steps are issued by: never the payer (the payee sees it)
# The commands only the processor produces (the saga's steps); every other command comes from a client.
STEP_COMMANDS = (CreditTransfer, CompleteTransfer, RefundTransfer)
STEP_COMMAND_NAMES = frozenset(c.__name__ for c in STEP_COMMANDS)


def step_id(source: UUID, transfer_id: UUID, step: str) -> UUID:
    """The command id of a saga step: the same step of the same transfer (source account and transfer id)
    always has the same id, and two transfers with one id from two sources have different ones."""
    return uuid.uuid5(STEP_NAMESPACE, f"{source}:{transfer_id}:{step}")


def is_step(command: Command) -> bool:
    """A saga step (deduplicated among steps), or a client's command (deduplicated among clients' commands)."""
    return isinstance(command, STEP_COMMANDS)


def caused_by_step(event: Event) -> bool:
    """Whether `event` was decided from a saga step: recovery puts its command id among the step ids."""
    match event:
        case TransferCredited() | TransferRefused() | TransferCompleted() | TransferRefunded():
            return True
        case CommandRejected(command=command):
            return command in STEP_COMMAND_NAMES
    return False


def repeated_step(state: Account, command: Command, max_amount: int = DEFAULT_MAX_AMOUNT) -> list[Event]:
    """What a step gets when its id was seen on this account already.

    Each step is produced once, in the transaction of its cause, so this is a transfer id reused
    on its source after its first transfer ended (a second transfer with the same steps' ids).
    Dropping it would leave the second transfer's money in flight for good; answering it keeps
    money conserved and ends the transfer whichever it is:
    - a credit is refused (`transfer_exists`): the source refunds what it still has in flight;
    - a completion or refund is decided on the state (the transfer in flight, if any, ends);
      nothing in flight under that id means it was answered already: no event.
    """
    match command:
        case CreditTransfer(transfer_id=t, from_account=source, amount=amount, currency=currency):
            return [TransferRefused(t, source, amount, currency, Reason.TRANSFER_EXISTS)]
        case CompleteTransfer(transfer_id=t) | RefundTransfer(transfer_id=t):
            return decide(state, command, max_amount) if t in state.transfers else []
    raise TypeError(f"not a step: {command!r}")


def next_step(account_id: UUID, event: Event) -> tuple[UUID, Command] | None:
    """The command (and its id) that `event`, just decided on `account_id`, calls for; None if the saga rests."""
    match event:
        case TransferDebited(transfer_id=t, to_account=dst, amount=amount, currency=currency):
            return step_id(account_id, t, "credit"), CreditTransfer(dst, t, account_id, amount, currency)
        case TransferCredited(transfer_id=t, from_account=src):
            return step_id(src, t, "complete"), CompleteTransfer(src, t)
        case TransferRefused(transfer_id=t, from_account=src, reason=reason):
            return step_id(src, t, "refund"), RefundTransfer(src, t, reason)
    return None


# --- one command, start to end: what the processor does with it, without Kafka ---


@dataclass(frozen=True)
class Decision:
    """What one command does to one account: its events (in order), the saga steps they call for, the state after.

    `outcome` is "accepted", "rejected" (with `reason`) or "duplicate" (nothing happens)."""

    events: list[Event]
    steps: list[tuple[UUID, Command]]
    state: Account
    outcome: str
    reason: str = ""


def handle(
    state: Account, command: Command, repeated: bool, quarantine: bool, max_amount: int = DEFAULT_MAX_AMOUNT
) -> Decision:
    """Decide `command` on `state`, given whether its id was seen on this account already (`repeated`, among
    client ids for a client's command, among step ids for a step) and whether the account is quarantined.

    A client's command seen before is a duplicate. A step seen before is answered (`repeated_step`).
    ReleaseAccount is decided even on a quarantined account; on one, other commands get `quarantined`."""
    if repeated and not is_step(command):
        return Decision([], [], state, "duplicate")
    if repeated:
        events = repeated_step(state, command, max_amount)
        if not events:
            return Decision([], [], state, "duplicate")
    elif quarantine and not isinstance(command, ReleaseAccount):
        events = quarantined(state, command, max_amount)
    else:
        events = decide(state, command, max_amount)
    steps = []
    for event in events:
        state = evolve(state, event)
        step = next_step(command.account_id, event)
        if step is not None:
            steps.append(step)
    rejected = next((e for e in events if isinstance(e, CommandRejected)), None)
    if rejected is not None:
        return Decision(events, steps, state, "rejected", rejected.reason.value)
    return Decision(events, steps, state, "accepted")
