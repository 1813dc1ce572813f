"""Account numbers people can read out and type: the account id itself, written like an IBAN.

``KB`` + two check digits + the 128 bits of the account id in Crockford's base 32 (26
characters, no I, L, O or U to misread), shown in groups of four:
``KB47 0ZB6 3YQF 5T8X 9A2C 4R1M 7VDE HK``. The number is derived from the id and turns back
into it, so a transfer to any well-formed number names an account id, and whether that
account exists is for the saga to find out (it refunds). The check digits are ISO 7064
mod 97-10 of the id's value, as in IBANs: since 97 is a prime above 32, every single
mistyped character and every swap of two neighbours is caught before anything is sent.
"""

from __future__ import annotations

import re
from uuid import UUID

PREFIX = "KB"
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_VALUE = {c: i for i, c in enumerate(ALPHABET)} | {"I": 1, "L": 1, "O": 0}  # Crockford: read 1 and 0 for look-alikes
BODY_LENGTH = 26  # ceil(128 / 5)
LENGTH = len(PREFIX) + 2 + BODY_LENGTH
_SEPARATORS = re.compile(r"[\s\-.]+")


class AccountNumberError(ValueError):
    """Not an account number; the message is meant for the person who typed it."""


def _check_digits(value: int) -> str:
    # Over the base-32 value itself (not IBAN's letters-as-two-digits, which lets some slips through).
    return f"{98 - value * 100 % 97:02d}"


def account_number(account_id: UUID) -> str:
    """The compact form (no spaces), e.g. for copying."""
    value, chars = account_id.int, []
    for _ in range(BODY_LENGTH):
        value, digit = divmod(value, 32)
        chars.append(ALPHABET[digit])
    body = "".join(reversed(chars))
    return f"{PREFIX}{_check_digits(account_id.int)}{body}"


def display(number: str) -> str:
    """Groups of four, for reading."""
    return " ".join(number[i : i + 4] for i in range(0, len(number), 4))


def parse_account_number(text: str) -> UUID:
    """The account id of a typed number (spaces, dashes and case do not matter), or AccountNumberError."""
    compact = _SEPARATORS.sub("", text).upper()
    if not compact:
        raise AccountNumberError("Enter an account number.")
    if not compact.startswith(PREFIX) or len(compact) != LENGTH:
        raise AccountNumberError(
            f"An account number starts with {PREFIX} and has {LENGTH} characters, as shown on the account page."
        )
    check, body = compact[2:4], compact[4:]
    if not check.isdigit() or any(c not in _VALUE for c in body):
        raise AccountNumberError("That is not an account number: it has characters account numbers never have.")
    value = 0
    for c in body:
        value = value * 32 + _VALUE[c]
    if value >> 128 or _check_digits(value) != check:
        raise AccountNumberError("That account number has a typo (its check digits do not match).")
    return UUID(int=value)
