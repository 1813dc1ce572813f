"""What the pages and the live updates read from the projections, scoped to one owner.

The views and the websocket consumer both read through here, so a page and its live updates
show the same rows (the same history page size, the same outcome of a command).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime, time, timedelta
from typing import Protocol
from uuid import UUID
from zoneinfo import ZoneInfo

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import connection
from django.db.models import Q, QuerySet
from django.http import Http404

from projections import async_db
from projections.apply import AccountRow, AuditRow
from projections.history import MONEY_IN, MONEY_OUT, balance_before
from projections.models import Account, AuditEntry, Transfer

HISTORY_PAGE_SIZE = 20  # rows per page of an account's history, on the page and in a catch-up

User = AbstractBaseUser | AnonymousUser


class Balance(Protocol):
    @property
    def currency(self) -> str: ...
    @property
    def balance(self) -> int: ...


@dataclass(frozen=True)
class CommandOutcome:
    """How a command ended (its audit row), with the account it was sent to: from the database or a push."""

    entry: AuditEntry | AuditRow
    account: Account | AccountRow


def owner_key(user: User) -> str:
    """Accounts belong to a user id, as the AccountOpened event records it."""
    return str(user.pk)


def accounts_of(user: User) -> list[Account]:
    return list(Account.objects.filter(owner=owner_key(user)).order_by("opened_at", "id"))


def names_of(accounts: Iterable[Account | AccountRow]) -> dict[UUID, str]:
    """Account id → name of one user's own accounts: a transfer between them is shown by name."""
    return {a.id: a.name for a in accounts}


def owned_account(user: User, account_id: UUID | str) -> Account:
    """The user's own account, or 404: someone else's account looks exactly like a missing one."""
    account = Account.objects.filter(id=account_id, owner=owner_key(user)).first()
    if account is None:
        raise Http404("No such account")
    return account


async def aowned_account(user: User, account_id: UUID | str) -> Account:
    account = await Account.objects.filter(id=account_id, owner=owner_key(user)).afirst()
    if account is None:
        raise Http404("No such account")
    return account


def _owned_and_used_sql() -> tuple[str, list[str]]:
    account, audit = Account._meta, AuditEntry._meta
    names = [f.attname for f in account.concrete_fields]
    columns = ", ".join(f'a."{f.column}"' for f in account.concrete_fields)
    sql = (
        f'SELECT {columns}, EXISTS (SELECT 1 FROM "{audit.db_table}" e WHERE e."account_id" = a."id" '
        f'AND e."command_id" = %s) FROM "{account.db_table}" a WHERE a."id" = %s AND a."owner" = %s'
    )
    return sql, names


OWNED_AND_USED_SQL, ACCOUNT_FIELDS = _owned_and_used_sql()


def _all_owned_and_used_sql() -> str:
    account, audit = Account._meta, AuditEntry._meta
    columns = ", ".join(f'a."{f.column}"' for f in account.concrete_fields)
    column = {f.name: f.column for f in account.concrete_fields}
    opened, key = (f'a."{column[name]}"' for name in ("opened_at", "id"))
    return (
        f'SELECT {columns}, a."id" = %s AND EXISTS (SELECT 1 FROM "{audit.db_table}" e WHERE e."account_id" = a."id" '
        f'AND e."command_id" = %s) FROM "{account.db_table}" a WHERE a."owner" = %s ORDER BY {opened}, {key}'
    )


ALL_OWNED_AND_USED_SQL = _all_owned_and_used_sql()


async def aowned_account_and_used(user: User, account_id: UUID | str, command_id: UUID | None) -> tuple[Account, bool]:
    """The user's own account (or 404), and whether it already has an outcome of `command_id`: one query.

    Plain SQL on the event loop (projections.async_db): the command views' only database read,
    without the ORM's query building or a thread.
    """
    row = await async_db.fetch_one(OWNED_AND_USED_SQL, [command_id, account_id, owner_key(user)])
    if row is None:
        raise Http404("No such account")
    return Account.from_db("default", ACCOUNT_FIELDS, row[:-1]), bool(row[-1])


async def aowned_accounts_and_used(
    user: User, account_id: UUID | str, command_id: UUID | None
) -> tuple[Account, bool, list[Account]]:
    """The user's account `account_id` (or 404), whether it already has an outcome of `command_id`, and all the
    user's accounts (as `accounts_of`), in one query on the event loop: what the transfer view reads."""
    wanted = account_id if isinstance(account_id, UUID) else UUID(str(account_id))
    rows = await async_db.fetch_all(ALL_OWNED_AND_USED_SQL, [wanted, command_id, owner_key(user)])
    accounts = [Account.from_db("default", ACCOUNT_FIELDS, row[:-1]) for row in rows]
    found = [(account, bool(row[-1])) for account, row in zip(accounts, rows, strict=True) if account.id == wanted]
    if not found:
        raise Http404("No such account")
    return found[0][0], found[0][1], accounts


def _transfer_id_used_sql() -> str:
    account, audit, transfer = Account._meta.db_table, AuditEntry._meta.db_table, Transfer._meta.db_table
    return (
        f'SELECT EXISTS (SELECT 1 FROM "{transfer}" WHERE "transfer_id" = %s) '
        f'OR EXISTS (SELECT 1 FROM "{audit}" e JOIN "{account}" a ON a."id" = e."account_id" '
        f'WHERE e."command_id" = %s AND a."owner" = %s)'
    )


TRANSFER_ID_USED_SQL = _transfer_id_used_sql()


