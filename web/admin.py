"""Admin: projections read-only (only the projector writes them); actions that issue commands."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db.models import CharField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Cast
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from bank import domain
from bank import messages as wire
from bank.account_number import account_number, display
from bank.command_bus import CommandNotConfirmed, get_command_bus
from bank.kafka import producer
from bank.money import AmountError, format_money, parse_amount
from bank.quarantine import quarantined
from projections import history
from projections.models import Account, AuditEntry, Checkpoint, DeadLetter, ParkedAccount, Transfer
from web.forms import AsOfForm

RELEASE_PERMISSION = "projections.release_account"


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def admin_actor(request: HttpRequest) -> str:
    return f"admin:{request.user.get_username()}"


def send_commands(request: HttpRequest, commands: list[domain.Command]) -> int:
    bus = get_command_bus()
    sent = 0
    for command in commands:
        try:
            bus.send(wire.CommandEnvelope.new(command, admin_actor(request)))
            sent += 1
        except CommandNotConfirmed as error:
            messages.error(request, f"Stopped after {sent} command(s): {error}")
            break
    return sent


class CorrectionForm(forms.Form):
    amount = forms.CharField(help_text="Amount to deposit into each selected account, e.g. 12.50")


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    list_display = [
        "name",
        "owner_name",
        "currency",
        "balance_display",
        "status",
        "last_sequence",
        "updated_at",
        "as_of_link",
    ]
    list_filter = ["status", "currency"]
    search_fields = ["id", "name", "owner"]
    actions = ["deposit_correction", "close_accounts", "release"]

    def get_urls(self) -> list[Any]:
        as_of = path("<uuid:account_id>/as-of/", self.admin_site.admin_view(self.as_of_view), name="account-as-of")
        return [as_of, *super().get_urls()]

    @admin.display(description="as of…")
    def as_of_link(self, obj: Account) -> str:
        return format_html('<a href="{}">as of…</a>', reverse("admin:account-as-of", args=[obj.id]))

    def as_of_view(self, request: HttpRequest, account_id: Any) -> HttpResponse:
        """What the customer saw at a moment: the same figures and history as their page's past view."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        account = get_object_or_404(Account, id=account_id)
        form = AsOfForm(request.GET) if request.GET.get("at") else AsOfForm()
        past, page = None, None
        if form.is_bound and form.is_valid():
            past = history.as_of(account.id, account.opened_at, form.cleaned_data["at"], account.status == "closed")
            where = history.Filter(until=past.at + timedelta(microseconds=1))
            page = history.page(account.id, where, _int(request.GET.get("before")))
        context = {
            **self.admin_site.each_context(request),
            "title": f"{account.name} as of a moment",
            "account": account,
            "form": form,
            "past": past,
            "page": page,
            "zone_name": str(timezone.get_current_timezone()),
            "opts": self.model._meta,
        }
        return TemplateResponse(
            request, "admin/projections/account_as_of.html", context, status=400 if form.errors else 200
        )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Account]:
        # Events record the owner's user id; staff read user names. One subquery, not a query per row.
        usernames = User.objects.annotate(key=Cast("pk", CharField())).filter(key=OuterRef("owner"))
        queryset: QuerySet[Account] = super().get_queryset(request)
        return queryset.annotate(owner_username=Subquery(usernames.values("username")[:1]))

    @admin.display(description="owner", ordering="owner_username")
    def owner_name(self, obj: Account) -> str:
        return getattr(obj, "owner_username", None) or f"(user id {obj.owner})"

    @admin.display(description="balance", ordering="balance")
    def balance_display(self, obj: Account) -> str:
        return format_money(obj.balance, obj.currency)

    # Each action that issues commands needs its own permission: viewing the accounts grants none.
    def has_deposit_correction_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("projections.deposit_correction")

    def has_close_account_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("projections.close_account")

    @admin.action(description="Deposit a correction (issues Deposit commands)", permissions=["deposit_correction"])
    def deposit_correction(self, request: HttpRequest, queryset: QuerySet[Account]) -> HttpResponse | None:
        form = CorrectionForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            try:
                amount = parse_amount(form.cleaned_data["amount"], settings.BANK_MAX_AMOUNT)
            except AmountError as error:
                form.add_error("amount", str(error))
            else:
                sent = send_commands(request, [domain.Deposit(a.id, amount) for a in queryset])
                self.message_user(request, f"Sent {sent} deposit command(s); balances change once they are decided.")
                return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Deposit a correction",
            "accounts": queryset,
            "form": form,
            "action": "deposit_correction",
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/projections/deposit_correction.html", context)

    @admin.action(description="Close accounts (issues CloseAccount commands)", permissions=["close_account"])
    def close_accounts(self, request: HttpRequest, queryset: QuerySet[Account]) -> None:
        sent = send_commands(request, [domain.CloseAccount(a.id) for a in queryset])
        self.message_user(request, f"Sent {sent} close command(s); an account with money in it will be rejected.")

    def has_release_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(RELEASE_PERMISSION)

    @admin.action(description="Release (lift a quarantine or a parked projection)", permissions=["release"])
    def release(self, request: HttpRequest, queryset: QuerySet[Account]) -> None:
        release_accounts(self, request, [a.id for a in queryset])


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() and len(value) < 10 else None


def release_accounts(model_admin: admin.ModelAdmin, request: HttpRequest, ids: list[Any]) -> None:  # type: ignore[type-arg]
    sent = send_commands(request, [domain.ReleaseAccount(account_id) for account_id in ids])
    model_admin.message_user(
        request,
        f"Sent {sent} ReleaseAccount command(s); the processor decides the account's commands again and the "
        "projector applies its events from where it parked, accepting what held it back.",
    )


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ["account_id", "sequence", "type", "amount", "balance_after", "reason", "actor", "occurred_at"]
    list_filter = ["type", "reason"]
    search_fields = ["account_id", "command_id", "event_id", "actor", "transfer_id"]


