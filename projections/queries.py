"""What the pages and the live updates read from the projections, scoped to one owner."""

from __future__ import annotations

from collections import defaultdict
from uuid import UUID

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.http import Http404

from projections.models import Account, AuditEntry


def owner_key(user: AbstractBaseUser | AnonymousUser) -> str:
    """Accounts belong to a user id, as the AccountOpened event records it."""
    return str(user.pk)


def accounts_of(user: AbstractBaseUser | AnonymousUser) -> list[Account]:
    return list(Account.objects.filter(owner=owner_key(user)).order_by("opened_at", "id"))


def owned_account(user: AbstractBaseUser | AnonymousUser, account_id: UUID | str) -> Account:
    """The user's own account, or 404: someone else's account looks exactly like a missing one."""
    account = Account.objects.filter(id=account_id, owner=owner_key(user)).first()
    if account is None:
        raise Http404("No such account")
    return account


async def aowned_account(user: AbstractBaseUser | AnonymousUser, account_id: UUID | str) -> Account:
    account = await Account.objects.filter(id=account_id, owner=owner_key(user)).afirst()
    if account is None:
        raise Http404("No such account")
    return account


def totals(accounts: list[Account]) -> list[tuple[str, int]]:
    """Balance totals per currency, largest currency group first."""
    sums: dict[str, int] = defaultdict(int)
    for account in accounts:
        sums[account.currency] += account.balance
    return sorted(sums.items())


def in_flight_totals(accounts: list[Account]) -> list[tuple[str, int]]:
    """Money sent by transfers from these accounts and not yet completed or refunded, per currency."""
    sums: dict[str, int] = defaultdict(int)
    for account in accounts:
        if account.in_flight:
            sums[account.currency] += account.in_flight
    return sorted(sums.items())


def outcome_of(user: AbstractBaseUser | AnonymousUser, command_id: UUID | str) -> tuple[AuditEntry, Account] | None:
    """The projected outcome of a command on one of the user's accounts, if it has one yet."""
    entry = AuditEntry.objects.filter(command_id=command_id).first()
    if entry is None:
        return None
    account = Account.objects.filter(id=entry.account_id, owner=owner_key(user)).first()
    if account is None:
        return None
    if entry.transfer_id is not None:
        # A transfer's row shows where the saga stands: its latest step on this account.
        entry = AuditEntry.objects.filter(account_id=entry.account_id, transfer_id=entry.transfer_id).order_by(
            "-sequence"
        )[0]
    return entry, account
