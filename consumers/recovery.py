"""What the processor knows of its partitions, and how it gets it back on assignment.

The state of an account is the fold of its events. Folding the whole history on every
assignment costs O(events), so the processor also keeps each account's state in the
compacted topic bank.account-state (key = account id), written in the same Kafka transaction
as the events and the consumed offsets (the Kafka Streams changelog pattern): state, events
and offsets commit or abort together. Recovery (`Loader.load`, mode "state"):

1. Read the state partitions to their end; the last record per account wins. Each record
   says up to which bank.events offset it reflects the log (`events_offset`).
2. Read bank.events only from the highest of those offsets on, and fold that tail: events
   the state already reflects (sequence <= version) are skipped, the next one is applied
   (this is also how a log from before the state topic is taken over), and anything else
   (undecodable, a sequence gap) is a foreign record: it quarantines the account it names.

Mode "full" folds the whole history instead: the baseline of bench/recovery.py.
"""

from __future__ import annotations

import binascii
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal
from uuid import UUID

import orjson
from confluent_kafka import Message

from bank import domain, messages
from bank.config import KafkaSettings
from bank.kafka import end_offsets, log_ends, read_to_end

log = logging.getLogger(__name__)

Mode = Literal["state", "full"]
MODES: tuple[Mode, ...] = ("state", "full")
# Command ids remembered per account: a resend of one of the last N commands of its account is
# recognised and skipped; an older one is decided again. Bounded, so memory is O(accounts).
DEFAULT_DEDUP_WINDOW = 20
# The states of changed accounts are written every N transactions (and when idle): fewer writes,
# and a restart folds at most the events of the last N transactions after the states.
DEFAULT_STATE_EVERY = 10
# Format 2 keeps the saga steps' ids apart from the clients' command ids. A format 1 record (one list
# of both kinds) is still read: its ids count as clients' (a step id among them was decided already,
# and steps are never checked against the clients' ids).
STATE_FORMAT = 2
READABLE_FORMATS = (1, 2)


@dataclass
class AccountRecord:
    state: domain.Account
    command_ids: deque[bytes]  # the last N ids (UUID bytes) of clients' commands, oldest first
    quarantine: str = ""  # why its commands are rejected; empty when it is not quarantined
    released_at: int = -1  # bank.events offset before which an operator accepted the foreign records
    # The last N ids of saga steps (domain.STEP_COMMANDS) decided here: a window of their own, so that
    # no id a client picks can make a step look like a duplicate, nor a step a client's command.
    step_ids: deque[bytes] = field(default_factory=deque)

    @classmethod
    def new(cls, account_id: UUID, window: int) -> AccountRecord:
        return cls(domain.Account.new(account_id), deque(maxlen=window), step_ids=deque(maxlen=window))

    def seen(self, command_id: UUID, step: bool) -> bool:
        return command_id.bytes in (self.step_ids if step else self.command_ids)

    def remember(self, command_id: UUID, step: bool) -> None:
        (self.step_ids if step else self.command_ids).append(command_id.bytes)


@dataclass
class Partition:
    """The processor's knowledge of one partition of bank.events."""

    accounts: dict[UUID, AccountRecord] = field(default_factory=dict)
    # Every record of bank.events before this offset is reflected in `accounts`.
    seen: int = 0
    # After a committed transaction, its commit marker is expected at `seen`.
    marker_pending: bool = False
    # Foreign records to dead-letter, and accounts whose state to write, in the next transaction.
    foreign: list[tuple[Message, str]] = field(default_factory=list)
    dirty: set[UUID] = field(default_factory=set)

    def record(self, account_id: UUID, window: int) -> AccountRecord:
        record = self.accounts.get(account_id)
        if record is None:
            record = self.accounts[account_id] = AccountRecord.new(account_id, window)
        return record

    def note_foreign(self, message: Message, error: str, window: int, dead_letter: bool = True) -> None:
        """A record of bank.events that is not part of any account's history: dead-letter it in the
        next transaction and quarantine the account it names (its key, or the account_id inside)."""
        account_id = messages.named_account(message.key(), message.value())
        where = f"{message.topic()}[{message.partition()}]@{message.offset()}"
        if dead_letter:
            self.foreign.append((message, error))
        if account_id is None:
            log.warning("foreign record at %s names no account; dead-lettered and skipped: %s", where, error)
            return
        record = self.record(account_id, window)
        record.quarantine = f"foreign record at {where}: {error}"[:300]
        self.dirty.add(account_id)
        log.warning("foreign record at %s: account %s quarantined until released: %s", where, account_id, error)