async def atransfer_id_used(user: User, transfer_id: UUID) -> bool:
    """Whether a transfer id names a transfer already (sent from any account), or a command of any of the user's
    accounts: one id, one transfer. The processor is the final word (a race past this check is still a second,
    separate transfer, keyed by its source); this is what lets the form say so before anything is sent."""
    row = await async_db.fetch_one(TRANSFER_ID_USED_SQL, [transfer_id, transfer_id, owner_key(user)])
    return bool(row and row[0])


def as_row(account: Account) -> AccountRow:
    """The account as the projector's pushes carry it, for code that keeps accounts between pushes."""
    return AccountRow(**{f.name: getattr(account, f.name) for f in fields(AccountRow)})


def totals(accounts: Iterable[Balance]) -> list[tuple[str, int]]:
    """Balance totals per currency, largest currency group first."""
    sums: dict[str, int] = defaultdict(int)
    for account in accounts:
        sums[account.currency] += account.balance
    return sorted(sums.items())


def in_flight_totals(accounts: Iterable[Account | AccountRow]) -> list[tuple[str, int]]:
    """Money sent by transfers from these accounts and not yet completed or refunded, per currency."""
    sums: dict[str, int] = defaultdict(int)
    for account in accounts:
        if account.in_flight:
            sums[account.currency] += account.in_flight
    return sorted(sums.items())


def history(account_id: UUID | str) -> QuerySet[AuditEntry]:
    """An account's history, newest first (the caller checked it owns the account)."""
    return AuditEntry.objects.filter(account_id=account_id).order_by("-sequence")


def history_page_one(account_id: UUID | str) -> list[AuditEntry]:
    return list(history(account_id)[:HISTORY_PAGE_SIZE])


def outcomes_of(user: User, commands: Sequence[tuple[UUID, UUID]]) -> list[CommandOutcome]:
    """The projected outcomes of (account id, command id) pairs on the user's own accounts, if any yet.

    By both ids: a command id is unique per account only (two accounts may see the same one).
    """
    if not commands:
        return []
    owned = {a.id: a for a in Account.objects.filter(id__in={a for a, _ in commands}, owner=owner_key(user))}
    wanted = [(a, c) for a, c in commands if a in owned]
    if not wanted:
        return []
    match = Q()
    for account_id, command_id in wanted:
        # A transfer's command id is its transfer id: its later steps on the source (completion, refund) count too.
        match |= Q(account_id=account_id, command_id=command_id) | Q(account_id=account_id, transfer_id=command_id)
    asked = set(wanted)
    # The last event of a command is its outcome (a command makes one event today; keep it right if more).
    latest: dict[tuple[UUID, UUID], AuditEntry] = {}
    for entry in AuditEntry.objects.filter(match).order_by("sequence"):
        key = (entry.account_id, entry.command_id)
        if key not in asked and entry.transfer_id is not None:
            key = (entry.account_id, entry.transfer_id)
        if key in asked:
            latest[key] = entry
    return [CommandOutcome(entry, owned[entry.account_id]) for entry in latest.values()]


def outcome_of(user: User, account_id: UUID, command_id: UUID) -> CommandOutcome | None:
    """The projected outcome of one command on one of the user's accounts, if it has one yet."""
    found = outcomes_of(user, [(account_id, command_id)])
    return found[0] if found else None


def account_exists(account_id: UUID) -> bool:
    return Account.objects.filter(id=account_id).exists()


@dataclass(frozen=True)
class Day:
    """One day of an account, midnight to midnight in the zone it was asked for."""

    day: date
    closing_balance: int  # the balance after the day's last entry (the previous day's, if none)
    money_in: int
    money_out: int
    entries: int


def _daily_sql() -> str:
    table = AuditEntry._meta.db_table
    money_in = ", ".join(f"'{t}'" for t in MONEY_IN)
    money_out = ", ".join(f"'{t}'" for t in MONEY_OUT)
    return (
        "SELECT (occurred_at AT TIME ZONE %s)::date AS day, "
        "(array_agg(balance_after ORDER BY occurred_at DESC, sequence DESC) "
        "FILTER (WHERE balance_after IS NOT NULL))[1], "
        f"COALESCE(SUM(amount) FILTER (WHERE type IN ({money_in})), 0), "
        f"COALESCE(SUM(amount) FILTER (WHERE type IN ({money_out})), 0), count(*) "
        f'FROM "{table}" WHERE account_id = %s AND occurred_at >= %s AND occurred_at < %s GROUP BY 1'
    )


DAILY_SQL = _daily_sql()


def daily_figures(account_id: UUID, first: date, last: date, zone: ZoneInfo) -> list[Day]:
    """Closing balance, money in and out and the number of entries of each day from `first` to `last`.

    The days are `zone`'s (the user's): what "a day" is depends on where one stands, so the caller
    says which. Computed from the audit history here; the one place to read a daily projection instead.
    """
    start = datetime.combine(first, time(0), zone)
    end = datetime.combine(last + timedelta(days=1), time(0), zone)
    with connection.cursor() as cursor:
        cursor.execute(DAILY_SQL, [zone.key, account_id, start, end])
        found = {row[0]: row[1:] for row in cursor.fetchall()}
    balance = balance_before(account_id, start)
    days = []
    for n in range((last - first).days + 1):
        day = first + timedelta(days=n)
        closing, money_in, money_out, count = found.get(day, (None, 0, 0, 0))
        balance = balance if closing is None else closing
        days.append(Day(day, balance, int(money_in), int(money_out), count))  # SUM of bigint is numeric
    return days
