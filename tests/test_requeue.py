"""Re-queueing dead letters: commands go back to their account's partition; events are never written back."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError
from django.test import Client
from django.urls import reverse

from bank import domain, messages
from bank.command_bus import CommandBus
from bank.config import KafkaSettings
from projections.models import DeadLetter
from tests.helpers import Worker, produce_raw, read_raw, wait_until
from tests.test_operator_commands import run

pytestmark = [pytest.mark.timeout(120), pytest.mark.django_db]


def test_it_requeues_a_command_onto_its_accounts_partition(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker
) -> None:
    account_id = uuid.uuid4()
    home = bus.send(messages.CommandEnvelope.new(domain.OpenAccount(account_id, "alice", "Home", "EUR"), "user:a"))
    elsewhere = (home.partition + 1) % kafka.partitions
    produce_raw(kafka, kafka.commands_topic, str(account_id).encode(), b"{broken", elsewhere)
    wait_until(lambda: read_raw(kafka, kafka.deadletters_topic), 30, what="the dead letter")
    letter = read_raw(kafka, kafka.deadletters_topic)[0]

    assert "re-queued 1" in run("deadletters", "--requeue", f"{letter.partition()}:{letter.offset()}")
    copies = [m for m in read_raw(kafka, kafka.commands_topic) if m.value() == b"{broken"]
    # The command bus's partitioner: the copy lands where the account's commands go, not where the poison was.
    assert sorted(m.partition() for m in copies) == sorted([elsewhere, home.partition])


@pytest.mark.django_db(transaction=True)
def test_it_refuses_to_requeue_a_dead_lettered_event(
    kafka: KafkaSettings, projector: Worker, users: dict[str, User]
) -> None:
    produce_raw(kafka, kafka.events_topic, str(uuid.uuid4()).encode(), b"{not an event", 0)
    wait_until(
        lambda: any(dict(m.headers())["dlq.source.topic"] == kafka.events_topic.encode() for m in dead(kafka)),
        60,
        what="the event's dead letter",
    )
    letter = next(m for m in dead(kafka) if dict(m.headers())["dlq.source.topic"] == kafka.events_topic.encode())
    events_before = len(read_raw(kafka, kafka.events_topic))
    with pytest.raises(CommandError, match=r"only the processor writes .*upcaster and release_account"):
        run("deadletters", "--requeue", f"{letter.partition()}:{letter.offset()}")

    admin = Client()
    admin.force_login(users["carol"])
    letter_row = wait_until(lambda: DeadLetter.objects.first(), 30, what="the projector's DeadLetter row")
    answer = admin.post(
        reverse("admin:projections_deadletter_changelist"),
        {"action": "requeue", "_selected_action": [str(letter_row.pk)]},
        follow=True,
    )
    assert "1 dead letter(s) are events, not re-queued" in answer.content.decode()
    assert len(read_raw(kafka, kafka.events_topic)) == events_before
    assert DeadLetter.objects.get().requeued_at is None


def dead(kafka: KafkaSettings) -> list:  # type: ignore[type-arg]
    return read_raw(kafka, kafka.deadletters_topic)