def fold_record(partition: Partition, message: Message, window: int, dead_letter: bool = True) -> bool:
    """Fold one record of bank.events into `partition`. False if it was foreign."""
    try:
        envelope = messages.decode_event(message.value())
    except messages.PoisonMessage as error:
        partition.note_foreign(message, str(error), window, dead_letter)
        return False
    record = partition.record(envelope.account_id, window)
    version = record.state.version
    if envelope.sequence <= version:
        return True  # already in the state (written in the same transaction), or a duplicate
    if envelope.sequence != version + 1:
        partition.note_foreign(message, f"sequence {envelope.sequence} does not follow {version}", window, dead_letter)
        return False
    record.state = domain.evolve(record.state, envelope.event)
    record.remember(envelope.command_id, domain.caused_by_step(envelope.event))
    if isinstance(envelope.event, domain.AccountReleased):
        record.quarantine = ""
    partition.dirty.add(envelope.account_id)  # the state topic is behind on this account: write it next time
    return True


# --- the state topic's records ---


def encode_state(record: AccountRecord, events_offset: int) -> bytes:
    state = record.state
    return orjson.dumps(
        {
            "format": STATE_FORMAT,
            "account_id": str(state.account_id),
            "version": state.version,
            "status": state.status.value,
            "owner": state.owner,
            "name": state.name,
            "currency": state.currency,
            "balance": state.balance,
            # Money in flight: the transfers this account sent that are not completed or refunded yet.
            "transfers": {str(t): [str(f.to_account), f.amount] for t, f in state.transfers.items()},
            "quarantine": record.quarantine,
            "released_at": record.released_at,
            "events_offset": events_offset,
            "command_ids": _ids(record.command_ids),
            "step_ids": _ids(record.step_ids),
        }
    )


def _ids(ids: Iterable[bytes]) -> str:
    return binascii.b2a_base64(b"".join(ids), newline=False).decode()


def _window(text: str, window: int) -> deque[bytes]:
    ids = binascii.a2b_base64(text)  # base64.b64decode's argument checks cost more than this
    if len(ids) % 16:
        raise ValueError("command ids are not whole UUIDs")
    return deque((ids[i : i + 16] for i in range(0, len(ids), 16)), maxlen=window)


def decode_state(value: bytes, window: int) -> tuple[AccountRecord, int]:
    """(the record, the bank.events offset it reflects); ValueError/KeyError/TypeError when unreadable."""
    body = orjson.loads(value)
    if body["format"] not in READABLE_FORMATS:
        raise ValueError(f"unknown state format {body['format']!r}")
    state = domain.Account(
        account_id=UUID(body["account_id"]),
        version=int(body["version"]),
        status=domain.Status(body["status"]),
        owner=body["owner"],
        name=body["name"],
        currency=body["currency"],
        balance=int(body["balance"]),
        # A state written before transfers existed had none in flight.
        transfers={
            UUID(t): domain.InFlight(UUID(to), int(amount)) for t, (to, amount) in body.get("transfers", {}).items()
        },
    )
    command_ids = _window(body["command_ids"], window)
    step_ids = _window(body["step_ids"] if body["format"] >= 2 else "", window)
    record = AccountRecord(state, command_ids, str(body["quarantine"]), int(body["released_at"]), step_ids)
    return record, int(body["events_offset"])


# --- loading ---


@dataclass
class LoadCounts:
    """What one load read: the test of recovery in O(accounts) asserts on these."""

    partitions: list[int] = field(default_factory=list)
    states: int = 0  # state records read
    events: int = 0  # bank.events records read (the tail, or the whole history in mode "full")
    accounts: int = 0
    foreign: int = 0
    seconds: float = 0.0


