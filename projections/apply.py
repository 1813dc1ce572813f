"""Pure functions from events to projection rows. No database here: the store writes what these return."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from uuid import UUID

from bank import domain
from bank.messages import EventEnvelope


class SequenceGap(RuntimeError):
    """An event arrived whose sequence skips one: an event is missing, and applying on would corrupt the projection."""

    def __init__(self, message: str, account_id: UUID, event_id: UUID) -> None:
        super().__init__(message)
        self.account_id = account_id
        self.event_id = event_id


@dataclass(frozen=True)
class AccountRow:
    id: UUID
    owner: str
    name: str
    currency: str
    balance: int
    status: str
    opened_at: datetime
    last_sequence: int
    updated_at: datetime
    in_flight: int = 0


@dataclass(frozen=True)
class AuditRow:
    event_id: UUID
    account_id: UUID
    sequence: int
    type: str
    amount: int | None
    balance_after: int | None
    occurred_at: datetime
    actor: str
    command_id: UUID
    reason: str
    command: str = ""  # for a rejection: the type of the command it refused
    transfer_id: UUID | None = None
    counterparty: UUID | None = None


# A transfer is (source account, transfer id): two sources may send one transfer id (it is a client's
# choice), and they are two transfers. The row's key is derived from both.
TRANSFER_KEY_NAMESPACE = UUID("0b4b8f7e-3f0e-4c55-9d7e-6a1c2f5e8d30")


def transfer_key(source: UUID, transfer_id: UUID) -> UUID:
    """The transfers projection's key of the transfer `transfer_id` sent from `source`."""
    return uuid.uuid5(TRANSFER_KEY_NAMESPACE, f"{source}:{transfer_id}")


@dataclass(frozen=True)
class TransferRow:
    id: UUID  # transfer_key(from_account, transfer_id)
    transfer_id: UUID
    from_account: UUID
    to_account: UUID
    amount: int
    currency: str
    status: str
    reason: str
    debited_at: datetime | None
    credited_at: datetime | None
    refused_at: datetime | None
    completed_at: datetime | None
    refunded_at: datetime | None


def apply_account(row: AccountRow | None, envelope: EventEnvelope) -> AccountRow | None:
    """The account row after `envelope`. Accounts exist from AccountOpened on."""
    event = envelope.event
    if row is None:
        if isinstance(event, domain.AccountOpened):
            return AccountRow(
                id=envelope.account_id,
                owner=event.owner,
                name=event.name,
                currency=event.currency,
                balance=0,
                status=domain.Status.OPEN.value,
                opened_at=envelope.occurred_at,
                last_sequence=envelope.sequence,
                updated_at=envelope.occurred_at,
            )
        return None  # e.g. a rejected command on an account that was never opened
    # One positional construction per event, not dataclasses.replace (kwargs, twice): replay folds millions.
    balance, status, in_flight = row.balance, row.status, row.in_flight
    match event:
        case (
            domain.MoneyDeposited(balance=new)
            | domain.MoneyWithdrawn(balance=new)
            | domain.TransferCredited(balance=new)
        ):
            balance = new
        case domain.AccountClosed():
            status = domain.Status.CLOSED.value
        case domain.TransferDebited(amount=amount, balance=new):
            balance, in_flight = new, in_flight + amount
        case domain.TransferCompleted(amount=amount):
            in_flight -= amount
        case domain.TransferRefunded(amount=amount, balance=new):
            balance, in_flight = new, in_flight - amount
    return AccountRow(
        row.id,
        row.owner,
        row.name,
        row.currency,
        balance,
        status,
        row.opened_at,
        envelope.sequence,
        envelope.occurred_at,
        in_flight,
    )


def audit_row(envelope: EventEnvelope) -> AuditRow:
    event = envelope.event
    amount = getattr(event, "amount", None)
    balance = getattr(event, "balance", None)
    rejected = event if isinstance(event, domain.CommandRejected) else None
    reason = getattr(event, "reason", None)
    counterparty = getattr(event, "to_account", None) or getattr(event, "from_account", None)
    return AuditRow(
        event_id=envelope.event_id,
        account_id=envelope.account_id,
        sequence=envelope.sequence,
        type=envelope.type,
        amount=amount,
        balance_after=balance,
        occurred_at=envelope.occurred_at,
        actor=envelope.actor,
        command_id=envelope.command_id,
        reason=reason.value if reason is not None else "",
        command=rejected.command if rejected else "",
        transfer_id=getattr(event, "transfer_id", None),
        counterparty=counterparty,
    )


