"""Money as the user types and reads it. Amounts are integer minor units everywhere else."""

from __future__ import annotations

import re

SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "CHF": "CHF "}
# ASCII digits only: `\d` and int() would also take Arabic-Indic or full-width digits. No sign, no inner spaces.
_AMOUNT = re.compile(r"([0-9]{1,15})(?:\.([0-9]+))?")


class AmountError(ValueError):
    """The text is not an amount a user may move; the message is meant for them."""


def parse_amount(text: str, limit: int, currency: str = "EUR") -> int:
    """'25', '25.5' or '25.50' → 2550 cents; anything else raises AmountError with a human message.

    Only ASCII digits and one dot, surrounding spaces ignored: "+5", "1 2" and non-ASCII digits are refused
    rather than guessed at (an amount is not a formula, and a digit the user cannot read is a risk).
    """
    text = text.strip()
    if not text:
        raise AmountError("Enter an amount.")
    if text.startswith("-"):
        raise AmountError("Enter an amount greater than zero.")
    match = _AMOUNT.fullmatch(text)
    if match is None:
        raise AmountError("Enter a number, like 25 or 25.50.")
    whole, fraction = match.group(1), match.group(2) or ""
    if len(fraction) > 2:
        raise AmountError("Use at most two decimals (cents).")
    cents = int(whole) * 100 + int(fraction.ljust(2, "0") or 0)
    if cents <= 0:
        raise AmountError("Enter an amount greater than zero.")
    if cents > limit:
        raise AmountError(f"The most one transaction can move is {format_money(limit, currency)}.")
    return cents


def format_money(cents: int | None, currency: str = "EUR") -> str:
    if cents is None:
        return ""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}{SYMBOLS.get(currency, currency + ' ')}{whole:,}.{part:02d}"
