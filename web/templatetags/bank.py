"""Template filters for money, reasons, event and command labels, and actors."""

from __future__ import annotations

from django import template

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
    "account_quarantined": "account quarantined: an operator must release it",
}


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