def transfer_key_of(envelope: EventEnvelope) -> UUID | None:
    """The key of the transfer a transfer event belongs to (its source is the event's account, or its from_account)."""
    event = envelope.event
    if isinstance(event, domain.TransferCredited | domain.TransferRefused):
        return transfer_key(event.from_account, event.transfer_id)
    if isinstance(event, domain.TransferEvent):
        return transfer_key(envelope.account_id, event.transfer_id)
    return None


def apply_transfer(row: TransferRow | None, envelope: EventEnvelope) -> TransferRow | None:
    """The transfer's row after one of its events, whatever order the two partitions deliver them in."""
    event = envelope.event
    if not isinstance(event, domain.TransferEvent):
        return row
    if isinstance(event, domain.TransferCredited | domain.TransferRefused):
        source, destination = event.from_account, envelope.account_id
    else:
        source, destination = envelope.account_id, event.to_account
    if row is None:
        key = transfer_key(source, event.transfer_id)
        row = TransferRow(
            key, event.transfer_id, source, destination, event.amount, event.currency, "", "", *[None] * 5
        )
    at = envelope.occurred_at
    match event:
        case domain.TransferDebited():
            row = replace(row, debited_at=at)
        case domain.TransferCredited():
            row = replace(row, credited_at=at)
        case domain.TransferRefused(reason=reason):
            row = replace(row, refused_at=at, reason=reason.value)
        case domain.TransferCompleted():
            row = replace(row, completed_at=at)
        case domain.TransferRefunded(reason=reason):
            row = replace(row, refunded_at=at, reason=reason.value)
    return replace(row, status=transfer_status(row))


def transfer_status(row: TransferRow) -> str:
    if row.refunded_at:
        return "refunded"
    if row.completed_at:
        return "completed"
    if row.refused_at:
        return "refused"
    if row.credited_at:
        return "credited"
    return "sent"


def is_next(last_sequence: int, envelope: EventEnvelope, lenient: bool = False) -> bool:
    """True if the event follows `last_sequence`; False for a duplicate; SequenceGap for a gap.

    `lenient` accepts a gap: an operator released the account, accepting that events are missing.
    """
    if envelope.sequence <= last_sequence:
        return False
    if envelope.sequence != last_sequence + 1 and not lenient:
        raise gap(envelope, last_sequence)
    return True


def gap(envelope: EventEnvelope, last_sequence: int) -> SequenceGap:
    """The gap before `envelope`, whose sequence does not follow `last_sequence` (a parked account's reason too)."""
    return SequenceGap(
        f"account {envelope.account_id}: event {envelope.event_id} has sequence {envelope.sequence}, "
        f"expected {last_sequence + 1}",
        envelope.account_id,
        envelope.event_id,
    )


@dataclass(frozen=True)
class DailyRow:
    account_id: UUID
    day: date  # UTC
    closing_balance: int
    money_in: int
    money_out: int
    entries: int  # events that moved money
    last_sequence: int


MONEY_IN = (domain.MoneyDeposited, domain.TransferCredited, domain.TransferRefunded)
MONEY_OUT = (domain.MoneyWithdrawn, domain.TransferDebited)


def day_of(envelope: EventEnvelope) -> date:
    return envelope.occurred_at.astimezone(UTC).date()


def apply_daily(row: DailyRow | None, previous: DailyRow | None, envelope: EventEnvelope, day: date) -> DailyRow:
    """The account's row for the event's `day` after the event; `row` is that day's so far, `previous` the row of
    the account's last event (whatever its day): a day's first event carries the balance over."""
    event = envelope.event
    if row is None:
        closing, money_in, money_out, entries = previous.closing_balance if previous is not None else 0, 0, 0, 0
    else:
        closing, money_in, money_out, entries = row.closing_balance, row.money_in, row.money_out, row.entries
    balance: int | None = getattr(event, "balance", None)
    if balance is not None:
        closing = balance
    if isinstance(event, MONEY_IN):
        money_in, entries = money_in + event.amount, entries + 1
    elif isinstance(event, MONEY_OUT):
        money_out, entries = money_out + event.amount, entries + 1
    return DailyRow(envelope.account_id, day, closing, money_in, money_out, entries, envelope.sequence)
