"""Forms of the command views: each carries a fresh command id (the idempotency key)."""

from __future__ import annotations

import uuid
from typing import Any

from django import forms
from django.conf import settings

from bank import domain
from bank.money import AmountError, parse_amount


class CommandForm(forms.Form):
    """Every command form carries an idempotency key: a double submit is one command."""

    command_id = forms.UUIDField(widget=forms.HiddenInput, initial=uuid.uuid4)


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
