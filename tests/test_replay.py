"""Replay, verify and status read the projection registry; replay's progress bar counts events."""

from __future__ import annotations

import io
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from bank import domain, messages
from bank.command_bus import CommandBus
from bank.config import KafkaSettings
from bank.kafka import end_offsets
from projections import registry, store
from projections.models import Account, AuditEntry
from projections.registry import Projection
from tests.helpers import Worker, read_raw, wait_until

pytestmark = [pytest.mark.timeout(180), pytest.mark.django_db(transaction=True)]


def run(*args: str, **streams: Any) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, **streams)
    return out.getvalue()


def some_events(kafka: KafkaSettings, bus: CommandBus, accounts: int = 3, deposits: int = 4) -> list[Any]:
    """Commands decided by the processor, each in a Kafka transaction (so the log has markers); the raw events."""
    sent = 0
    for _ in range(accounts):
        account_id = uuid.uuid4()
        bus.send(messages.CommandEnvelope.new(domain.OpenAccount(account_id, "alice", "Main", "EUR"), "user:alice"))
        for amount in range(1, deposits + 1):
            bus.send(messages.CommandEnvelope.new(domain.Deposit(account_id, amount), "user:alice"))
        sent += 1 + deposits
    return wait_until(lambda: (e := read_raw(kafka, kafka.events_topic)) and len(e) >= sent and e, 60, what="events")


def test_it_ends_the_progress_bar_at_100_percent_of_the_events(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker
) -> None:
    events = len(some_events(kafka, bus))
    offsets = sum(end_offsets(kafka, kafka.events_topic).values())
    assert offsets > events, "the log should hold transaction markers, which take offsets but are no events"
    err = io.StringIO()
    out = run("replay", "--noinput", stderr=err)
    assert f"replayed {events} events" in out
    final = re.split(r"[\r\n]", err.getvalue().strip())[-1]  # the bar's last state, e.g. "100%|###| 15.0/15.0 ["
    done = re.search(r"(\d+)%.* ([\d.]+)/([\d.]+) \[", final)
    assert done is not None, err.getvalue()
    assert (int(done[1]), float(done[2]), float(done[3])) == (100, events, events), final


@pytest.fixture
def counts_projection(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A projection the bank does not have (events per type), registered for one test: one entry, one writer."""

    def apply_counts(
        cursor: Any, envelopes: list[messages.EventEnvelope], outcome: Any, memory: Any, lenient: bool
    ) -> None:
        cursor.executemany(
            "INSERT INTO test_event_counts (type, n) VALUES (%s, %s) "
            "ON CONFLICT (type) DO UPDATE SET n = test_event_counts.n + EXCLUDED.n",
            list(Counter(e.type for e in envelopes).items()),
        )

    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE test_event_counts (type text PRIMARY KEY, n bigint NOT NULL)")
    monkeypatch.setitem(registry.PROJECTIONS, "counts", Projection("counts", "test_event_counts", "type", apply_counts))
    yield "test_event_counts"
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE test_event_counts")


def test_it_replays_verifies_and_reports_whatever_the_registry_holds(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker, counts_projection: str
) -> None:
    raw = some_events(kafka, bus)
    oracle = Counter(orjson.loads(m.value())["type"] for m in raw)

    assert f"replayed {len(raw)} events" in run("replay", "--projection", "counts", "--noinput", "--no-progress")
    with connection.cursor() as cursor:
        cursor.execute("SELECT type, n FROM test_event_counts")
        assert dict(cursor.fetchall()) == oracle
        checkpoints = store.load_checkpoints(cursor, kafka.events_topic, ["counts", "accounts"])
    assert {name for name, _ in checkpoints} == {"counts"}
    assert Account.objects.count() == AuditEntry.objects.count() == 0, "only the chosen projection is rebuilt"

    assert "test_event_counts: identical" in run("replay", "--verify", "--projection", "counts", "--no-progress")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE test_event_counts SET n = n + 1 WHERE type = 'MoneyDeposited'")
    out = io.StringIO()
    with pytest.raises(CommandError, match="differ"):
        call_command("replay", "--verify", "--projection", "counts", "--no-progress", stdout=out)
    assert "test_event_counts: DIFFERENT" in out.getvalue()

    status = run("bank_status")
    assert "counts ckpt" in status.splitlines()[0]


def test_it_names_the_known_projections_when_asked_for_another() -> None:
    assert [p.name for p in registry.chosen()] == list(registry.PROJECTIONS)
    with pytest.raises(ValueError, match="known: accounts, audit"):
        registry.chosen(["balances"])
