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


def transfers_done(kafka: KafkaSettings, count: int) -> bool:
    return sum(1 for m in read_raw(kafka, kafka.events_topic) if b'"TransferCompleted"' in m.value()) >= count


@pytest.mark.django_db(transaction=True)
def test_it_shows_no_lag_on_an_idle_bank_after_transfers(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker, projector: Worker
) -> None:
    # A transfer's steps go to bank.commands in the processor's transactions, so their partitions end with a
    # transaction marker after the last command, as bank.events does after every event: markers are not work.
    accounts = [uuid.uuid4() for _ in range(6)]
    for account_id in accounts:
        send(bus, domain.OpenAccount(account_id, "alice", "Idle", "EUR"))
        send(bus, domain.Deposit(account_id, 10_00))
    for i, source in enumerate(accounts):
        send(bus, domain.TransferMoney(source, uuid.uuid4(), accounts[(i + 1) % len(accounts)], 1_00))
    wait_until(lambda: transfers_done(kafka, len(accounts)), 60, what="the transfers completed")
    from ops.status import gather

    def idle() -> bool:
        status = gather(kafka)
        return status.processor_lag == 0 and status.projector_lag == 0

    wait_until(idle, 60, 0.5, "lag 0 on an idle bank")
    rows = [line.split() for line in run("bank_status").splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == kafka.partitions
    assert {(row[3], row[6]) for row in rows} == {("0", "0")}  # processor lag, projector lag
    status = gather(kafka)
    assert any(p.commands_end > 0 for p in status.partitions)  # the steps were there to be counted


@pytest.mark.django_db
def test_it_reports_the_services(kafka: KafkaSettings) -> None:
    from django.conf import settings

    from devservices import services

    rows = services.status(settings.VAR_DIR, settings.DATABASE_URL, settings.REDIS_URL, kafka.bootstrap_servers)
    by_name = {row.name: row for row in rows}
    assert by_name["postgres"].up and by_name["postgres"].version
    assert by_name["redis"].up and by_name["redis"].version
    assert by_name["kafka"].up


HOSTILE_TEXT = "\x1b[2J\x1b]0;pwned\x07line one\nFAKE: all clear\r\u202eevil\u2066\u2028"


def test_it_escapes_control_characters_in_what_operators_read(kafka: KafkaSettings, bus: CommandBus) -> None:
    from ops.terminal import safe

    assert safe(HOSTILE_TEXT) == "\\x1b[2J\\x1b]0;pwned\\x07line one\\x0aFAKE: all clear\\x0d\\u202eevil\\u2066\\u2028"
    assert safe("Épargne · 100 €") == "Épargne · 100 €"
    account_id = uuid.uuid4()
    send(bus, domain.OpenAccount(account_id, "alice", HOSTILE_TEXT, "EUR"))  # a customer's account name
    shown = run("inspect_topic", "commands", "--account", str(account_id))
    assert "pwned" in shown and "FAKE: all clear" in shown
    assert not [c for c in shown if c in "\x1b\x07\r\u202e\u2066\u2028"], repr(shown)
    assert not [line for line in shown.splitlines() if line.startswith("FAKE")]
