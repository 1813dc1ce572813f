"""Forms of the command views: each carries a fresh command id (the idempotency key)."""

from __future__ import annotations

import uuid
from typing import Any

from django import forms
from django.conf import settings
from django.http import QueryDict

from bank import domain
from bank.money import AmountError, parse_amount

LOST_ID = "This form was incomplete or altered, so nothing was sent. It is renewed now: check it and send it again."
USED_ID = "This form was sent before and its order was carried out, so nothing new was sent. It is renewed now: check it and send it again."


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
