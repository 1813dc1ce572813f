"""An account's past, read from the audit history (which keeps the balance after every entry).

History pages are keyset-paged by sequence (no row counts, whatever the account's length); the
account as of a moment and a statement's opening and closing balances are the balance after the
last entry before that moment. "Before a moment" means by the entry's `occurred_at` (when the
processor decided it); entries of one account are decided in sequence order by one writer, so
ordering by (occurred_at, sequence) and by sequence agree.

Every function here trusts that the caller checked the user owns the account (queries.owned_account).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from asgiref.sync import sync_to_async
from django.db.models import BigIntegerField, Case, Count, F, Q, QuerySet, Sum, Value, When

from projections.models import AuditEntry, Transfer

PAGE_SIZE = 20
CSV_CHUNK = 2_000  # entries per query while streaming a statement: bounded memory, whatever the period
CSV_FIELDS = (
    "sequence",
    "type",
    "amount",
    "balance_after",
    "occurred_at",
    "account_id",
    "reason",
    "command",
    "counterparty",
)

# What the history's "kind" filter offers, and the event types each takes.
KINDS: dict[str, tuple[str, ...]] = {
    "deposits": ("MoneyDeposited",),
    "withdrawals": ("MoneyWithdrawn",),
    "transfers": ("TransferDebited", "TransferCredited", "TransferCompleted", "TransferRefunded", "TransferRefused"),
    "rejected": ("CommandRejected",),
    "account": ("AccountOpened", "AccountClosed", "AccountReleased"),
}
MONEY_IN = ("MoneyDeposited", "TransferCredited", "TransferRefunded")  # the refund gives the debit back
MONEY_OUT = ("MoneyWithdrawn", "TransferDebited")


def signed_amount(entry_type: str, amount: int | None) -> int | None:
    """The entry's effect on the balance: + in, - out, None for entries that move no money."""
    if amount is None:
        return None
    if entry_type in MONEY_IN:
        return amount
    if entry_type in MONEY_OUT:
        return -amount
    return None


@dataclass(frozen=True)
class Filter:
    """What a history page shows: some kinds (none: all), entries at or after `since` and before `until`."""

    kinds: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None  # exclusive

    def apply(self, entries: QuerySet[AuditEntry]) -> QuerySet[AuditEntry]:
        if self.kinds:
            entries = entries.filter(type__in=[t for kind in self.kinds for t in KINDS[kind]])
        if self.since is not None:
            entries = entries.filter(occurred_at__gte=self.since)
        if self.until is not None:
            entries = entries.filter(occurred_at__lt=self.until)
        return entries


@dataclass(frozen=True)
class Page:
    """One page of history, newest first, with the cursors to the pages around it (None: there is none)."""

    entries: list[AuditEntry]
    newer: int | None  # show entries after this sequence
    older: int | None  # show entries before this sequence
    first: bool  # the newest page (it alone takes live rows)


def page(account_id: UUID, where: Filter, before: int | None = None, after: int | None = None) -> Page:
    """The page of entries just before sequence `before`, or just after `after`, or the newest.

    One index range scan of PAGE_SIZE + 1 rows on (account, sequence), plus a one-row probe for the
    other direction: the cost does not grow with the account's history.
    """
    entries = where.apply(_within_sequences(account_id, where))
    if after is not None:
        rows = list(entries.filter(sequence__gt=after).order_by("sequence")[: PAGE_SIZE + 1])
        more_newer = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE][::-1]
        more_older = bool(rows) and entries.filter(sequence__lt=rows[-1].sequence).order_by("-sequence").exists()
    else:
        entries_before = entries.filter(sequence__lt=before) if before is not None else entries
        rows = list(entries_before.order_by("-sequence")[: PAGE_SIZE + 1])
        more_older = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        more_newer = before is not None and bool(rows) and entries.filter(sequence__gt=rows[0].sequence).exists()
        if before is not None and not rows:  # past the oldest: offer the way back
            more_newer = entries.filter(sequence__gte=before).exists()
    return Page(
        entries=rows,
        newer=(rows[0].sequence if rows else before) if more_newer else None,
        older=rows[-1].sequence if rows and more_older else None,
        first=not more_newer,
    )


def _within_sequences(account_id: UUID, where: Filter) -> QuerySet[AuditEntry]:
    """The account's entries, bounded by the sequences of the filter's first and last moments.

    A keyset scan by sequence that also filters by time would walk from the newest entry back to the
    period (half a million rows for a day in the middle of a million); the bounds, found on the
    (account, occurred_at) index, let it start where the period ends. The time filters stay as well.
    """
    entries = AuditEntry.objects.filter(account_id=account_id)
    by_time = entries.order_by("occurred_at", "sequence").values_list("sequence", flat=True)
    if where.until is not None:
        last = by_time.filter(occurred_at__lt=where.until).reverse().first()
        entries = entries.filter(sequence__lte=last or 0)
    if where.since is not None:
        first = by_time.filter(occurred_at__gte=where.since).first()
        entries = entries.filter(sequence__gte=first) if first is not None else entries.none()
    return entries


