"""Live updates to the browser: one websocket per page, htmx out-of-band fragments.

The consumer joins only groups the user owns (their owner group and their accounts'),
so nothing about other users' accounts can reach it, whatever the browser sends.

The page says what it is in its hello (the dashboard, or an account page with or without the live
history) and which commands it waits for; the consumer then sends only fragments whose targets that
page has (htmx logs an error for any other). Every fragment is a partial of templates/bank/live.html,
the same ones the pages render; reads go through projections.queries.

One push reaches every open page of the account in this process (a thousand, say), so what each page
does per push is kept small: a fragment is rendered once per distinct input (`render`: by the partial,
the time zone and the values it shows, never from a model instance) and reused by the other pages that
ask for exactly the same; the session check is shared by the pages of one session (`SessionChecks`);
server/fastpath/websocket.py takes two of Channels' per-message steps out of the way. Each page still decides on its own what it may see: the
values it renders come from its own user's accounts and the commands it waits for, as before.

Messages from the browser:
  {"type": "hello", "page": "dashboard"|"account", "account": id, "history": bool, "chart": 30|90|365|null,
   "pending": [[account, command], ...]}
  {"type": "watch", "account": id, "command": id}    a pending row that appeared after the hello
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass
from importlib import import_module
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import orjson
from channels.auth import get_user
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError
from django.template.loader import render_to_string
from django.utils import timezone
from redis.exceptions import RedisError

from bank import metrics
from live.updates import account_from_payload, account_group, entry_from_payload, owner_group, session_group
from projections import queries
from projections.apply import AccountRow, AuditRow
from projections.models import Account
from projections.queries import CommandOutcome
from web import chart
from web.middleware import ZONE_COOKIE, zone_from_cookie

log = logging.getLogger(__name__)

UNAUTHORIZED = 4401  # not logged in, or no longer
# "Try again later": htmx's websocket extension reconnects after a growing, jittered pause,
# and the page says that live updates are busy (static/bank/live.js).
# Codes of our own (4000-4999): autobahn, under daphne, refuses to send 1009 or 1013 from a server ("invalid
# close code"), which crashed the consumer before its disconnect ran, so the socket's slot was never freed.
TRY_AGAIN_LATER = 4013
MESSAGE_TOO_BIG = 4009
MAX_PENDING = 100  # commands one page may wait for
# A hello with MAX_PENDING pending commands is under 9 KB: anything much larger is not from our page,
# and parsing it (a megabyte of "[[[[" say) is work nobody needs done.
MAX_FRAME = 16_384
RECENT_OUTCOMES = 200
SESSION_RECHECK_SECONDS = 10.0  # logout closes sockets at once; this catches sessions ended otherwise

LIVE = "bank/live.html"
WatchedCommand = tuple[UUID, UUID]  # (account id, command id): a command id is unique per account only


@dataclass(frozen=True)
class LivePage:
    """What the browser page shows, hence which fragments it has targets for."""

    kind: str  # "dashboard", "account", or "" for a page without live parts
    account: UUID | None = None  # the account page's account
    history: bool = False  # the account page shows page one of the history (which takes live rows)
    chart: int | None = None  # the account page's balance chart shows this many days

    def shows_account(self, account_id: UUID) -> bool:
        return self.kind == "account" and self.account == account_id


def _row_command(entry: AuditRow) -> UUID:
    """The command whose pending row an entry answers: a transfer's steps on its source answer the transfer's."""
    if entry.transfer_id is not None and entry.type in ("TransferDebited", "TransferCompleted", "TransferRefunded"):
        return entry.transfer_id
    return entry.command_id


def _chart_days(value: Any) -> int | None:
    text = str(value)
    return int(text) if text in {str(n) for n in chart.RANGES} else None


def _uuid(value: Any) -> UUID | None:
    try:
        return UUID(str(value))
    except ValueError:
        return None


def _command(value: Any) -> WatchedCommand | None:
    if isinstance(value, list | tuple) and len(value) == 2:
        account, command = _uuid(value[0]), _uuid(value[1])
        if account and command:
            return account, command
    return None


async def session_alive(session_key: str, user_pk: Any) -> bool:
    """Whether the session still logs this user in (not logged out, flushed, expired or outdated by a new password)."""
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = await get_user({"session": store})
    return bool(user.is_authenticated and user.pk == user_pk)


class SessionChecks:
    """Whether a session still logs its user in, asked of the session store at most once per
    SESSION_RECHECK_SECONDS per session and process, however many pages of it are open (each asks on
    every push). Only "still logged in" is remembered: a session found gone closes its pages, and any
    page asking after that asks the store again."""

    def __init__(self) -> None:
        self.alive_at: dict[tuple[str, Any], float] = {}  # when a check that found it alive started
        self.running: dict[tuple[str, Any], asyncio.Task[bool]] = {}  # one check at a time per session

    def seen(self, session_key: str, user_pk: Any) -> None:
        """A page of the session just connected: its handshake read the session."""
        self.alive_at.setdefault((session_key, user_pk), time.monotonic())

    async def alive(self, session_key: str, user_pk: Any) -> bool:
        key = (session_key, user_pk)
        if time.monotonic() - self.alive_at.get(key, float("-inf")) < SESSION_RECHECK_SECONDS:
            return True
        task = self.running.get(key)
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            task = self.running[key] = asyncio.ensure_future(self._check(key))
        return await asyncio.shield(task)

    async def _check(self, key: tuple[str, Any]) -> bool:
        started = time.monotonic()
        try:
            alive = await session_alive(*key)
        finally:
            if self.running.get(key) is asyncio.current_task():
                del self.running[key]
        if not alive:
            self.alive_at.pop(key, None)
            return False
        if len(self.alive_at) > 10_000:  # sessions come and go: forget those not asked about lately
            self.alive_at = {k: t for k, t in self.alive_at.items() if started - t < SESSION_RECHECK_SECONDS}
        self.alive_at[key] = started
        return True


SESSIONS = SessionChecks()


class Unkeyed(Exception):
    """A value a fragment cannot be looked up by (a model instance compares by primary key only)."""


VALUES = (str, int, AccountRow, AuditRow, type(None))  # compared by value (a tuple: `a | b` is built at each use)
SEQUENCES = (list, tuple)


def fragment_key(value: Any) -> Any:
    """`value`, made hashable, if two equal keys are sure to render the same; else Unkeyed."""
    if isinstance(value, VALUES):
        return value
    if (
        isinstance(value, CommandOutcome)
        and isinstance(value.entry, AuditRow)
        and isinstance(value.account, AccountRow)
    ):
        return value
    if isinstance(value, SEQUENCES):
        return tuple([fragment_key(v) for v in value])
    raise Unkeyed(type(value).__name__)


def render(partial: str, zone: ZoneInfo | None, context: dict[str, Any]) -> str:
    """A partial of templates/bank/live.html, in the time zone `zone` (None: UTC).

    Rendered once per distinct (partial, zone, context) and then reused: one push to a thousand
    pages of an account renders its fragments a few times, not a thousand. Contexts holding model
    instances are rendered every time (an instance equals any other of the same primary key).
    """
    try:
        key = tuple([(name, fragment_key(value)) for name, value in context.items()])
    except Unkeyed:
        return _render(partial, zone, context)
    return _rendered(partial, zone, key)


def _render(partial: str, zone: ZoneInfo | None, context: dict[str, Any]) -> str:
    with timezone.override(zone):
        return render_to_string(f"{LIVE}#{partial}", context)


@functools.lru_cache(maxsize=256)  # a push's fragments are asked for within moments
def _rendered(partial: str, zone: ZoneInfo | None, key: tuple[tuple[str, Any], ...]) -> str:
    return _render(partial, zone, dict(key))  # the key holds the values themselves (lists as tuples)


def _render_chart(figures: chart.Chart, zone: ZoneInfo) -> str:
    return _render("chart", zone, {"chart": figures, "oob": True})


_charts: dict[tuple[UUID, int, int, str, Any], asyncio.Future[str]] = {}


async def _chart_fragment(account: AccountRow, days: int, zone: ZoneInfo, today: Any) -> str:
    """One query and one render per (account, its last sequence, range, zone, day), however many pages ask:
    the first page's read is shared by the others (a push reaches every open page of the account at once)."""
    key = (account.id, account.last_sequence, days, zone.key, today)
    future = _charts.get(key)
    if future is None or future.get_loop() is not asyncio.get_running_loop():
        while len(_charts) >= 256:  # a push's pages ask within moments: older entries are done with
            del _charts[next(iter(_charts))]

        @database_sync_to_async
        def read() -> str:
            return _render_chart(chart.for_account(account, days, zone), zone)

        future = _charts[key] = asyncio.ensure_future(read())
    try:
        return await asyncio.shield(future)
    except Exception:
        _charts.pop(key, None)  # not kept: the next page asks again
        raise


