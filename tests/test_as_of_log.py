"""The as-of view against the log itself: at random instants, the balance the page shows equals a fold, by
hand, of the raw bank.events records up to the broker's offsets for that instant (offsets-for-times)."""

from __future__ import annotations

import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import User

from bank import domain, messages
from bank.command_bus import CommandBus
from bank.config import KafkaSettings
from bank.kafka import offsets_at
from projections.models import Account, AuditEntry
from tests.helpers import Worker, logged_in, read_raw, send

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]


def wait_for_entries(account_id: uuid.UUID, n: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while AuditEntry.objects.filter(account_id=account_id).count() < n:
        assert time.monotonic() < deadline, f"fewer than {n} entries projected"
        time.sleep(0.1)


def test_it_shows_at_random_instants_what_the_log_held_then(
    users: dict[str, User], kafka: KafkaSettings, bus: CommandBus, processor: Worker, projector: Worker
) -> None:
    alice = users["alice"]
    account_id = uuid.uuid4()
    send(bus, domain.OpenAccount(account_id, str(alice.pk), "Current", "EUR"))
    commands = [domain.Deposit(account_id, 100_00)]
    rng = random.Random(20)
    for _ in range(11):
        kind = rng.choice([domain.Deposit, domain.Withdraw])
        commands.append(kind(account_id, rng.randrange(1, 60) * 100))  # some withdrawals are refused
    for command in commands:
        time.sleep(0.25)
        send(bus, command)
    wait_for_entries(account_id, 1 + len(commands))
    assert Account.objects.get(id=account_id).owner == str(alice.pk)

    records = [r for r in read_raw(kafka, kafka.events_topic) if r.key() == str(account_id).encode()]
    stamps = sorted(r.timestamp()[1] for r in records)
    times = sorted(messages.decode_event(r.value()).occurred_at for r in records)
    client = logged_in(alice)
    checked = 0
    while checked < 6:
        moment_ms = rng.randrange(stamps[0] - 500, stamps[-1] + 500)
        # Away from any record: occurred_at (the page's clock) and the record's timestamp (the broker's) differ by ms.
        if any(abs(moment_ms - s) < 40 for s in stamps):
            continue
        moment = datetime.fromtimestamp(moment_ms / 1000, UTC)
        if any(abs(moment - t) < timedelta(milliseconds=40) for t in times):
            continue
        ends = offsets_at(kafka, kafka.events_topic, moment_ms)
        balance = 0  # the fold by hand: what happened to the money, event by event, before the offsets
        for record in records:
            if record.offset() < ends[record.partition()]:
                event = messages.decode_event(record.value()).event
                if isinstance(event, domain.MoneyDeposited):
                    balance += event.amount
                elif isinstance(event, domain.MoneyWithdrawn):
                    balance -= event.amount
        at = moment.strftime("%Y-%m-%dT%H:%M:%S.%f")  # UTC: the client sends no zone cookie
        body = client.get(f"/accounts/{account_id}/", {"at": at}).content.decode()
        if moment < times[0]:
            assert "not opened yet" in body
        shown = body.split('id="past-balance"')[1].split('data-cents="')[1].split('"')[0]
        assert int(shown) == balance, (at, ends)
        checked += 1
