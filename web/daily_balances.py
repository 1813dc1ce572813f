"""The admin's read-only list of the daily balances projection (models.DailyBalance), and its CSV.

Django's admin refuses a model with a composite primary key (account, day), so this is a view of the admin
site (web.admin_site) rather than a ModelAdmin. The table holds a row per account per day: pages are keyset
pages, newest day first — `(day, account) < (the last row's)` on the (day, account_id) index, or on the
primary key when one account is chosen — so a page costs the same at any depth, and nothing counts the rows.
Every query parameter is user input: a bad one is answered with a message (400), never with a 500.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any
from uuid import UUID

from asgiref.sync import sync_to_async
from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import urlencode

from bank.account_number import AccountNumberError, account_number, display, parse_account_number
from bank.money import format_money
from projections.models import Account, DailyBalance, Generation
from projections.registry import PROJECTIONS
from web.forms import EARLIEST_YEAR, LATEST_YEAR
from web.statements import decimal, neutralise

PROJECTION = PROJECTIONS["daily_balances"].name
PERMISSION = "projections.view_dailybalance"
TABLE = DailyBalance._meta.db_table
PAGE_ROWS = 100
CSV_CHUNK = 5_000
CSV_HEADER = [
    "day",
    "account number",
    "account id",
    "account name",
    "currency",
    "closing balance",
    "money in",
    "money out",
    "entries",
]
NOT_DEPLOYED = (
    "The daily balances projection is not deployed yet: `manage.py rebuild --projection daily_balances` "
    "backfills it from the whole log while the bank runs, and the live projector keeps it current from the swap on."
)


def _account(text: str) -> UUID:
    """An account id (with or without dashes) or an account number (KB…), as staff may paste either."""
    text = text.strip()
    try:
        return UUID(text)
    except ValueError:
        pass
    try:
        return parse_account_number(text)
    except AccountNumberError as error:
        raise forms.ValidationError(f"Not an account id or number: {error}") from error


def _cursor(text: str) -> tuple[date, UUID]:
    """A page link's key, "<day>.<account id>": the row the next page starts after (or before)."""
    day, _, account = text.partition(".")
    try:
        return date.fromisoformat(day), UUID(hex=account)
    except ValueError as error:
        raise forms.ValidationError("That page link is broken: start again from the newest rows.") from error


def cursor_text(day: date, account_id: UUID) -> str:
    return f"{day.isoformat()}.{account_id.hex}"


class DailyBalanceFilter(forms.Form):
    """The list's filters (account, days from and to, both included) and its keyset cursors."""

    account = forms.CharField(
        required=False,
        max_length=80,
        label="Account",
        help_text="An account number (KB…) or id.",
        widget=forms.TextInput(attrs={"size": 40, "placeholder": "KB12 3456 … or an account id"}),
    )
    since = forms.DateField(
        required=False,
        label="From",
        widget=forms.DateInput(attrs={"type": "date"}),
        error_messages={"invalid": "Enter a date, like 2026-11-01."},
    )
    until = forms.DateField(
        required=False,
        label="To",
        widget=forms.DateInput(attrs={"type": "date"}),
        error_messages={"invalid": "Enter a date, like 2026-11-30."},
    )
    after = forms.CharField(required=False, max_length=80, widget=forms.HiddenInput)  # older rows than this key
    before = forms.CharField(required=False, max_length=80, widget=forms.HiddenInput)  # newer rows than this key

    def clean_account(self) -> UUID | None:
        text = self.cleaned_data["account"]
        return _account(text) if text.strip() else None

    def clean_after(self) -> tuple[date, UUID] | None:
        return _cursor(self.cleaned_data["after"]) if self.cleaned_data["after"] else None

    def clean_before(self) -> tuple[date, UUID] | None:
        return _cursor(self.cleaned_data["before"]) if self.cleaned_data["before"] else None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        since, until = cleaned.get("since"), cleaned.get("until")
        for value in (since, until):
            if value is not None and not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
                raise forms.ValidationError(f"Enter dates between {EARLIEST_YEAR} and {LATEST_YEAR}.")
        if since and until and since > until:
            raise forms.ValidationError("The first day comes after the last: swap them.")
        if cleaned.get("after") and cleaned.get("before"):
            raise forms.ValidationError("That page link is broken: start again from the newest rows.")
        return cleaned

    def errors_text(self) -> list[str]:
        """Each error, after the name of the filter it is about."""
        texts = []
        for name, errors in self.errors.items():
            label = self.fields[name].label if name in self.fields else None
            label = label or ("Page link" if name in ("after", "before") else "")
            texts += [f"{label}: {error}" if label else str(error) for error in errors]
        return texts


