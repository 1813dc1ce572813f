"""Live updates to the browser: one websocket per page, htmx out-of-band fragments.

The consumer joins only groups the user owns (their owner group and their accounts'),
so nothing about other users' accounts can reach it, whatever the browser sends.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from types import SimpleNamespace
from typing import Any
from uuid import UUID

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.template.loader import render_to_string
from django.utils import timezone

from projections import queries
from projections.live import account_group, owner_group
from projections.models import Account, AuditEntry
from web.middleware import zone_from_cookie

log = logging.getLogger("bank.websocket")

UNAUTHORIZED = 4401
MAX_PENDING = 200


def _uuid(value: Any) -> UUID | None:
    try:
        return UUID(str(value))
    except ValueError:
        return None


class LiveConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=UNAUTHORIZED)
            return
        self.user = user
        self.owner = queries.owner_key(user)
        self.joined: set[str] = set()
        await self._join(owner_group(self.owner))
        # What the pushes update without asking the database: each push carries the account's new state.
        self.accounts: dict[str, SimpleNamespace] = {str(a.id): _plain(a) for a in await self._accounts()}
        for account_id in self.accounts:
            await self._join(account_group(account_id))
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "joined", set()):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def _join(self, group: str) -> None:
        if group not in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
            self.joined.add(group)

    @database_sync_to_async
    def _accounts(self) -> list[Account]:
        return queries.accounts_of(self.user)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """The page says hello after every (re)connect: send it the current state and outcomes it missed."""
        try:
            message = json.loads(text_data or "")
        except ValueError:
            return
        if not isinstance(message, dict) or message.get("type") != "hello":
            return
        raw = message.get("pending")
        pending = [u for u in map(_uuid, raw[:MAX_PENDING]) if u] if isinstance(raw, list) else []
        await self._send_all(await self._catch_up(_uuid(message.get("account")), pending))

    async def account_updated(self, event: dict[str, Any]) -> None:
        account = event.get("account")
        if account is not None and account.get("owner") != self.owner:
            return  # never for this user, whatever group it came through
        if account is None or account["id"] not in self.accounts:
            return
        self.accounts[account["id"]] = SimpleNamespace(**account)
        await self._send_all(self._update_fragments(self.accounts[account["id"]], event.get("entries", [])))

    async def account_opened(self, event: dict[str, Any]) -> None:
        if event["account"]["owner"] != self.owner:
            return
        await self._join(account_group(event["account"]["id"]))
        self.accounts[event["account"]["id"]] = SimpleNamespace(**event["account"])
        await self._send_all(await self._opened_fragments(UUID(event["account"]["id"])))

    async def _send_all(self, messages: list[str]) -> None:
        for message in messages:
            if message.strip():
                await self.send(text_data=message)

    # --- rendering (the same partials as the pages) ---
    #
    # Each websocket message is parsed by htmx inside a <template>, whose parser takes table
    # rows only when they come first: so table parts travel in messages of their own.

    def _activate_zone(self) -> None:
        zone = zone_from_cookie(self.scope.get("cookies", {}).get("tz"))
        if zone is not None:
            timezone.activate(zone)
        else:
            timezone.deactivate()

    def _update_fragments(self, account: SimpleNamespace, entries: list[dict[str, Any]]) -> list[str]:
        """Rendered from the push alone: no database round trip per update."""
        self._activate_zone()
        rows = [_entry(e) for e in sorted(entries, key=lambda e: -e["sequence"])]
        return self._account_fragments(account, rows)

    @database_sync_to_async
    def _opened_fragments(self, account_id: UUID) -> list[str]:
        self._activate_zone()
        account = Account.objects.filter(id=account_id, owner=self.owner).first()
        if account is None:
            return []
        entries = list(AuditEntry.objects.filter(account_id=account_id).order_by("-sequence"))
        row = render_to_string("bank/live.html#account-row", {"account": account})
        return [
            f'<tbody hx-swap-oob="beforeend:#accounts-body">{row}</tbody>',
            '<p id="no-accounts" hx-swap-oob="delete"></p>',
            *self._account_fragments(account, entries, with_row=False),
        ]

    def _account_fragments(self, account: Any, entries: list[Any], with_row: bool = True) -> list[str]:
        accounts = list(self.accounts.values())
        totals = queries.totals(accounts)  # type: ignore[arg-type]
        in_flight = queries.in_flight_totals(accounts)  # type: ignore[arg-type]
        plain = [
            render_to_string("bank/live.html#balance", {"account": account}),
            render_to_string("bank/live.html#in-flight", {"account": account}),
            render_to_string("bank/live.html#total", {"totals": totals, "in_flight": in_flight}),
            *(render_to_string("bank/live.html#outcome-row", {"entry": e, "account": account}) for e in entries),
        ]
        messages = ["".join(plain)]
        if with_row:
            messages.append(render_to_string("bank/live.html#account-row", {"account": account}))
        if entries:
            rows = "".join(
                render_to_string("bank/live.html#audit-row", {"entry": e, "account": account}) for e in entries
            )
            messages.append(f'<tbody hx-swap-oob="afterbegin:#audit-live-{account.id}">{rows}</tbody>')
        return messages

    @database_sync_to_async
    def _catch_up(self, account_id: UUID | None, pending: list[UUID]) -> list[str]:
        self._activate_zone()
        accounts = queries.accounts_of(self.user)
        owned = {a.id: a for a in accounts}
        totals = {"totals": queries.totals(accounts), "in_flight": queries.in_flight_totals(accounts)}
        plain = [render_to_string("bank/live.html#total", totals)]
        plain += [render_to_string("bank/live.html#balance", {"account": a}) for a in accounts]
        plain += [render_to_string("bank/live.html#in-flight", {"account": a}) for a in accounts]
        for entry in AuditEntry.objects.filter(command_id__in=pending, account_id__in=list(owned)):
            plain.append(
                render_to_string("bank/live.html#outcome-row", {"entry": entry, "account": owned[entry.account_id]})
            )
        messages = ["".join(plain)]
        if accounts:
            rows = "".join(render_to_string("bank/live.html#account-row", {"account": a}) for a in accounts)
            messages.append(f'<tbody id="accounts-body">{rows}</tbody>')
        if account_id in owned:
            # Page one of the history as it is now: rows missed while disconnected appear, none twice.
            entries = AuditEntry.objects.filter(account_id=account_id).order_by("-sequence")[:20]
            rows = "".join(
                render_to_string("bank/live.html#audit-row", {"entry": e, "account": owned[account_id]})
                for e in entries
            )
            messages.append(f'<tbody id="audit-live-{account_id}">{rows}</tbody>')
        return messages


def _plain(account: Account) -> SimpleNamespace:
    return SimpleNamespace(
        id=str(account.id),
        owner=account.owner,
        name=account.name,
        currency=account.currency,
        balance=account.balance,
        in_flight=account.in_flight,
        status=account.status,
        last_sequence=account.last_sequence,
    )


def _entry(payload: dict[str, Any]) -> SimpleNamespace:
    return SimpleNamespace(**{**payload, "occurred_at": datetime.fromisoformat(payload["occurred_at"])})
