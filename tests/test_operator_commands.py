"""Operators' manage.py commands: status, topic inspection, dead letters, services."""

from __future__ import annotations

import io
import uuid

import pytest
from django.core.management import CommandError, call_command

from bank import domain
from bank.command_bus import CommandBus
from bank.config import KafkaSettings
from tests.helpers import Worker, produce_raw, read_raw, send, wait_until

pytestmark = pytest.mark.timeout(120)


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_it_lists_and_requeues_dead_letters(kafka: KafkaSettings, processor: Worker) -> None:
    produce_raw(kafka, kafka.commands_topic, b"k", b"{broken")
    wait_until(lambda: read_raw(kafka, kafka.deadletters_topic), 30, what="the dead letter")
    listing = run("deadletters")
    assert "1 dead letter(s)" in listing
    assert f"from {kafka.commands_topic}[" in listing
    assert "not JSON" in listing and "{broken" in listing
    letter = read_raw(kafka, kafka.deadletters_topic)[0]
    before = len(read_raw(kafka, kafka.commands_topic))
    assert "re-queued 1" in run("deadletters", "--requeue", f"{letter.partition()}:{letter.offset()}")
    assert len(read_raw(kafka, kafka.commands_topic)) == before + 1
    with pytest.raises(CommandError, match="not found"):
        run("deadletters", "--requeue", "0:999")


@pytest.mark.django_db
def test_it_shows_where_every_partition_stands(kafka: KafkaSettings, bus: CommandBus, processor: Worker) -> None:
    account_id = uuid.uuid4()
    send(bus, domain.OpenAccount(account_id, "alice", "Status", "EUR"))
    wait_until(lambda: read_raw(kafka, kafka.events_topic), 30)
    events = run("inspect_topic", "events", "--account", str(account_id))
    assert "1 message(s)" in events and '"type":"AccountOpened"' in events
    status = run("bank_status")
    assert "commands end" in status and "projector" in status
    assert len([line for line in status.splitlines() if line.strip()[:1].isdigit()]) == kafka.partitions
    assert "dead letters: 0" in status


@pytest.mark.django_db
def test_it_reports_the_services(kafka: KafkaSettings) -> None:
    from django.conf import settings

    from devservices import services

    rows = services.status(settings.VAR_DIR, settings.DATABASE_URL, settings.REDIS_URL, kafka.bootstrap_servers)
    by_name = {row.name: row for row in rows}
    assert by_name["postgres"].up and by_name["postgres"].version
    assert by_name["redis"].up and by_name["redis"].version
    assert by_name["kafka"].up