class LiveConsumer(AsyncWebsocketConsumer):
    open_sockets = 0  # accepted and not yet closed, in this process

    async def connect(self) -> None:
        if unavailable := self.scope.get("live_unavailable"):
            log.warning("live page not connected, the session could not be read: %s", unavailable)
            await self._try_again_later("live updates are busy")
            return
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=UNAUTHORIZED)
            return
        self.user = user
        self.closing = False
        self.owner = queries.owner_key(user)
        self.session_key: str | None = getattr(self.scope.get("session"), "session_key", None)
        if self.session_key:
            SESSIONS.seen(self.session_key, user.pk)
        self.zone = zone_from_cookie(self.scope.get("cookies", {}).get(ZONE_COOKIE))
        self.page: LivePage | None = None  # unknown until the hello: nothing is sent before it
        self.watching: dict[WatchedCommand, None] = {}  # ordered: the oldest is dropped beyond MAX_PENDING
        # Outcomes pushed lately, for a watch that comes after its push.
        self.recent: dict[WatchedCommand, CommandOutcome] = {}
        self.joined: set[str] = set()
        if LiveConsumer.open_sockets >= settings.LIVE_MAX_SOCKETS:
            await self._try_again_later(f"{LiveConsumer.open_sockets} live pages open in this process")
            return
        try:
            await self._join(owner_group(self.owner))
            if self.session_key:
                await self._join(session_group(self.session_key))
            # What the pushes update without asking the database: each push carries the account's new state.
            self.accounts: dict[UUID, AccountRow] = {a.id: a for a in await self._accounts()}
            for account_id in self.accounts:
                await self._join(account_group(account_id))
        except (RedisError, DatabaseError, OSError) as error:  # a limit or an outage: the page retries
            log.warning("live page of %s not connected: %r", self.owner, error)
            await self.disconnect(TRY_AGAIN_LATER)
            await self._try_again_later("live updates are busy")
            return
        LiveConsumer.open_sockets += 1
        self.counted = True
        await self.accept()
        metrics.websockets_open.inc()

    async def _try_again_later(self, reason: str) -> None:
        """Accepted, then closed with TRY_AGAIN_LATER: a refused handshake would look like a crash to the page."""
        await self.accept()
        await self.close(code=TRY_AGAIN_LATER, reason=reason[:120])

    async def disconnect(self, code: int) -> None:
        if getattr(self, "counted", False):
            LiveConsumer.open_sockets -= 1
            metrics.websockets_open.dec()
            self.counted = False
        for group in getattr(self, "joined", set()):
            await self.channel_layer.group_discard(group, self.channel_name)
        self.joined = set()

    async def _join(self, group: str) -> None:
        if group not in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
            self.joined.add(group)

    # --- from the browser ---

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            return  # our page sends text only
        if len(text_data) > MAX_FRAME:
            log.warning("closing a websocket of %s: a %d-character frame", self.owner, len(text_data))
            await self.close(code=MESSAGE_TOO_BIG)
            return
        try:
            message = orjson.loads(text_data)  # orjson refuses nesting deeper than 1024, without recursing
        except orjson.JSONDecodeError:
            return
        if not isinstance(message, dict) or not await self._still_logged_in():
            return
        if message.get("type") == "hello":
            await self._hello(message)
        elif message.get("type") == "watch" and (command := _command([message.get("account"), message.get("command")])):
            await self._watch(command)

    async def _hello(self, message: dict[str, Any]) -> None:
        """The page says hello after every (re)connect: send it the current state and the outcomes it missed."""
        kind = message.get("page")
        self.page = LivePage(
            kind=kind if kind in ("dashboard", "account") else "",
            account=_uuid(message.get("account")),
            history=message.get("history") is True,
            chart=_chart_days(message.get("chart")),
        )
        raw = message.get("pending")
        pending = [c for c in map(_command, raw[:MAX_PENDING]) if c] if isinstance(raw, list) else []
        self.watching = dict.fromkeys(pending)
        await self._send_all(await self._catch_up(self.page, pending))

    async def _watch(self, command: WatchedCommand) -> None:
        """A pending row appeared. Its outcome may have come first (the push beat the 202 answer): it is then
        among the recent ones, with no database query. One older than this socket is left to the row's long-poll.
        """
        if (outcome := self.recent.get(command)) is not None:
            await self._send_all([self._summary(outcomes=[outcome])])
            return
        self.watching[command] = None
        while len(self.watching) > MAX_PENDING:
            del self.watching[next(iter(self.watching))]

    # --- from the projector, through the channel layer ---

    async def account_updated(self, event: dict[str, Any]) -> None:
        payload = event.get("account")
        if payload is not None and payload.get("owner") != self.owner:
            return  # never for this user, whatever group it came through
        account_id = _uuid(event.get("account_id"))
        if account_id is None or account_id not in self.accounts or not await self._still_logged_in():
            return
        if payload is not None:
            self.accounts[account_id] = account_from_payload(payload)
        account = self.accounts[account_id]
        entries = [entry_from_payload(account_id, e) for e in event.get("entries", [])]
        entries.sort(key=lambda e: -e.sequence)
        for entry in reversed(entries):
            self.recent[(account_id, _row_command(entry))] = CommandOutcome(entry, account)
        while len(self.recent) > RECENT_OUTCOMES:
            del self.recent[next(iter(self.recent))]
        if self.page is None:
            return  # the hello's catch-up will show it
        shown = self.page.shows_account(account_id)
        outcomes = []
        answered = set()
        for entry in entries:
            key = (account_id, _row_command(entry))
            if key in self.watching:
                answered.add(key)
                if entry.type != "TransferDebited":  # a transfer's row waits on, for its completion or refund
                    del self.watching[key]
                outcomes.append(CommandOutcome(entry, account))
        # A push carries at most live.MAX_ENTRIES_PER_PUSH entries: ask for any watched outcome beyond them.
        listed = {(account_id, c) for c in filter(None, map(_uuid, event.get("command_ids", [])))}
        if missing := [c for c in listed if c in self.watching and c not in answered]:
            outcomes += await self._outcomes(missing)
        summary = self._summary(
            totals=self.page.kind == "dashboard" and payload is not None,
            balance_of=account if shown and payload is not None else None,
            outcomes=outcomes,
        )
        if self.page.kind == "dashboard" and payload is not None:
            # One frame, the table row first (see live.html): a push's frames cost daphne more than its renders.
            messages = [self._render("account-row", account=account) + summary]
        else:
            messages = [summary]
        if shown and self.page.history and entries:
            if event.get("entry_count", len(entries)) > len(entries):
                messages.append(await self._history(account))  # too many to prepend: page one afresh
            else:
                messages.append(
                    self._render("ws-history-prepended", account=account, entries=entries, own_names=self._names())
                )
        if shown and self.page.chart and payload is not None:
            messages.append(await self._chart(account, self.page.chart))
        await self._send_all(messages)

    async def account_opened(self, event: dict[str, Any]) -> None:
        if event["account"]["owner"] != self.owner or not await self._still_logged_in():
            return
        account = account_from_payload(event["account"])
        await self._join(account_group(account.id))
        known = account.id in self.accounts
        self.accounts[account.id] = account
        if self.page is None:
            return
        # The account's own update may have gone out before this socket joined its group: look its outcomes up.
        outcomes = await self._outcomes([c for c in self.watching if c[0] == account.id])
        on_dashboard = self.page.kind == "dashboard"  # only the dashboard has #total and #no-accounts
        messages = [self._summary(totals=on_dashboard, no_accounts=on_dashboard, outcomes=outcomes)]
        if self.page.kind == "dashboard":
            # A row the page may already show (from a catch-up) is replaced; a new one goes at the end.
            messages.append(self._render("account-row" if known else "ws-account-appended", account=account))
        await self._send_all(messages)

    async def session_ended(self, event: dict[str, Any]) -> None:
        """The session logged out: stop the updates it authorized."""
        await self.close(code=UNAUTHORIZED)

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        self.closing = True  # nothing more goes out, whatever arrives before the disconnect
        await super().close(code, reason)

    # --- reads (through projections.queries) ---

    @database_sync_to_async
    def _accounts(self) -> list[AccountRow]:
        return [queries.as_row(a) for a in queries.accounts_of(self.user)]

    @database_sync_to_async
    def _outcomes(self, commands: list[WatchedCommand]) -> list[CommandOutcome]:
        if not commands:
            return []
        found = queries.outcomes_of(self.user, commands)
        for outcome in found:
            self.watching.pop((outcome.entry.account_id, outcome.entry.command_id), None)
        return found

    @database_sync_to_async
    def _history(self, account: AccountRow) -> str:
        return self._render(
            "history-body",
            account=account,
            entries=queries.history_page_one(account.id),
            live_history=True,
            own_names=self._names(),
        )

    async def _chart(self, account: AccountRow, days: int) -> str:
        """The chart with today's point moved: once per account state, zone, range and day, for all its pages."""
        zone = self.zone or ZoneInfo("UTC")
        return await _chart_fragment(account, days, zone, timezone.localdate(timezone=zone))

    def _names(self) -> tuple[tuple[UUID, str], ...]:
        """The user's own accounts' names, as pairs (fragments are looked up by value)."""
        return tuple(sorted(queries.names_of(self.accounts.values()).items()))

    async def _still_logged_in(self) -> bool:
        """Checked now and then (logging out closes the socket at once; this catches expiry and the like)."""
        if self.session_key and await SESSIONS.alive(self.session_key, self.user.pk):
            return True
        await self.close(code=UNAUTHORIZED)
        return False

    @database_sync_to_async
    def _catch_up(self, page: LivePage, pending: list[WatchedCommand]) -> list[str]:
        """The page's live parts as they are now, and the outcomes of the commands it waits for."""
        accounts = queries.accounts_of(self.user)
        self.accounts = {a.id: queries.as_row(a) for a in accounts}
        outcomes = queries.outcomes_of(self.user, pending)
        for outcome in outcomes:
            self.watching.pop((outcome.entry.account_id, outcome.entry.command_id), None)
        if page.kind == "dashboard":
            return [
                self._summary(totals=True, no_accounts=True, outcomes=outcomes),
                self._render("accounts-body", accounts=accounts),
            ]
        owned = next((a for a in accounts if page.shows_account(a.id)), None)
        messages = [self._summary(balance_of=owned, outcomes=outcomes)]
        if owned is not None and page.history:
            # Page one of the history as it is now: rows missed while disconnected appear, none twice.
            entries = queries.history_page_one(owned.id)
            messages.append(
                self._render("history-body", account=owned, entries=entries, live_history=True, own_names=self._names())
            )
        if owned is not None and page.chart:
            zone = self.zone or ZoneInfo("UTC")
            messages.append(_render_chart(chart.for_account(owned, page.chart, zone), zone))
        return messages

    # --- rendering (the same partials as the pages) ---

    def _render(self, partial: str, **context: Any) -> str:
        return render(partial, self.zone, context)

    def _summary(
        self,
        *,
        totals: bool = False,
        balance_of: Account | AccountRow | None = None,
        no_accounts: bool = False,
        outcomes: list[CommandOutcome] | None = None,
    ) -> str:
        """One message of plain (non-table) fragments; only those asked for, so each has a target."""
        return self._render(
            "ws-summary",
            totals=queries.totals(self.accounts.values()) if totals else None,
            in_flight=queries.in_flight_totals(self.accounts.values()) if totals else None,
            balance_of=balance_of,
            no_accounts=no_accounts,
            accounts_now=bool(self.accounts),
            outcomes=outcomes or [],
        )

    async def _send_all(self, messages: list[str]) -> None:
        if self.closing:
            return
        for message in messages:
            if message.strip():
                await self.send(text_data=message)