class Loader:
    def __init__(
        self,
        kafka: KafkaSettings,
        mode: Mode = "state",
        window: int = DEFAULT_DEDUP_WINDOW,
        stop: Callable[[], bool] | None = None,
        max_stall: float = 120.0,
    ) -> None:
        self.kafka = kafka
        self.mode = mode
        self.window = window
        self.stop = stop
        self.max_stall = max_stall

    def load(self, partitions: Iterable[int]) -> tuple[dict[int, Partition], LoadCounts]:
        """The partitions' accounts: the state topic plus the tail of events (mode "state"), or every event.

        Raises ReadInterrupted when `stop()` turns true, LogStalled when the log does not move.
        """
        wanted = sorted(set(partitions))
        counts = LoadCounts(wanted)
        loaded = {p: Partition() for p in wanted}
        if not wanted:
            return loaded, counts
        started = time.monotonic()
        starts = {p: 0 for p in wanted}
        if self.mode == "state":
            starts = self._read_states(loaded, counts)
        # The end is taken before reading, open transactions included: a zombie instance's open
        # transaction is waited out (committed or aborted) before any command is decided. The
        # processor owns these partitions now, so only a foreign producer can write after it.
        ends = log_ends(self.kafka, self.kafka.events_topic, wanted)
        for batch in read_to_end(
            self.kafka,
            self.kafka.events_topic,
            ends=ends,
            starts=starts,
            stop=self.stop,
            max_stall=self.max_stall,
        ):
            counts.events += len(batch)
            for message in batch:
                if not fold_record(loaded[message.partition() or 0], message, self.window, self.mode == "state"):
                    counts.foreign += 1
        for p, partition in loaded.items():
            partition.seen = ends[p]
        counts.accounts = sum(len(partition.accounts) for partition in loaded.values())
        counts.seconds = time.monotonic() - started
        log.info(
            "loaded partitions %s (%s): %d accounts from %d state records and %d events (from offsets %s) in %.2fs",
            wanted,
            "state topic + tail of events" if self.mode == "state" else "full history",
            counts.accounts,
            counts.states,
            counts.events,
            starts,
            counts.seconds,
        )
        return loaded, counts

    def _read_states(self, loaded: dict[int, Partition], counts: LoadCounts) -> dict[int, int]:
        """Fill `loaded` from the state topic; per partition, the bank.events offset to read the tail from."""
        latest: dict[int, dict[bytes, bytes | None]] = {p: {} for p in loaded}
        for batch in read_to_end(
            self.kafka, self.kafka.state_topic, list(loaded), stop=self.stop, max_stall=self.max_stall
        ):
            counts.states += len(batch)
            for message in batch:
                # Only the last record per account counts: decode just those.
                latest[message.partition() or 0][message.key() or b""] = message.value()
        starts = {}
        events_ends = end_offsets(self.kafka, self.kafka.events_topic, list(loaded))
        for p, records in latest.items():
            offset = 0
            try:
                for key, value in records.items():
                    # The processor writes neither tombstones nor one account's state under another key, and
                    # reflects only offsets the log has: such a record is foreign, and would forget an account,
                    # overwrite its state or skip its events.
                    if value is None:
                        raise ValueError(f"a tombstone for key {key[:100]!r}")
                    record, reflected = decode_state(value, self.window)
                    if key != str(record.state.account_id).encode():
                        raise ValueError(f"the state of {record.state.account_id} under key {key[:100]!r}")
                    if not 0 <= reflected <= events_ends[p]:
                        raise ValueError(f"events offset {reflected} outside the log (end {events_ends[p]})")
                    loaded[p].accounts[record.state.account_id] = record
                    offset = max(offset, reflected)
            except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as error:
                # Someone else wrote there. The events are the truth: fold this partition's whole history.
                log.warning(
                    "unreadable record in %s[%d] (%s): folding all of bank.events[%d]",
                    self.kafka.state_topic,
                    p,
                    error,
                    p,
                )
                loaded[p].accounts.clear()
                offset = 0
            starts[p] = offset
        return starts