def balance_before(account_id: UUID, moment: datetime, inclusive: bool = False) -> int:
    """The balance after the last entry before `moment` (at or before, if `inclusive`); 0 before any."""
    time = Q(occurred_at__lte=moment) if inclusive else Q(occurred_at__lt=moment)
    last = (
        AuditEntry.objects.filter(time, account_id=account_id, balance_after__isnull=False)
        .order_by("-occurred_at", "-sequence")
        .values_list("balance_after", flat=True)
        .first()
    )
    return last or 0


@dataclass(frozen=True)
class AsOf:
    """The account as it stood at `at`: what its page showed then."""

    at: datetime
    existed: bool
    balance: int
    status: str
    in_flight: int
    last_sequence: int  # of the last entry at or before `at` (0: none)


def as_of(account_id: UUID, opened_at: datetime, at: datetime, closed_now: bool = True) -> AsOf:
    """Balance, status and money in flight at `at`, from the audit history and the transfers' projection.

    `closed_now`: whether the account is closed today; one that is not was not closed then either
    (an account never reopens), and its history need not be searched for a closing.
    """
    entries = AuditEntry.objects.filter(account_id=account_id, occurred_at__lte=at)
    last = entries.order_by("-occurred_at", "-sequence").values_list("sequence", flat=True).first() or 0
    # At most one closing, near the end of the history: found scanning back from the newest entry.
    closed_at = None
    if closed_now:
        closed_at = (
            AuditEntry.objects.filter(account_id=account_id, type="AccountClosed")
            .order_by("-sequence")
            .values_list("occurred_at", flat=True)
            .first()
        )
    closed = closed_at is not None and closed_at <= at
    # Debited by then and neither completed nor refunded by then (the transfers' row has each step's time).
    in_flight = (
        Transfer.objects.filter(from_account=account_id, debited_at__lte=at)
        .exclude(completed_at__lte=at)
        .exclude(refunded_at__lte=at)
        .aggregate(total=Sum("amount"))["total"]
    )
    return AsOf(
        at=at,
        existed=opened_at <= at,
        balance=balance_before(account_id, at, inclusive=True),
        status="closed" if closed else "open",
        in_flight=in_flight or 0,
        last_sequence=last,
    )


@dataclass(frozen=True)
class Totals:
    money_in: int
    money_out: int
    entries: int


@dataclass(frozen=True)
class Statement:
    """A period [start, end): the balance before it, its entries' totals, the balance at its end."""

    start: datetime
    end: datetime
    opening: int
    closing: int
    totals: Totals


def period_entries(account_id: UUID, start: datetime, end: datetime) -> QuerySet[AuditEntry]:
    return AuditEntry.objects.filter(account_id=account_id, occurred_at__gte=start, occurred_at__lt=end)


def statement(account_id: UUID, start: datetime, end: datetime) -> Statement:
    money_in = Case(When(type__in=MONEY_IN, then=F("amount")), default=Value(0), output_field=BigIntegerField())
    money_out = Case(When(type__in=MONEY_OUT, then=F("amount")), default=Value(0), output_field=BigIntegerField())
    sums = period_entries(account_id, start, end).aggregate(
        money_in=Sum(money_in), money_out=Sum(money_out), entries=Count("event_id")
    )
    return Statement(
        start=start,
        end=end,
        opening=balance_before(account_id, start),
        closing=balance_before(account_id, end),
        totals=Totals(sums["money_in"] or 0, sums["money_out"] or 0, sums["entries"] or 0),
    )


def chunk_after(
    account_id: UUID, start: datetime, end: datetime, after: int, size: int = CSV_CHUNK
) -> list[AuditEntry]:
    """The period's next `size` entries after sequence `after`, oldest first: one keyset query per chunk,
    so a statement of any length streams in bounded memory."""
    rows = period_entries(account_id, start, end).filter(sequence__gt=after).order_by("sequence")
    return list(rows.values_list(*CSV_FIELDS, named=True)[:size])  # named tuples: no model instances to build


async def achunks(account_id: UUID, start: datetime, end: datetime) -> AsyncIterator[list[Any]]:
    """The period's entries, oldest first, a chunk per query (for a response streamed by an async view)."""
    after = 0
    while rows := await sync_to_async(chunk_after)(account_id, start, end, after):
        yield rows
        after = rows[-1].sequence
