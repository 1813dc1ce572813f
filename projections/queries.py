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


# (owner, account id) -> the account as first read. Its id, owner and currency never change, so
# the command views check ownership and currency without a database round trip (and the thread
# hop of the async ORM) after a process has seen the account once. Bounded: cleared when full.
_KNOWN: dict[tuple[str, str], Account] = {}
KNOWN_ACCOUNTS_MAX = 100_000


async def aowned_account_ref(user: AbstractBaseUser | AnonymousUser, account_id: UUID | str) -> Account:
    """The user's own account for checks (id, owner, currency), or 404; its balance and status may be stale."""
    key = (owner_key(user), str(account_id))
    if (account := _KNOWN.get(key)) is None:
        account = await aowned_account(user, account_id)
        if len(_KNOWN) >= KNOWN_ACCOUNTS_MAX:
            _KNOWN.clear()
        _KNOWN[key] = account
    return account


def totals(accounts: list[Account]) -> list[tuple[str, int]]:
    """Balance totals per currency, largest currency group first."""
    sums: dict[str, int] = defaultdict(int)
    for account in accounts:
        sums[account.currency] += account.balance
    return sorted(sums.items())


def outcome_of(user: AbstractBaseUser | AnonymousUser, command_id: UUID | str) -> tuple[AuditEntry, Account] | None:
    """The projected outcome of a command on one of the user's accounts, if it has one yet."""
    entry = AuditEntry.objects.filter(command_id=command_id).first()
    if entry is None:
        return None
    account = Account.objects.filter(id=entry.account_id, owner=owner_key(user)).first()
    return (entry, account) if account is not None else None
