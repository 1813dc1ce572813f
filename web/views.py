"""Pages and htmx endpoints. Views never write balances: they send commands and show projections."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_not_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import reswap

from bank import domain, messages
from bank.account_number import account_number, display
from bank.command_bus import CommandNotConfirmed, get_command_bus
from bank.money import format_money
from projections import queries
from projections.live import wait_for_command
from projections.models import Account, ParkedAccount
from web.forms import MoveMoneyForm, OpenAccountForm, TransferForm

log = logging.getLogger(__name__)

# A long-poll holds a request open for up to LONG_POLL_SECONDS; one user may hold LONG_POLLS_PER_USER at
# once in this process (a page has a few pending commands at most; the websocket usually answers first).
LONG_POLL_SECONDS = 4.0
LONG_POLLS_PER_USER = 4
_long_polls: Counter[str] = Counter()  # the views run on one event loop per process: no lock needed

BROKER_DOWN = "The bank cannot take orders right now (Kafka did not confirm). Nothing was sent; try again in a moment."


def actor_of(user: Any) -> str:
    return f"user:{user.get_username()}"


@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    return dashboard_page(request, OpenAccountForm())


@require_POST
async def open_account(request: HttpRequest) -> HttpResponse:
    user = await request.auser()
    form = OpenAccountForm(request.POST)
    fragment = "bank/dashboard.html#open-form"

    async def page(status: int, **context: Any) -> HttpResponse:
        return await sync_to_async(dashboard_page)(request, context.pop("form"), status, **context)

    if not form.is_valid():
        return await _answer(request, 422, fragment, {"form": form}, page)
    command_id: UUID = form.cleaned_data["command_id"]
    # The account id is derived from the command id, so a repeated submit names the same account.
    account_id = uuid.uuid5(uuid.NAMESPACE_URL, f"bank:open:{command_id}")
    if await sync_to_async(queries.account_exists)(account_id):
        form.refuse_used_id()
        return await _answer(request, 422, fragment, {"form": form}, page)
    command = domain.OpenAccount(
        account_id, queries.owner_key(user), form.cleaned_data["name"], form.cleaned_data["currency"]
    )
    label = f"Open “{command.name}” ({command.currency})"
    return await _send(request, user, command, command_id, form, fragment, label, page, reverse("dashboard"))


@require_GET
def account_detail(request: HttpRequest, account_id: UUID) -> HttpResponse:
    return account_page(request, queries.owned_account(request.user, account_id))


def account_page(request: HttpRequest, account: Account, status: int = 200, **context: Any) -> HttpResponse:
    """The whole account page; `context` may carry a posted form (as typed) and a broker error."""
    page = Paginator(queries.history(account.id), queries.HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "account": account,
        "page": page,
        "live_history": page.number == 1,
        "deposit_form": MoveMoneyForm(currency=account.currency, prefix="deposit"),
        "withdraw_form": MoveMoneyForm(currency=account.currency, prefix="withdraw"),
        "transfer_form": TransferForm(source=account, own=queries.accounts_of(request.user), prefix="transfer"),
        # The projector holds the account's events back (a gap, a bad record) until an operator releases it.
        "parked": ParkedAccount.objects.filter(account_id=account.id).first(),
        **context,
    }
    return render(request, "bank/account.html", context, status=status)


def dashboard_page(request: HttpRequest, form: OpenAccountForm, status: int = 200, **context: Any) -> HttpResponse:
    accounts = queries.accounts_of(request.user)
    context = {
        "accounts": accounts,
        "totals": queries.totals(accounts),
        "in_flight": queries.in_flight_totals(accounts),
        "form": form,
        **context,
    }
    return render(request, "bank/dashboard.html", context, status=status)


@require_POST
async def move_money(request: HttpRequest, account_id: UUID, kind: str) -> HttpResponse:
    """Async, so that waiting for the broker's confirmation holds no thread."""
    user = await request.auser()
    # Whether the posted command id was used already comes with the account, in the same query.
    account, used = await queries.aowned_account_and_used(
        user, account_id, _uuid(request.POST.get(f"{kind}-command_id"))
    )
    form = MoveMoneyForm(request.POST, currency=account.currency, prefix=kind)
    fragment = "bank/account.html#move-form"

    async def page(status: int, **context: Any) -> HttpResponse:
        posted = {f"{kind}_form": context.pop("form")}
        context = {k: v for k, v in context.items() if k not in ("account", "kind")}  # the page sets its own
        return await sync_to_async(account_page)(request, account, status, **posted, **context)

    invalid = {"form": form, "kind": kind, "account": account}
    if not form.is_valid():
        return await _answer(request, 422, fragment, invalid, page)
    command_id = form.cleaned_data["command_id"]
    if used:
        # A form sent before (the back button, say): the processor would drop it as a duplicate, silently.
        form.refuse_used_id()
        return await _answer(request, 422, fragment, invalid, page)
    amount: int = form.cleaned_data["amount"]
    command: domain.Command = (
        domain.Deposit(account.id, amount) if kind == "deposit" else domain.Withdraw(account.id, amount)
    )
    label = f"{'Deposit' if kind == 'deposit' else 'Withdraw'} {format_money(amount, account.currency)}"
    return await _send(
        request,
        user,
        command,
        command_id,
        form,
        fragment,
        label,
        page,
        reverse("account", args=[account.id]),
        account=account,
        kind=kind,
    )


