"""Pages and htmx endpoints. Views never write balances: they send commands and show projections."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from dataclasses import replace
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode
from uuid import UUID
from zoneinfo import ZoneInfo

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import reswap
from django_htmx.middleware import HtmxDetails

from bank import domain, messages
from bank.account_number import account_number, display
from bank.command_bus import CommandNotConfirmed, get_command_bus
from bank.money import format_money
from live.updates import wait_for_command
from projections import history, queries
from projections.models import Account, ParkedAccount
from web import chart, ratelimit, statements
from web.forms import AsOfForm, HistoryForm, MoveMoneyForm, OpenAccountForm, StatementForm, TransferForm

log = logging.getLogger(__name__)

# A long-poll holds a request open for up to LONG_POLL_SECONDS; one user may hold LONG_POLLS_PER_USER at
# once in this process (a page has a few pending commands at most; the websocket usually answers first).
LONG_POLL_SECONDS = 4.0
LONG_POLLS_PER_USER = 4
_long_polls: Counter[str] = Counter()  # the views run on one event loop per process: no lock needed

BROKER_DOWN = "The bank cannot take orders right now (Kafka did not confirm). Nothing was sent; try again in a moment."


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def actor_of(user: Any) -> str:
    return f"user:{user.get_username()}"


@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    return dashboard_page(request, OpenAccountForm())


@require_POST
async def open_account(request: HtmxHttpRequest) -> HttpResponse:
    user = await request.auser()
    form = OpenAccountForm(request.POST)
    if not form.is_valid():
        return await _open_form(request, form, 422)
    command_id: UUID = form.cleaned_data["command_id"]
    # The account id is derived from the command id, so a repeated submit names the same account.
    account_id = uuid.uuid5(uuid.NAMESPACE_URL, f"bank:open:{command_id}")
    if await sync_to_async(queries.account_exists)(account_id):
        form.refuse_used_id()
        return await _open_form(request, form, 422)
    command = domain.OpenAccount(
        account_id, queries.owner_key(user), form.cleaned_data["name"], form.cleaned_data["currency"]
    )
    if error := await send_command(user, command, command_id):
        return await _open_form(request, form, 503, broker_error=error, broker_kind=None)
    if not request.htmx:
        return HttpResponseRedirect(reverse("dashboard"), status=303)
    label = f"Open “{command.name}” ({command.currency})"
    pending = {"command_id": command_id, "account_id": command.account_id, "label": label}
    fresh = OpenAccountForm(prefix=form.prefix)
    return render(request, "bank/dashboard.html#open-form", {"form": fresh, "pending": pending}, status=202)


async def _open_form(request: HtmxHttpRequest, form: OpenAccountForm, status: int, **context: Any) -> HttpResponse:
    """The form as typed, with its errors: its fragment for htmx, the whole dashboard for a browser without JS."""
    if request.htmx:
        return render(request, "bank/dashboard.html#open-form", {"form": form, **context}, status=status)
    return await sync_to_async(dashboard_page)(request, form, status, **context)


@require_GET
def account_detail(request: HtmxHttpRequest, account_id: UUID) -> HttpResponse:
    return account_page(request, queries.owned_account(request.user, account_id))


def account_page(request: HttpRequest, account: Account, status: int = 200, **context: Any) -> HttpResponse:
    """The whole account page; `context` may carry a posted form (as typed) and a broker error.

    The query string may ask for the account as of a moment (`at`), filter and page the history
    (`kind`, `since`, `until`, `before`, `after`) and pick the chart's range (`days`). A malformed
    value is answered in its form, with a 400, and nothing from the account's past.
    """
    zone = _zone()
    as_of_form = AsOfForm(request.GET) if request.GET.get("at") else AsOfForm()
    history_form = HistoryForm(request.GET)
    past = None
    if as_of_form.is_bound:
        if as_of_form.is_valid():
            past = history.as_of(
                account.id, account.opened_at, as_of_form.cleaned_data["at"], account.status == "closed"
            )
        else:
            status = 400
    page = None
    filtered = False
    if history_form.is_valid():
        where = history_form.filter(zone)
        if past is not None:  # the history up to then, the moment itself included
            end = past.at + timedelta(microseconds=1)
            where = replace(where, until=min(where.until, end) if where.until else end)
        page = history.page(account.id, where, history_form.cleaned_data["before"], history_form.cleaned_data["after"])
        filtered = history_form.filtered
    else:
        status = 400
    days = _chart_days(request.GET.get("days"))
    own = queries.accounts_of(request.user)
    context = {
        "account": account,
        "past": past,
        "as_of_form": as_of_form,
        "history_form": history_form,
        "page": page,
        "filtered": filtered,
        # Live rows go to the newest page of the unfiltered, present history only.
        "live_history": page is not None and page.first and not filtered and past is None and not as_of_form.errors,
        "chart": None if past is not None or as_of_form.errors else chart.for_account(account, days, zone),
        "chart_days": days,
        "chart_ranges": chart.RANGES,
        "own_names": queries.names_of(own),
        "zone_name": zone.key,
        "deposit_form": MoveMoneyForm(currency=account.currency, prefix="deposit"),
        "withdraw_form": MoveMoneyForm(currency=account.currency, prefix="withdraw"),
        "transfer_form": TransferForm(source=account, own=own, prefix="transfer"),
        # The projector holds the account's events back (a gap, a bad record) until an operator releases it.
        "parked": ParkedAccount.objects.filter(account_id=account.id).first(),
        **context,
    }
    return render(request, "bank/account.html", context, status=status)


def _zone() -> ZoneInfo:
    """The zone of the request (web.middleware: the browser's, else UTC) in which days and moments are read."""
    zone = timezone.get_current_timezone()
    return zone if isinstance(zone, ZoneInfo) else ZoneInfo("UTC")


def _chart_days(value: str | None) -> int:
    return int(value) if value in {str(n) for n in chart.RANGES} else chart.RANGES[0]


@require_GET
def statement(request: HtmxHttpRequest, account_id: UUID) -> HttpResponse:
    """A period's statement, on a printable page: opening balance, every entry, totals, closing balance."""
    account = queries.owned_account(request.user, account_id)
    zone = _zone()
    form = StatementForm.for_request(request.GET, timezone.localdate(timezone=zone))
    context: dict[str, Any] = {"account": account, "form": form, "zone_name": zone.key}
    if not form.is_valid():
        return render(request, "bank/statement.html", context, status=400)
    start, end = form.period(zone)
    entries = history.period_entries(account.id, start, end).order_by("sequence")
    context |= {
        "statement": history.statement(account.id, start, end),
        "entries": list(entries[:STATEMENT_PAGE_ROWS]),
        "last_day": form.cleaned_data["end"],
        "row_limit": STATEMENT_PAGE_ROWS,
        "csv_query": urlencode({"start": form.cleaned_data["start"], "end": form.cleaned_data["end"]}),
        "own_names": queries.names_of(queries.accounts_of(request.user)),
    }
    return render(request, "bank/statement.html", context)


STATEMENT_PAGE_ROWS = 2_000  # on screen; the CSV has every entry


@require_GET
async def statement_csv(request: HtmxHttpRequest, account_id: UUID) -> HttpResponse | StreamingHttpResponse:
    """The statement as CSV, streamed: one keyset query per CSV_CHUNK entries, whatever the period's length."""
    user = await request.auser()
    account = await queries.aowned_account(user, account_id)
    zone = _zone()  # read now: the body is written after the view (and its zone override) has returned
    form = StatementForm.for_request(request.GET, timezone.localdate(timezone=zone))
    if not form.is_valid():
        errors = [str(e) for errors in form.errors.values() for e in errors]
        return HttpResponse("\n".join(errors) + "\n", status=400, content_type="text/plain; charset=utf-8")
    start, end = form.period(zone)
    summary = await sync_to_async(history.statement)(account.id, start, end)
    names = await sync_to_async(lambda: queries.names_of(queries.accounts_of(user)))()
    rows = statements.csv_rows(account, summary, zone, names, history.achunks(account.id, start, end))
    number = account_number(account.id)
    filename = f"statement-{number}-{form.cleaned_data['start']}-{form.cleaned_data['end']}.csv"
    response = StreamingHttpResponse(rows, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


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
async def move_money(request: HtmxHttpRequest, account_id: UUID, kind: str) -> HttpResponse:
    """Async, so that waiting for the broker's confirmation holds no thread."""
    user = await request.auser()
    # Whether the posted command id was used already comes with the account, in the same query.
    account, used = await queries.aowned_account_and_used(
        user, account_id, _uuid(request.POST.get(f"{kind}-command_id"))
    )
    form = MoveMoneyForm(request.POST, currency=account.currency, prefix=kind)
    if not form.is_valid():
        return await _account_form(request, account, "move", form, 422, kind=kind)
    command_id = form.cleaned_data["command_id"]
    if used:
        # A form sent before (the back button, say): the processor would drop it as a duplicate, silently.
        form.refuse_used_id()
        return await _account_form(request, account, "move", form, 422, kind=kind)
    amount: int = form.cleaned_data["amount"]
    command: domain.Command = (
        domain.Deposit(account.id, amount) if kind == "deposit" else domain.Withdraw(account.id, amount)
    )
    if error := await send_command(user, command, command_id):
        return await _account_form(request, account, "move", form, 503, broker_error=error, broker_kind=kind, kind=kind)
    if not request.htmx:
        return HttpResponseRedirect(reverse("account", args=[account.id]), status=303)
    label = f"{'Deposit' if kind == 'deposit' else 'Withdraw'} {format_money(amount, account.currency)}"
    pending = {"command_id": command_id, "account_id": account.id, "label": label}
    return move_accepted(kind, {"pending": pending})


@require_POST
async def transfer(request: HtmxHttpRequest, account_id: UUID) -> HttpResponse:
    """Send a TransferMoney command: the first step of the saga; the processor takes it from there."""
    user = await request.auser()
    # The source, whether the form was sent before, and the user's accounts (the form's list): one query, no thread.
    account, used, own = await queries.aowned_accounts_and_used(
        user, account_id, _uuid(request.POST.get("transfer-command_id"))
    )
    form = TransferForm(request.POST, source=account, own=own, prefix="transfer")
    if not form.is_valid():
        return await _account_form(request, account, "transfer", form, 422)
    command_id: UUID = form.cleaned_data["command_id"]
    if used or await queries.atransfer_id_used(user, command_id):
        # One id, one transfer: also when it was sent from another account (the steps would not mix, the
        # transfer ids in the histories would).
        form.refuse_used_transfer_id()
        return await _account_form(request, account, "transfer", form, 422)
    destination: UUID = form.cleaned_data["destination"]
    # The transfer is named by the form's command id: a double submit is one transfer.
    command = domain.TransferMoney(account.id, command_id, destination, form.cleaned_data["amount"])
    if error := await send_command(user, command, command_id):
        failed = {"broker_error": error, "broker_kind": "transfer", "own": own, "kind": "transfer"}
        return await _account_form(request, account, "transfer", form, 503, **failed)
    if not request.htmx:
        return HttpResponseRedirect(reverse("account", args=[account.id]), status=303)
    amount = format_money(form.cleaned_data["amount"], account.currency)
    label = f"Transfer {amount} to {display(account_number(destination))}"
    return transfer_accepted(form, {"command_id": command_id, "account_id": account.id, "label": label})


async def _account_form(
    request: HtmxHttpRequest,
    account: Account,
    name: str,
    form: MoveMoneyForm | TransferForm,
    status: int,
    **context: Any,
) -> HttpResponse:
    """A posted form as typed, with its errors: its fragment for htmx, the whole account page without JS.

    `name` is "move" or "transfer"; the page sets its own `kind` and `own`, so those go to the fragment only.
    """
    if request.htmx:
        fragment = f"bank/account.html#{name}-form"
        return render(request, fragment, {"form": form, "account": account, **context}, status=status)
    posted = {f"{form.prefix}_form": form}
    page_context = {k: v for k, v in context.items() if k not in ("kind", "own")}
    return await sync_to_async(account_page)(request, account, status, **posted, **page_context)


def _uuid(value: str | None) -> UUID | None:
    try:
        return UUID(value) if value else None
    except ValueError:
        return None


async def send_command(user: Any, command: domain.Command, command_id: UUID) -> str | None:
    """Send the command and wait for the broker's confirmation: None once confirmed, else the message to show."""
    envelope = messages.CommandEnvelope.new(command, actor_of(user), command_id)
    try:
        await get_command_bus().asend(envelope)
    except CommandNotConfirmed as error:
        log.warning("command %s not confirmed: %s", command_id, error)
        return BROKER_DOWN
    return None


def move_accepted(kind: str, row: dict[str, Any], status: int = 202) -> HttpResponse:
    """202 for htmx: a fresh command id, an emptied amount and the pending (or outcome) row, out of band.

    The form itself stays (HX-Reswap: none): re-rendering it cost more CPU than sending the command.
    No request context either: the fragment needs no CSRF token, user or messages.
    """
    context = {"kind": kind, "command_id": uuid.uuid4(), **row}
    return reswap(HttpResponse(render_to_string("bank/account.html#move-accepted", context), status=status), "none")


def transfer_accepted(form: TransferForm, pending: dict[str, Any]) -> HttpResponse:
    """202 for htmx, as `move_accepted`: the transfer form stays, with a fresh command id and its fields reset."""
    choices = form.fields["to_own"].choices  # type: ignore[attr-defined]
    context = {"command_id": uuid.uuid4(), "choices": choices, "pending": pending}
    return reswap(HttpResponse(render_to_string("bank/account.html#transfer-accepted", context), status=202), "none")


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


SIGNUP_LIMITED = "Too many sign-ups from your network in the last hour. Please try again later."


@login_not_required
@require_http_methods(["GET", "POST"])
def signup(request: HtmxHttpRequest) -> HttpResponse:
    """Django's UserCreationForm and password validators; logged in once signed up. Limited per client address."""
    if request.user.is_authenticated:
        return HttpResponseRedirect(reverse("dashboard"))
    if request.method != "POST":
        return render(request, "registration/signup.html", {"form": UserCreationForm()})
    # REMOTE_ADDR: the peer daphne saw (a proxy in front must set it; forwarded headers are not trusted here).
    address = request.META.get("REMOTE_ADDR") or "unknown"
    form: UserCreationForm[User] = UserCreationForm(request.POST)
    if not ratelimit.hit(f"signup:{address}", settings.SIGNUP_LIMIT, settings.SIGNUP_WINDOW_SECONDS):
        return render(request, "registration/signup.html", {"form": form, "limited": SIGNUP_LIMITED}, status=429)
    if not form.is_valid():
        return render(request, "registration/signup.html", {"form": form}, status=422)
    user = form.save()
    login(request, user, backend=settings.AUTHENTICATION_BACKENDS[0])
    log.info("signed up: %s", user.get_username())
    return HttpResponseRedirect(reverse("dashboard"), status=303)


@login_not_required
@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")
