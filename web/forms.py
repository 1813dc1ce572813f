"""Forms of the command views: each carries a fresh command id (the idempotency key)."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.http import QueryDict
from django.utils import timezone

from bank import domain
from bank.account_number import AccountNumberError, account_number, display, parse_account_number
from bank.money import AmountError, parse_amount
from projections import history
from web import ratelimit

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
        if not domain.has_visible_character(name):
            raise forms.ValidationError("Give the account a name with at least one visible letter, digit or sign.")
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


# Failed logins: per user name and per client address, in a window of LOGIN_WINDOW seconds.
LOGIN_FAILURES_PER_USER = 5
LOGIN_FAILURES_PER_ADDRESS = 20
LOGIN_WINDOW = 900
TOO_MANY_LOGINS = "Too many failed log-ins. Wait a quarter of an hour and try again."


class ThrottledLoginForm(AuthenticationForm):
    """Django's log-in form, refused for a while after too many failures for the name or from the address
    (the right password too: else guessing would just go on)."""

    def clean(self) -> dict[str, Any]:
        name = str(self.data.get("username", ""))[:150].casefold()
        address = str(self.request.META.get("REMOTE_ADDR", "")) if self.request else ""
        keys = [
            (f"login-user:{name}", LOGIN_FAILURES_PER_USER),
            (f"login-address:{address}", LOGIN_FAILURES_PER_ADDRESS),
        ]
        if any(ratelimit.exceeded(key, limit) for key, limit in keys):
            raise forms.ValidationError(TOO_MANY_LOGINS, code="throttled")
        try:
            return super().clean()
        except forms.ValidationError:
            for key, limit in keys:
                ratelimit.hit(key, limit, LOGIN_WINDOW)
            raise


# --- the account's past: as-of, history filters, statements (GET forms: they send nothing) ---

EARLIEST_YEAR, LATEST_YEAR = 2000, 2100  # the bank's dates; anything else is a typo (and year 1 overflows in UTC)
MAX_STATEMENT_DAYS = 366


def _in_years(value: date) -> None:
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise forms.ValidationError(f"Enter a date between {EARLIEST_YEAR} and {LATEST_YEAR}.")


class AsOfForm(forms.Form):
    """A moment in the user's zone (the browser's datetime-local sends "2026-11-01T09:00")."""

    at = forms.DateTimeField(
        input_formats=[
            "%Y-%m-%dT%H:%M",
            "%Y-%m-%dT%H:%M:%S",
            "%Y-%m-%dT%H:%M:%S.%f",
            "%Y-%m-%d %H:%M",
            "%Y-%m-%d %H:%M:%S",
        ],
        error_messages={
            "invalid": "Enter a date and time, like 2026-11-01 09:00.",
            "required": "Enter a date and time.",
        },
        widget=forms.DateTimeInput(attrs={"type": "datetime-local", "step": "1"}, format="%Y-%m-%dT%H:%M:%S"),
    )

    def clean_at(self) -> datetime:
        at: datetime = self.cleaned_data["at"]
        _in_years(at)
        if at > timezone.now():
            raise forms.ValidationError("That moment has not come yet: the live view shows the account now.")
        return at


class HistoryForm(forms.Form):
    """Filters of the history (kind, days in the user's zone) and its keyset cursors."""

    kind = forms.ChoiceField(
        required=False, choices=[("", "All"), *[(k, k.capitalize()) for k in history.KINDS]], label="Kind"
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
    before = forms.IntegerField(required=False, min_value=1, max_value=2**31 - 1, widget=forms.HiddenInput)
    after = forms.IntegerField(required=False, min_value=0, max_value=2**31 - 1, widget=forms.HiddenInput)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        since, until = cleaned.get("since"), cleaned.get("until")
        for value in (since, until):
            if value is not None:
                _in_years(value)
        if since and until and since > until:
            raise forms.ValidationError("The first day comes after the last: swap them.")
        return cleaned

    def filter(self, zone: ZoneInfo) -> history.Filter:
        """Days in `zone`: from the start of `since` to the end of `until`."""
        kind, since, until = self.cleaned_data["kind"], self.cleaned_data["since"], self.cleaned_data["until"]
        return history.Filter(
            kinds=(kind,) if kind else (),
            since=day_start(since, zone) if since else None,
            until=day_start(until + timedelta(days=1), zone) if until else None,
        )

    @property
    def filtered(self) -> bool:
        return bool(self.cleaned_data.get("kind") or self.cleaned_data.get("since") or self.cleaned_data.get("until"))


class StatementForm(forms.Form):
    """A period of whole days in the user's zone, first and last day included; this month by default."""

    start = forms.DateField(
        label="From",
        widget=forms.DateInput(attrs={"type": "date"}),
        error_messages={"invalid": "Enter a date, like 2026-11-01.", "required": "Enter the first day."},
    )
    end = forms.DateField(
        label="To",
        widget=forms.DateInput(attrs={"type": "date"}),
        error_messages={"invalid": "Enter a date, like 2026-11-30.", "required": "Enter the last day."},
    )

    @classmethod
    def for_request(cls, data: QueryDict, today: date) -> StatementForm:
        """The form of the query string, or this calendar month when it names no period at all."""
        if "start" not in data and "end" not in data:
            first = today.replace(day=1)
            last = (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)
            data = QueryDict(mutable=True)
            data.update({"start": first.isoformat(), "end": last.isoformat()})
        return cls(data)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        start, end = cleaned.get("start"), cleaned.get("end")
        for value in (start, end):
            if value is not None:
                _in_years(value)
        if start and end:
            if start > end:
                raise forms.ValidationError("The first day comes after the last: swap them.")
            if (end - start).days + 1 > MAX_STATEMENT_DAYS:
                raise forms.ValidationError(f"A statement covers at most {MAX_STATEMENT_DAYS} days.")
        return cleaned

    def period(self, zone: ZoneInfo) -> tuple[datetime, datetime]:
        """[start of the first day, start of the day after the last) in `zone`."""
        return day_start(self.cleaned_data["start"], zone), day_start(
            self.cleaned_data["end"] + timedelta(days=1), zone
        )


def day_start(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), zone)