IN_FLIGHT = ["sent", "credited", "refused"]


def flagged_since() -> Any:
    """Transfers debited before this moment and still in flight are flagged (BANK_TRANSFER_FLAG_AFTER)."""
    return timezone.now() - timedelta(seconds=settings.BANK_TRANSFER_FLAG_AFTER)


class InFlightFilter(admin.SimpleListFilter):
    title = "in flight"
    parameter_name = "in_flight"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("yes", "In flight"),
            ("flagged", f"In flight longer than {settings.BANK_TRANSFER_FLAG_AFTER}s"),
            ("no", "Ended"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Transfer]) -> QuerySet[Transfer]:
        if self.value() == "yes":
            return queryset.filter(status__in=IN_FLIGHT)
        if self.value() == "flagged":
            return queryset.filter(status__in=IN_FLIGHT, debited_at__lt=flagged_since())
        if self.value() == "no":
            return queryset.exclude(status__in=IN_FLIGHT)
        return queryset


@admin.register(Transfer)
class TransferAdmin(ReadOnlyAdmin):
    """Read-only: a transfer moves only through its saga's commands, never by an edit here."""

    list_display = [
        "transfer_id",
        "status",
        "flag",
        "amount_display",
        "from_number",
        "to_number",
        "reason",
        "debited_at",
        "ended_at",
    ]
    list_filter = [InFlightFilter, "status", "reason", "currency"]
    # A transfer is (source, transfer id): searching a transfer id lists every source that sent one with it.
    search_fields = ["transfer_id", "from_account", "to_account"]
    date_hierarchy = "debited_at"

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, obj: Transfer) -> str:
        return format_money(obj.amount, obj.currency)

    @admin.display(description="from")
    def from_number(self, obj: Transfer) -> str:
        return display(account_number(obj.from_account))

    @admin.display(description="to")
    def to_number(self, obj: Transfer) -> str:
        return display(account_number(obj.to_account))

    @admin.display(description="ended")
    def ended_at(self, obj: Transfer) -> Any:
        return obj.completed_at or obj.refunded_at

    @admin.display(description="flag")
    def flag(self, obj: Transfer) -> str:
        if obj.status in IN_FLIGHT and obj.debited_at is not None and obj.debited_at < flagged_since():
            return f"⚠ in flight over {settings.BANK_TRANSFER_FLAG_AFTER}s"
        return ""


@admin.register(Checkpoint)
class CheckpointAdmin(ReadOnlyAdmin):
    list_display = ["projection", "topic", "partition", "next_offset"]


@admin.register(ParkedAccount)
class ParkedAccountAdmin(ReadOnlyAdmin):
    """Accounts the projector holds back; the processor's quarantined accounts are listed above them."""

    list_display = ["account_id", "partition", "offset", "since", "reason"]
    search_fields = ["account_id"]
    actions = ["release"]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        try:
            held = quarantined(settings.KAFKA)
        except Exception as error:  # the page still shows the parked accounts without Kafka
            messages.warning(request, f"Could not read the processor's quarantine from Kafka: {error}")
        else:
            for account_id, why in sorted(held.items()):
                messages.warning(request, f"Quarantined by the processor: {account_id} ({why})")
        return super().changelist_view(request, extra_context)

    def has_release_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(RELEASE_PERMISSION)

    @admin.action(description="Release (issues ReleaseAccount commands)", permissions=["release"])
    def release(self, request: HttpRequest, queryset: QuerySet[ParkedAccount]) -> None:
        release_accounts(self, request, [p.account_id for p in queryset])


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin):
    list_display = ["topic", "partition", "offset", "error", "created_at", "requeued_at"]
    readonly_fields = ["topic", "partition", "offset", "error", "created_at", "requeued_at", "value_text", "key_text"]
    exclude = ["key", "value"]
    actions = ["requeue"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="value")
    def value_text(self, obj: DeadLetter) -> str:
        return bytes(obj.value or b"").decode("utf-8", "replace")

    @admin.display(description="key")
    def key_text(self, obj: DeadLetter) -> str:
        return bytes(obj.key or b"").decode("utf-8", "replace")

    def has_requeue_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("projections.requeue_deadletter")

    @admin.action(
        description="Re-queue commands to bank.commands (events: fix with an upcaster and Release)",
        permissions=["requeue"],
    )
    def requeue(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        kafka = settings.KAFKA
        letters = list(queryset.filter(requeued_at__isnull=True))
        commands = [d for d in letters if d.topic == kafka.commands_topic]
        if len(commands) < len(letters):
            self.message_user(
                request,
                f"{len(letters) - len(commands)} dead letter(s) are events, not re-queued: only the processor "
                f"writes {kafka.events_topic}; events are fixed with an upcaster and release_account.",
                messages.WARNING,
            )
        if not commands:
            return
        # The command bus's producer (murmur2 partitioner): each command lands on its account's partition.
        out = producer(kafka, **{"client.id": "bank-admin"})
        for letter in commands:
            out.produce(
                kafka.commands_topic,
                key=bytes(letter.key) if letter.key is not None else None,
                value=bytes(letter.value) if letter.value is not None else None,
                headers=[("requeued-from", f"{letter.topic}:{letter.partition}:{letter.offset}".encode())],
            )
        if out.flush(kafka.command_timeout) > 0:
            self.message_user(request, "Kafka did not confirm the re-queue; nothing marked.", messages.ERROR)
            return
        DeadLetter.objects.filter(pk__in=[d.pk for d in commands]).update(requeued_at=timezone.now())
        self.message_user(request, f"Re-queued {len(commands)} command(s).")