@dataclass(frozen=True)
class Where:
    account: UUID | None = None
    since: date | None = None
    until: date | None = None

    @classmethod
    def of(cls, form: DailyBalanceFilter) -> Where:
        data = form.cleaned_data
        return cls(data.get("account"), data.get("since"), data.get("until"))

    def query(self) -> dict[str, str]:
        """The filters as the page's query string has them (for the page links and the CSV link)."""
        values = {
            "account": str(self.account) if self.account else "",
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
        }
        return {k: v for k, v in values.items() if v}


@dataclass(frozen=True)
class Row:
    account_id: UUID
    day: date
    closing_balance: int
    money_in: int
    money_out: int
    entries: int


def rows(
    where: Where,
    after: tuple[date, UUID] | None = None,
    before: tuple[date, UUID] | None = None,
    limit: int = PAGE_ROWS,
) -> list[Row]:
    """At most `limit` rows, newest day first (then account id, descending), after the key `after` (older) or
    before `before` (newer); one index range scan either way."""
    conditions: list[str] = []
    params: list[Any] = []
    if where.account is not None:
        conditions.append("account_id = %s")
        params.append(where.account)
    if where.since is not None:
        conditions.append("day >= %s")
        params.append(where.since)
    if where.until is not None:
        conditions.append("day <= %s")
        params.append(where.until)
    key = after or before
    if key is not None and where.account is not None:  # one account: its days, on the primary key
        conditions.append(f"day {'<' if after else '>'} %s")
        params.append(key[0])
    elif key is not None:
        conditions.append(f"(day, account_id) {'<' if after else '>'} (%s, %s)")
        params += [key[0], key[1]]
    order = "ASC" if before else "DESC"  # the newer page is read upwards from its key, then turned round
    sql = (
        f"SELECT account_id, day, closing_balance, money_in, money_out, entries FROM {TABLE} "
        f"{'WHERE ' + ' AND '.join(conditions) if conditions else ''} "
        f"ORDER BY day {order}, account_id {order} LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, limit])
        found = [Row(*row) for row in cursor.fetchall()]
    return found[::-1] if before else found


def deployed() -> bool:
    """False while the projection waits for its first rebuild (live generation 0: projections/generations.py)."""
    return not Generation.objects.filter(projection=PROJECTION, live=0).exists()


def accounts_of(found: Iterable[Row]) -> dict[UUID, Account]:
    ids = {row.account_id for row in found}
    return {a.id: a for a in Account.objects.filter(id__in=ids).only("id", "name", "currency")}


@dataclass(frozen=True)
class Line:
    """A row as the page shows it."""

    row: Row
    number: str
    name: str
    closing: str
    money_in: str
    money_out: str
    account_url: str


def lines(found: list[Row]) -> list[Line]:
    accounts = accounts_of(found)
    shown = []
    for row in found:
        account = accounts.get(row.account_id)
        currency = account.currency if account else ""
        shown.append(
            Line(
                row,
                display(account_number(row.account_id)),
                account.name if account else "(no such account in the accounts projection)",
                format_money(row.closing_balance, currency) if account else decimal(row.closing_balance),
                format_money(row.money_in, currency) if account else decimal(row.money_in),
                format_money(row.money_out, currency) if account else decimal(row.money_out),
                reverse("admin:projections_account_change", args=[row.account_id]),
            )
        )
    return shown


def _allowed(request: HttpRequest) -> None:
    if not request.user.has_perm(PERMISSION):
        raise PermissionDenied


def _link(where: Where, **cursor: str) -> str:
    return "?" + urlencode({**where.query(), **cursor})


def changelist(request: HttpRequest, site: admin.AdminSite) -> HttpResponse:
    """The list: filters, a keyset page of rows, links to the newer and older pages and to the CSV."""
    _allowed(request)
    form = DailyBalanceFilter(request.GET)  # bound even when empty: every parameter goes through the form
    context: dict[str, Any] = {
        **site.each_context(request),
        "title": "Daily balances",
        "subtitle": None,
        "opts": DailyBalance._meta,
        "form": form,
        "deployed": deployed(),
        "not_deployed": NOT_DEPLOYED,
        "lines": [],
    }
    if not form.is_valid():
        context["errors"] = form.errors_text()
        return TemplateResponse(request, "admin/projections/dailybalance.html", context, status=400)
    if not context["deployed"]:
        return TemplateResponse(request, "admin/projections/dailybalance.html", context)
    where = Where.of(form)
    after, before = form.cleaned_data["after"], form.cleaned_data["before"]
    found = rows(where, after, before, PAGE_ROWS + 1)
    more = len(found) > PAGE_ROWS  # rows beyond the page's far end: older ones, or newer ones when paging back
    if more:
        found = found[1:] if before else found[:-1]
    if found:
        first, last = found[0], found[-1]
        if after is not None or (before is not None and more):
            context["newer"] = _link(where, before=cursor_text(first.day, first.account_id))
        if before is not None or more:
            context["older"] = _link(where, after=cursor_text(last.day, last.account_id))
    if after or before:
        context["newest"] = _link(where)
    context["lines"] = lines(found)
    context["csv"] = reverse("admin:projections_dailybalance_csv") + _link(where)
    context["filtered"] = bool(where.query())
    return TemplateResponse(request, "admin/projections/dailybalance.html", context)


def csv_line(writer: Any, buffer: io.StringIO, rows_: list[list[str]]) -> str:
    writer.writerows(rows_)
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


def csv_row(row: Row, account: Account | None, number: str) -> list[str]:
    return [
        row.day.isoformat(),
        number,
        str(row.account_id),
        neutralise(account.name) if account else "",  # names are customers' input
        account.currency if account else "",
        decimal(row.closing_balance),
        decimal(row.money_in),
        decimal(row.money_out),
        str(row.entries),
    ]


def _chunk(where: Where, after: tuple[date, UUID] | None) -> tuple[list[list[str]], tuple[date, UUID] | None]:
    found = rows(where, after, None, CSV_CHUNK)
    accounts = accounts_of(found)
    last = (found[-1].day, found[-1].account_id) if len(found) == CSV_CHUNK else None
    numbers = {account_id: account_number(account_id) for account_id in {row.account_id for row in found}}
    return [csv_row(row, accounts.get(row.account_id), numbers[row.account_id]) for row in found], last


async def csv_body(where: Where) -> AsyncIterator[str]:
    """The header, then the filtered rows a keyset chunk per query: bounded memory for any number of rows, and
    an async iterator, so that the ASGI server streams it instead of collecting it first."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    yield csv_line(writer, buffer, [CSV_HEADER])
    after: tuple[date, UUID] | None = None
    while True:
        chunk, after = await sync_to_async(_chunk)(where, after)
        if chunk:
            yield csv_line(writer, buffer, chunk)
        if after is None:
            return


def csv_download(request: HttpRequest, site: admin.AdminSite) -> HttpResponse | StreamingHttpResponse:
    """The filtered rows (every page of them) as CSV, newest day first, streamed."""
    _allowed(request)
    form = DailyBalanceFilter(request.GET)
    if not form.is_valid():
        return HttpResponse("\n".join(form.errors_text()) + "\n", status=400, content_type="text/plain; charset=utf-8")
    if not deployed():
        return HttpResponse(NOT_DEPLOYED + "\n", status=409, content_type="text/plain; charset=utf-8")
    where = Where.of(form)
    name = "-".join(
        [
            "daily-balances",
            *([account_number(where.account)] if where.account else []),
            *([f"from-{where.since}"] if where.since else []),
            *([f"to-{where.until}"] if where.until else []),
        ]
    )
    response = StreamingHttpResponse(csv_body(where), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}.csv"'
    return response
