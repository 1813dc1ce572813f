"""Live updates: what the projector pushes after a commit, and waiting for a command's outcome."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import logging
import threading
import time
from datetime import datetime
from typing import Any
from uuid import UUID

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from projections.apply import AccountRow, AuditRow
from projections.store import BatchChanges

MAX_ENTRIES_PER_PUSH = 200
# Sends in flight at once: each takes a Redis connection, and the pool holds 100.
MAX_CONCURRENT_SENDS = 50
PUSH_TIMEOUT = 10.0  # seconds a batch's pushes may take before the projector goes on without them

log = logging.getLogger(__name__)


def account_group(account_id: UUID | str) -> str:
    return f"account-{account_id}"


def owner_group(owner: str) -> str:
    # A hash: group names allow only [A-Za-z0-9._-] and under 100 characters; an owner id may hold anything.
    return f"owner-{hashlib.sha256(owner.encode()).hexdigest()[:40]}"


def session_group(session_key: str) -> str:
    """The websockets of one login session: closed when it logs out."""
    return f"session-{hashlib.sha256(session_key.encode()).hexdigest()[:40]}"


def account_payload(row: AccountRow) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "owner": row.owner,
        "name": row.name,
        "currency": row.currency,
        "balance": row.balance,
        "in_flight": row.in_flight,
        "status": row.status,
        "opened_at": row.opened_at.isoformat(),
        "last_sequence": row.last_sequence,
        "updated_at": row.updated_at.isoformat(),
    }


def account_from_payload(payload: dict[str, Any]) -> AccountRow:
    """The inverse of `account_payload`: what a websocket consumer renders a push from."""
    return AccountRow(
        id=UUID(payload["id"]),
        owner=payload["owner"],
        name=payload["name"],
        currency=payload["currency"],
        balance=payload["balance"],
        status=payload["status"],
        opened_at=datetime.fromisoformat(payload["opened_at"]),
        last_sequence=payload["last_sequence"],
        updated_at=datetime.fromisoformat(payload["updated_at"]),
        in_flight=payload.get("in_flight", 0),
    )


def entry_payload(row: AuditRow) -> dict[str, Any]:
    return {
        "event_id": str(row.event_id),
        "sequence": row.sequence,
        "type": row.type,
        "amount": row.amount,
        "balance_after": row.balance_after,
        "occurred_at": row.occurred_at.isoformat(),
        "actor": row.actor,
        "command_id": str(row.command_id),
        "reason": row.reason,
        "command": row.command,
        "transfer_id": str(row.transfer_id) if row.transfer_id else None,
        "counterparty": str(row.counterparty) if row.counterparty else None,
    }


def entry_from_payload(account_id: UUID, payload: dict[str, Any]) -> AuditRow:
    """The inverse of `entry_payload` (the account id travels once per message)."""
    return AuditRow(
        event_id=UUID(payload["event_id"]),
        account_id=account_id,
        sequence=payload["sequence"],
        type=payload["type"],
        amount=payload["amount"],
        balance_after=payload["balance_after"],
        occurred_at=datetime.fromisoformat(payload["occurred_at"]),
        actor=payload["actor"],
        command_id=UUID(payload["command_id"]),
        reason=payload["reason"],
        command=payload.get("command", ""),
        transfer_id=UUID(payload["transfer_id"]) if payload.get("transfer_id") else None,
        counterparty=UUID(payload["counterparty"]) if payload.get("counterparty") else None,
    )


def messages_for(outcome: BatchChanges) -> list[tuple[str, dict[str, Any]]]:
    """(group, message) pairs: one per touched account, one per owner of a new account."""
    out: list[tuple[str, dict[str, Any]]] = []
    for account_id in set(outcome.accounts) | set(outcome.audit):
        entries = outcome.audit.get(account_id, [])
        row = outcome.accounts.get(account_id)
        message = {
            "type": "account.updated",
            "account_id": str(account_id),
            "account": account_payload(row) if row else None,
            "entries": [entry_payload(e) for e in entries[-MAX_ENTRIES_PER_PUSH:]],
            "entry_count": len(entries),
            "command_ids": sorted({str(e.command_id) for e in entries}),
        }
        out.append((account_group(account_id), message))
        if row is not None and account_id in outcome.opened:
            out.append((owner_group(row.owner), {"type": "account.opened", "account": account_payload(row)}))
    return out


class PushLoop:
    """The event loop the projector's pushes run on: one, in a thread of its own, for the life of the process.

    async_to_sync made a new event loop and thread for every batch, and channels-redis a new Redis
    connection for each new loop: ~2 ms and a connection per batch, a batch every few ms under load.
    """

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.lock = threading.Lock()

    def run(self, coroutine: Any, timeout: float) -> Any:
        """Run `coroutine` on the loop and wait for its result, at most `timeout` seconds (then TimeoutError)."""
        with self.lock:
            if self.loop is None:
                self.loop = asyncio.new_event_loop()
                threading.Thread(target=self.loop.run_forever, name="live-push", daemon=True).start()
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError from None


PUSHES = PushLoop()


def push(outcome: BatchChanges) -> int:
    """Send the batch's updates through the channel layer, concurrently. Returns how many were sent."""
    pairs = messages_for(outcome)
    layer = get_channel_layer()
    if not pairs or layer is None:
        return 0

    async def send_all() -> int:
        limit = asyncio.Semaphore(MAX_CONCURRENT_SENDS)

        async def send(group: str, message: dict[str, Any]) -> bool:
            async with limit:
                try:
                    await layer.group_send(group, message)
                    return True
                except Exception as error:  # the rows are committed: a lost push is caught up on reconnect
                    log.warning("live update to %s not sent: %s", group, error)
                    return False

        return sum(await asyncio.gather(*(send(group, message) for group, message in pairs)))

    try:
        return int(PUSHES.run(send_all(), PUSH_TIMEOUT))
    except TimeoutError:  # Redis hangs: the rows are committed, the pages catch up when they reconnect
        log.warning("live updates of %d accounts not sent within %.0fs; going on", len(pairs), PUSH_TIMEOUT)
        return 0


