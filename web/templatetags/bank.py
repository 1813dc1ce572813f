"""Template filters for money, reasons, event and command labels, and actors."""

from __future__ import annotations

import functools
from typing import Any
from uuid import UUID

from django import template
from django.urls import get_script_prefix, reverse
from django.utils.html import format_html

from bank import account_number as numbers
from bank.messages import COMMANDS, EVENTS
from bank.money import format_money

register = template.Library()

REASONS = {
    "insufficient_funds": "insufficient funds",
    "invalid_amount": "invalid amount",
    "amount_above_limit": "amount above the limit",
    "account_not_found": "no such account",
    "account_closed": "account is closed",
    "account_exists": "account already exists",
    "balance_not_zero": "balance is not zero",
    "invalid_name": "invalid name",
    "unsupported_currency": "unsupported currency",
    "same_account": "same account",
    "currency_mismatch": "the account keeps another currency",
    "unknown_transfer": "no such transfer in flight",
    "transfer_exists": "transfer already sent",
    "transfers_in_flight": "transfers still in flight",
    "account_quarantined": "account quarantined: an operator must release it",
}

# The source's side of a transfer: its pending row on the page is named by the transfer id.
SOURCE_SIDE = {"TransferDebited", "TransferCompleted", "TransferRefunded"}


@register.filter
def money(cents: int | None, currency: str = "EUR") -> str:
    return format_money(cents, currency)


@register.filter
def reason_text(reason: str) -> str:
    return REASONS.get(reason, reason.replace("_", " "))


@register.filter
def event_label(event_type: str) -> str:
    spec = EVENTS.get(event_type)  # the label is part of the event's spec
    return spec.label if spec else event_type


@register.filter
def command_label(command_type: str) -> str:
    """'CloseAccount' → 'Close account': what the user asked for, as the pending row named it."""
    spec = COMMANDS.get(command_type)  # the label is part of the command's spec
    return spec.label if spec else command_type


@register.filter
def who(actor: str) -> str:
    """'user:alice' → 'alice', 'admin:bob' → 'bob (admin)'."""
    kind, _, name = actor.partition(":")
    return f"{name} (admin)" if kind == "admin" else name or actor


@register.filter
def account_number(account_id: UUID | str | None) -> str:
    """The account number to read, in groups of four; only ever the number, never whose it is."""
    if not account_id:
        return ""
    return numbers.display(numbers.account_number(UUID(str(account_id))))


@register.filter
def account_number_compact(account_id: UUID | str) -> str:
    return numbers.account_number(UUID(str(account_id)))


@register.filter
def command_key(entry: Any) -> str:
    """What a history entry's outcome row replaces: the pending row of the command, or of the transfer."""
    if entry.type in SOURCE_SIDE and entry.transfer_id:
        return str(entry.transfer_id)
    return str(entry.command_id)


@register.filter
def direction(entry: Any) -> str:
    return "to" if entry.type in SOURCE_SIDE else "from"


_NIL = UUID(int=0)


@functools.cache
def _status_url_prefix(script_prefix: str) -> str:
    url = reverse("command-status", args=[_NIL, _NIL])
    return url.removesuffix(f"{_NIL}/{_NIL}")


@register.simple_tag
def status_url(account_id: UUID | str, command_id: UUID | str) -> str:
    """`{% url 'command-status' account command %}` without resolving the URL for every pending row."""
    return f"{_status_url_prefix(get_script_prefix())}{account_id}/{command_id}"


def counterparty_text(entry: Any, account: Any, names: Any) -> str:
    """The other side of a transfer: both accounts by name when both are the user's, else the number only.

    `names` maps the user's own account ids to their names (a dict, or pairs: the websocket's
    fragments are looked up by value). Another customer's account is only ever shown by its number.
    """
    own = dict(names or ())
    other = own.get(entry.counterparty)
    if other is None:
        return f"{direction(entry)} {account_number(entry.counterparty)}"
    this = own.get(entry.account_id, account.name)
    source, destination = (this, other) if entry.type in SOURCE_SIDE else (other, this)
    return f"from “{source}” to “{destination}”"


@register.simple_tag
def counterparty(entry: Any, account: Any, names: Any) -> str:
    """`counterparty_text` for the history rows (the number in a <code>, as before)."""
    own = dict(names or ())
    if entry.counterparty in own:
        return format_html('<span class="own-transfer">{}</span>', counterparty_text(entry, account, own))
    return format_html('{} <code class="number">{}</code>', direction(entry), account_number(entry.counterparty))
