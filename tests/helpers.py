"""What the tests share: named users' password, reading the real topics back, workers as real processes, and
small factories (commands sent, accounts as the projector writes them). Test modules import from here only.

Processes and bounded waits are devservices/workers.py, which the benchmarks use too; no test imports bench/.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from django.conf import settings

from bank import domain, messages
from bank.config import KafkaSettings
from bank.kafka import read_to_end
from devservices import workers
from devservices.workers import ROOT, wait_until

if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from django.test import Client

    from bank.command_bus import CommandBus
    from projections.models import Account

__all__ = ["LOGS", "PASSWORD", "ROOT", "VAR", "Worker", "wait_until"]

PASSWORD = "correct-horse-battery"
VAR = ROOT / "var" / "test"
LOGS = VAR / "logs"


# --- the topics ---


def read_events(kafka: KafkaSettings) -> list[messages.EventEnvelope]:
    """Every committed event of bank.events, in partition order, as the domain sees them."""
    return [messages.decode_event(m.value()) for batch in read_to_end(kafka, kafka.events_topic) for m in batch]


def read_raw(kafka: KafkaSettings, topic: str) -> list[Any]:
    return [m for batch in read_to_end(kafka, topic) for m in batch]


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
        super().__init__(name, [*(program or workers.manage()), *args], env, LOGS)


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