def end_session(session_key: str) -> None:
    """Close the websockets opened with this login session (called when it logs out)."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(session_group(session_key), {"type": "session.ended"})
    except Exception as error:  # logging out must not fail because Redis is away; the socket checks again
        log.warning("could not close the websockets of a session that logged out: %s", error)


async def wait_for_command(account_id: UUID, command_id: UUID, timeout: float = 5.0) -> AuditRow | None:
    """Wait until the projections have applied the events of `command_id`; its audit row, or None on timeout.

    Read-your-writes for the views: join the account's group first, then look in the
    database (so an update that lands in between is not missed), then wait for the push.
    """
    from projections.models import AuditEntry

    async def lookup() -> AuditRow | None:
        entry = await AuditEntry.objects.filter(account_id=account_id, command_id=command_id).afirst()
        if entry is None:
            return None
        return AuditRow(**{f: getattr(entry, f) for f in AuditRow.__dataclass_fields__})

    layer = get_channel_layer()
    assert layer is not None, "CHANNEL_LAYERS is not configured"
    deadline = time.monotonic() + timeout
    channel = await layer.new_channel()
    group = account_group(account_id)
    await layer.group_add(group, channel)
    # Always a receive in flight, cancelled at the end: the pub/sub layer forgets (unsubscribes) a
    # channel only when a receive on it is cancelled; it has no delete_channel().
    receiving = asyncio.ensure_future(layer.receive(channel))
    try:
        if found := await lookup():
            return found
        while (left := deadline - time.monotonic()) > 0:
            done, _ = await asyncio.wait({receiving}, timeout=left)
            if not done:
                break
            message = receiving.result()
            receiving = asyncio.ensure_future(layer.receive(channel))
            if str(command_id) in message.get("command_ids", []):
                return await lookup()
        return await lookup()
    finally:
        await asyncio.sleep(0)  # let the last receive start, so that its cancellation cleans up
        receiving.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):  # the answer is already decided
            await receiving
        await layer.group_discard(group, channel)
