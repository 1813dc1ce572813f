"""What the tests share: named users' password, reading and writing the real topics as raw records, one fold of
the events by hand (the oracle), workers as real processes, and small factories (commands sent, accounts as the
projector writes them). Test modules import from here only.

Processes and bounded waits are devservices/workers.py, which the benchmarks use too; no test imports bench/.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import orjson
from django.conf import settings

from bank import domain, messages
from bank.config import KafkaSettings
from bank.kafka import producer, read_to_end
from devservices import workers
from devservices.workers import ROOT, manage, wait_until

if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from django.test import Client

    from bank.command_bus import CommandBus
    from projections.models import Account

__all__ = [
    "LOGS",
    "PASSWORD",
    "ROOT",
    "VAR",
    "Worker",
    "manage",
    "wait_until",
]  # ROOT, manage, wait_until: devservices.workers

PASSWORD = "correct-horse-battery"
VAR = ROOT / "var" / "test"
LOGS = VAR / "logs"


# --- the topics ---


def read_events(kafka: KafkaSettings) -> list[messages.EventEnvelope]:
    """Every committed event of bank.events, in partition order, as the domain sees them."""
    return [messages.decode_event(m.value()) for batch in read_to_end(kafka, kafka.events_topic) for m in batch]


def read_raw(kafka: KafkaSettings, topic: str) -> list[Any]:
    return [m for batch in read_to_end(kafka, topic) for m in batch]


def raw_events(kafka: KafkaSettings) -> list[dict[str, Any]]:
    """Every committed event of bank.events as plain JSON (orjson over the values, not the project's decoding)."""
    return [orjson.loads(m.value()) for m in read_raw(kafka, kafka.events_topic)]


def produce_raw(kafka: KafkaSettings, topic: str, key: bytes | None, value: bytes, partition: int | None = None) -> int:
    """One record of the bytes given, as a foreign or careless client writes it; returns its offset.

    Without `partition`, the key picks it with the command bus's partitioner (murmur2), as the bank's own records.
    """
    offsets: list[int] = []
    out = producer(kafka, **{"client.id": "test-raw"})
    where = {} if partition is None else {"partition": partition}
    out.produce(topic, key=key, value=value, on_delivery=lambda e, m: offsets.append(m.offset()), **where)
    assert out.flush(10) == 0 and offsets, f"the raw record to {topic} was not delivered"
    return offsets[0]


# --- the oracle: bank.events folded by hand ---


@dataclass
class Fold:
    """bank.events folded by hand, from plain JSON (never the project's evolve or projection code): balances from
    the amounts, the balance each account's events state, money in flight per (source, transfer id), the account
    rows the projections must hold."""

    balances: Counter[str] = field(default_factory=Counter)
    reported: dict[str, int] = field(default_factory=dict)  # the last balance each account's events state
    deposited: int = 0
    withdrawn: int = 0
    debits: Counter[tuple[str, str]] = field(default_factory=Counter)
    ends: Counter[tuple[str, str]] = field(default_factory=Counter)
    in_flight: int = 0
    sequences: dict[str, int] = field(default_factory=dict)
    gaps: list[dict[str, Any]] = field(default_factory=list)  # events whose sequence is not the previous + 1
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)  # from AccountOpened on: the row's fields
    events: int = 0

    @classmethod
    def of(cls, events: list[dict[str, Any]]) -> Fold:
        fold = cls()
        for e in events:
            fold.add(e)
        return fold

    def add(self, e: dict[str, Any]) -> None:
        self.events += 1
        account, data, kind = e["account_id"], e["data"], e["type"]
        if e["sequence"] != self.sequences.get(account, 0) + 1:
            self.gaps.append(e)
        self.sequences[account] = e["sequence"]
        amount = data.get("amount") or 0
        if kind == "MoneyDeposited":
            self.balances[account] += amount
            self.deposited += amount
        elif kind == "MoneyWithdrawn":
            self.balances[account] -= amount
            self.withdrawn += amount
        elif kind == "TransferDebited":
            self.balances[account] -= amount
            self.in_flight += amount
            self.debits[(account, data["transfer_id"])] += 1
        elif kind == "TransferCredited":
            self.balances[account] += amount
            self.in_flight -= amount
        elif kind == "TransferRefunded":
            self.balances[account] += amount
            self.in_flight -= amount
            self.ends[(account, data["transfer_id"])] += 1
        elif kind == "TransferCompleted":
            self.ends[(account, data["transfer_id"])] += 1
        if "balance" in data:
            self.reported[account] = data["balance"]
        self._row(e)

    def _row(self, e: dict[str, Any]) -> None:
        """An account row starts at AccountOpened and follows every later event of its account: balance from the
        event's `balance`, closed at AccountClosed."""
        account, data, moment = e["account_id"], e["data"], datetime.fromisoformat(e["occurred_at"])
        if e["type"] == "AccountOpened":
            self.accounts[account] = {key: data.get(key) for key in ("owner", "name", "currency")}
            self.accounts[account] |= {"balance": 0, "status": "open", "opened_at": moment}
        if row := self.accounts.get(account):
            row |= {"last_sequence": e["sequence"], "updated_at": moment}
            if "balance" in data:
                row["balance"] = data["balance"]
            if e["type"] == "AccountClosed":
                row["status"] = "closed"

    def open_transfers(self) -> list[tuple[str, str]]:
        """Transfers debited more often than they ended (completed or refunded)."""
        return [key for key, n in self.debits.items() if self.ends[key] < n]

    def check(self) -> None:
        """Sequences 1..N per account, money conserved to the cent, nothing in flight, every transfer ended once,
        no balance below zero, balances as the events report them."""
        assert not self.gaps, f"gap or repeat: {self.gaps[:3]}"
        assert not self.open_transfers(), f"transfers that never ended: {self.open_transfers()[:5]}"
        assert all(self.ends[k] == n for k, n in self.debits.items()), "a transfer ended twice"
        assert self.in_flight == 0, self.in_flight
        assert sum(self.balances.values()) == self.deposited - self.withdrawn
        assert all(v >= 0 for v in self.balances.values()), "a balance went negative"
        assert {a: v for a, v in self.balances.items() if a in self.reported} == self.reported


