"""Pure functions from events to projection rows. No database here: the store writes what these return."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
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
    row = replace(row, last_sequence=envelope.sequence, updated_at=envelope.occurred_at)
    match event:
        case domain.MoneyDeposited(balance=balance) | domain.MoneyWithdrawn(balance=balance):
            return replace(row, balance=balance)
        case domain.AccountClosed():
            return replace(row, status=domain.Status.CLOSED.value)
    return row


def audit_row(envelope: EventEnvelope) -> AuditRow:
    event = envelope.event
    amount = getattr(event, "amount", None)
    balance = getattr(event, "balance", None)
    rejected = event if isinstance(event, domain.CommandRejected) else None
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
        reason=rejected.reason.value if rejected else "",
        command=rejected.command if rejected else "",
    )


def is_next(last_sequence: int, envelope: EventEnvelope, lenient: bool = False) -> bool:
    """True if the event follows `last_sequence`; False for a duplicate; SequenceGap for a gap.

    `lenient` accepts a gap: an operator released the account, accepting that events are missing.
    """
    if envelope.sequence <= last_sequence:
        return False
    if envelope.sequence != last_sequence + 1 and not lenient:
        raise SequenceGap(
            f"account {envelope.account_id}: event {envelope.event_id} has sequence {envelope.sequence}, "
            f"expected {last_sequence + 1}",
            envelope.account_id,
            envelope.event_id,
        )
    return True
