"""A statement as CSV rows, written as they are read: bounded memory for a period of any length.

Times are ISO 8601 with the zone's offset, amounts decimals (no thousands separator) with the
currency in a column of its own. Text cells that a spreadsheet would run as a formula are
neutralised (OWASP's advice: a leading apostrophe): account names are user input.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from projections.history import Statement, signed_amount
from projections.models import Account
from web.templatetags.bank import account_number, counterparty_text, event_label, reason_text

HEADER = ["time", "entry", "description", "amount", "currency", "balance", "sequence"]
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(text: str) -> str:
    """A cell a spreadsheet would take for a formula, made plain text."""
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def decimal(cents: int | None) -> str:
    if cents is None:
        return ""
    whole, part = divmod(abs(cents), 100)
    return f"{'-' if cents < 0 else ''}{whole}.{part:02d}"


def iso(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).isoformat(timespec="seconds")


def entry_row(entry: Any, account: Account, zone: ZoneInfo, names: dict[UUID, str]) -> list[str]:
    what = event_label(entry.type)
    description = ""
    if entry.counterparty:
        description = counterparty_text(entry, account, names)
    if entry.type == "CommandRejected":
        what = f"Rejected: {reason_text(entry.reason)}"
        description = f"{entry.command} {decimal(entry.amount)}".strip()
    elif entry.reason:
        description = f"{description}: {reason_text(entry.reason)}".lstrip(": ")
    return [
        iso(entry.occurred_at, zone),
        neutralise(what),
        neutralise(description),
        decimal(signed_amount(entry.type, entry.amount)),
        account.currency,
        decimal(entry.balance_after),
        str(entry.sequence),
    ]


def _line(writer: Any, buffer: io.StringIO, rows: list[list[str]]) -> str:
    writer.writerows(rows)
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


async def csv_rows(
    account: Account,
    statement: Statement,
    zone: ZoneInfo,
    names: dict[UUID, str],
    chunks: AsyncIterator[list[Any]],
) -> AsyncIterator[str]:
    """The header, the opening balance, one row per entry (a chunk at a time), the closing balance."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    title = neutralise(f"{account.name} · {account_number(account.id)}")
    yield _line(
        writer,
        buffer,
        [
            HEADER,
            [
                iso(statement.start, zone),
                "Opening balance",
                title,
                "",
                account.currency,
                decimal(statement.opening),
                "",
            ],
        ],
    )
    async for chunk in chunks:
        yield _line(writer, buffer, [entry_row(entry, account, zone, names) for entry in chunk])
    closing = [iso(statement.end, zone), "Closing balance", title, "", account.currency, decimal(statement.closing), ""]
    yield _line(writer, buffer, [closing])