# --- workers ---


def database_url() -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


def worker_env(kafka: KafkaSettings, **extra: str) -> dict[str, str]:
    """A worker on the test's topics, the session's Redis and the test database pytest-django made."""
    return workers.worker_env(
        kafka,
        database_url(),
        settings.REDIS_URL,
        CHANNELS_PREFIX="test",
        KAFKA_SESSION_TIMEOUT_MS="2000",
        PROCESSOR_TRANSACTION_TIMEOUT_MS="5000",
        # No metrics endpoints unless a test asks: fixed ports would clash between workers.
        **({"PROCESSOR_METRICS_PORT": "0", "PROJECTOR_METRICS_PORT": "0"} | extra),
    )


class Worker(workers.Process):
    """A manage.py worker (or `program`) in its own process, its output in var/test/logs/<name>.log."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], program: list[str] | None = None) -> None:
        super().__init__(name, [*(program or manage()), *args], env, LOGS)


# --- factories ---


def send(bus: CommandBus, command: domain.Command, actor: str = "user:alice", command_id: UUID | None = None) -> UUID:
    return bus.send(messages.CommandEnvelope.new(command, actor, command_id)).command_id


def opened_accounts(kafka: KafkaSettings, bus: CommandBus, n: int) -> tuple[list[UUID], set[UUID]]:
    """`n` accounts opened by commands: (their ids, the command ids)."""
    accounts, ids = [], set()
    for _ in range(n):
        account_id = uuid.uuid4()
        ids.add(send(bus, domain.OpenAccount(account_id, "alice", "Current", "EUR")))
        accounts.append(account_id)
    return accounts, ids


def stream_commands(bus: CommandBus, accounts: list[UUID], rounds: int, pause: float = 0.0) -> set[UUID]:
    """Alternate deposits and withdrawals over the accounts; returns the command ids sent."""
    sent: set[UUID] = set()
    for i in range(rounds):
        for account_id in accounts:
            command: domain.Command = domain.Deposit(account_id, 10_00) if i % 3 else domain.Withdraw(account_id, 7_00)
            sent.add(send(bus, command))
        if pause:
            time.sleep(pause)
    return sent


def account_of(user: User, name: str = "Current", balance: int = 0) -> Account:
    """An account as the projector would have written it (for tests about the views and the websocket)."""
    from projections.models import Account

    now = datetime.now(UTC)
    return Account.objects.create(
        id=uuid.uuid4(),
        owner=str(user.pk),
        name=name,
        currency="EUR",
        balance=balance,
        status="open",
        opened_at=now,
        last_sequence=1,
        updated_at=now,
    )


def logged_in(user: User, **kwargs: bool) -> Client:
    """Django's test client (`kwargs` such as enforce_csrf_checks), logged in as `user`."""
    from django.test import Client

    client = Client(**kwargs)
    assert client.login(username=user.username, password=PASSWORD)
    return client