@require_POST
async def transfer(request: HttpRequest, account_id: UUID) -> HttpResponse:
    """Send a TransferMoney command: the first step of the saga; the processor takes it from there."""
    user = await request.auser()
    account, used = await queries.aowned_account_and_used(
        user, account_id, _uuid(request.POST.get("transfer-command_id"))
    )
    own = await sync_to_async(queries.accounts_of)(user)
    form = TransferForm(request.POST, source=account, own=own, prefix="transfer")
    fragment = "bank/account.html#transfer-form"

    async def page(status: int, **context: Any) -> HttpResponse:
        posted = {"transfer_form": context.pop("form")}
        context = {k: v for k, v in context.items() if k not in ("account", "kind", "own")}
        return await sync_to_async(account_page)(request, account, status, **posted, **context)

    invalid = {"form": form, "account": account}
    if not form.is_valid():
        return await _answer(request, 422, fragment, invalid, page)
    command_id: UUID = form.cleaned_data["command_id"]
    if used or await queries.atransfer_id_used(user, command_id):
        # One id, one transfer: also when it was sent from another account (the steps would not mix, the
        # transfer ids in the histories would).
        form.refuse_used_transfer_id()
        return await _answer(request, 422, fragment, invalid, page)
    destination: UUID = form.cleaned_data["destination"]
    # The transfer is named by the form's command id: a double submit is one transfer.
    command = domain.TransferMoney(account.id, command_id, destination, form.cleaned_data["amount"])
    amount = format_money(form.cleaned_data["amount"], account.currency)
    label = f"Transfer {amount} to {display(account_number(destination))}"
    return await _send(
        request,
        user,
        command,
        command_id,
        form,
        fragment,
        label,
        page,
        reverse("account", args=[account.id]),
        account=account,
        own=own,
        kind="transfer",
    )


Page = Callable[..., Awaitable[HttpResponse]]


def _uuid(value: str | None) -> UUID | None:
    try:
        return UUID(value) if value else None
    except ValueError:
        return None


async def _answer(
    request: HttpRequest, status: int, fragment: str, context: dict[str, Any], page: Page
) -> HttpResponse:
    """The fragment for htmx; the whole page for a browser without JavaScript (the form as typed, its errors)."""
    if request.htmx:  # type: ignore[attr-defined]
        return render(request, fragment, context, status=status)
    return await page(status, **context)


async def _send(
    request: HttpRequest,
    user: Any,
    command: domain.Command,
    command_id: UUID,
    form: Any,
    fragment: str,
    label: str,
    page: Page,
    done_url: str,
    **context: Any,
) -> HttpResponse:
    """Send the command and answer 202 with a pending row and a fresh form, or 503 with the form as typed."""
    envelope = messages.CommandEnvelope.new(command, actor_of(user), command_id)
    try:
        await get_command_bus().asend(envelope)
    except CommandNotConfirmed as error:
        log.warning("command %s not confirmed: %s", command_id, error)
        failed = {"form": form, "broker_error": BROKER_DOWN, "broker_kind": context.get("kind"), **context}
        return await _answer(request, 503, fragment, failed, page)
    if not request.htmx:  # type: ignore[attr-defined]
        return HttpResponseRedirect(done_url, status=303)
    pending = {"command_id": command_id, "account_id": command.account_id, "label": label}
    if "kind" in context:
        return move_accepted(context["kind"], {"pending": pending})
    fresh = type(form)(**_fresh_form_kwargs(form))
    return render(request, fragment, {"form": fresh, "pending": pending, **context}, status=202)


def move_accepted(kind: str, row: dict[str, Any], status: int = 202) -> HttpResponse:
    """202 for htmx: a fresh command id, an emptied amount and the pending (or outcome) row, out of band.

    The form itself stays (HX-Reswap: none): re-rendering it cost more CPU than sending the command.
    No request context either: the fragment needs no CSRF token, user or messages.
    """
    context = {"kind": kind, "command_id": uuid.uuid4(), **row}
    return reswap(HttpResponse(render_to_string("bank/account.html#move-accepted", context), status=status), "none")


def _fresh_form_kwargs(form: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"prefix": form.prefix}
    if isinstance(form, TransferForm):
        kwargs["source"] = form.source
        kwargs["own"] = list(form.own.values())
    elif isinstance(form, MoveMoneyForm):
        kwargs["currency"] = form.currency
    return kwargs


async def command_status(request: HttpRequest, account_id: UUID, command_id: UUID) -> HttpResponse:
    """Long-poll for a command's outcome: the fallback for a websocket update that came before the page was ready.

    Answers the outcome once the user's own account has it, else "pending" after LONG_POLL_SECONDS.
    Another user's account, or one not projected yet, answers exactly like an unknown command, after
    the same wait: the answer and its timing depend on the user's own data only.
    """
    if request.method != "GET":
        return HttpResponse(status=405)
    user = await request.auser()
    key = queries.owner_key(user)
    if _long_polls[key] >= LONG_POLLS_PER_USER:
        return HttpResponse("Too many open status requests.", status=429, content_type="text/plain")
    _long_polls[key] += 1
    try:
        deadline = time.monotonic() + LONG_POLL_SECONDS
        found = None
        if await wait_for_command(account_id, command_id, timeout=LONG_POLL_SECONDS):
            found = await sync_to_async(queries.outcome_of)(user, account_id, command_id)
        if found is None:
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))  # someone else's: wait as if unknown
    finally:
        _long_polls[key] -= 1
        if not _long_polls[key]:
            del _long_polls[key]
    if found is None:
        pending = {"command_id": command_id, "account_id": account_id, "label": request.GET.get("label", "")}
        return render(request, "bank/live.html#pending-row", {"pending": pending})
    return render(request, "bank/live.html#outcome-row", {"entry": found.entry, "account": found.account})


@login_not_required
@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")
