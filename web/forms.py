"""Forms of the command views: each carries a fresh command id (the idempotency key)."""

from __future__ import annotations

import uuid
from typing import Any
from uuid import UUID

from django import forms
from django.conf import settings
from django.http import QueryDict

from bank import domain
from bank.account_number import AccountNumberError, account_number, display, parse_account_number
from bank.money import AmountError, parse_amount

LOST_ID = "This form was incomplete or altered, so nothing was sent. It is renewed now: check it and send it again."
USED_ID = "This form was sent before and its order was carried out, so nothing new was sent. It is renewed now: check it and send it again."
USED_TRANSFER_ID = (
    "This transfer was sent before (from this account or another one), so nothing new was sent. "
    "The form is renewed now: check it and send it again."
)


class CommandForm(forms.Form):
    """Every command form carries an idempotency key: a double submit is one command."""

    command_id = forms.UUIDField(
        widget=forms.HiddenInput,
        initial=uuid.uuid4,
        error_messages={"required": LOST_ID, "invalid": LOST_ID},
    )

    def full_clean(self) -> None:
        super().full_clean()
        if self.is_bound and "command_id" in self.errors:
            self.renew_command_id()  # else the form comes back with the same bad id, and again

    def refuse_used_id(self) -> None:
        """The command id was already decided: sending it again would be dropped as a duplicate."""
        self.add_error("command_id", USED_ID)
        self.renew_command_id()

    def refuse_used_transfer_id(self) -> None:
        """The transfer id names a transfer already (from this account or another one): one id, one transfer."""
        self.add_error("command_id", USED_TRANSFER_ID)
        self.renew_command_id()

    def renew_command_id(self) -> None:
        """Give the form a fresh command id, so that sending it again is not refused the same way."""
        data = QueryDict(mutable=True)
        data.update(self.data)
        data[self.add_prefix("command_id")] = str(uuid.uuid4())
        self.data = data


class MoveMoneyForm(CommandForm):
    amount = forms.CharField(
        max_length=32,
        widget=forms.TextInput(attrs={"inputmode": "decimal", "autocomplete": "off", "placeholder": "0.00"}),
        error_messages={"required": "Enter an amount."},
    )

    def __init__(self, *args: Any, currency: str = "EUR", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.currency = currency

    def clean_amount(self) -> int:
        try:
            return parse_amount(self.cleaned_data["amount"], settings.BANK_MAX_AMOUNT, self.currency)
        except AmountError as error:
            raise forms.ValidationError(str(error)) from None


class OpenAccountForm(CommandForm):
    name = forms.CharField(max_length=domain.MAX_NAME_LENGTH, error_messages={"required": "Give the account a name."})
    currency = forms.ChoiceField(choices=[(c, c) for c in domain.CURRENCIES], initial="EUR")

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError("Give the account a name.")
        return name


class TransferForm(MoveMoneyForm):
    """To one of the user's other accounts (a list) or to any account by its number; one of the two.

    A well-formed number of an account that does not exist, is closed, or keeps another
    currency is not an error here (the form cannot know): the saga refunds it, with the reason.
    """

    to_own = forms.ChoiceField(required=False)
    to_number = forms.CharField(required=False, max_length=64)

    def __init__(self, *args: Any, source: Any = None, own: list[Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, currency=getattr(source, "currency", "EUR"), **kwargs)
        self.source = source
        self.own = {str(a.id): a for a in own or [] if source is None or (a.id != source.id and a.status == "open")}
        choices = [(key, f"{a.name} ({a.currency}) · {display(account_number(a.id))}") for key, a in self.own.items()]
        to_own: Any = self.fields["to_own"]
        to_own.choices = [("", "—"), *choices]

    def clean_to_number(self) -> UUID | None:
        text: str = self.cleaned_data["to_number"]
        if not text.strip():
            return None
        try:
            return parse_account_number(text)
        except AccountNumberError as error:
            raise forms.ValidationError(str(error)) from None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        own, number = cleaned.get("to_own"), cleaned.get("to_number")
        if "to_number" in self.errors:
            return cleaned
        if own and number:
            raise forms.ValidationError("Choose one of your accounts or type an account number, not both.")
        if not own and not number:
            raise forms.ValidationError("Choose one of your accounts or type the account number to send to.")
        destination = UUID(own) if own else number
        if self.source is not None and destination == self.source.id:
            raise forms.ValidationError("That is this account: choose another one to send to.")
        mine = self.own.get(str(destination))
        if mine is not None and mine.currency != self.currency:
            raise forms.ValidationError(f"“{mine.name}” keeps {mine.currency}; a transfer moves one currency.")
        cleaned["destination"] = destination
        return cleaned
