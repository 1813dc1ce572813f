"""The projector parks one account (a gap, a poison record naming it, a row the database refuses) and goes on."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

import orjson
import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError
from django.db import connection
from django.test import Client
from django.urls import reverse

from bank import domain, messages
from bank.command_bus import CommandBus
from bank.config import KafkaSettings
from projections.models import Account, AuditEntry, DeadLetter, ParkedAccount
from tests.helpers import Worker, produce_raw, read_events, read_raw, wait_until
from tests.test_operator_commands import run
from tests.test_projector import caught_up, expected_rows, projected_rows

pytestmark = [pytest.mark.timeout(240), pytest.mark.django_db(transaction=True)]


def open_on_one_partition(bus: CommandBus, owner: str = "alice") -> tuple[UUID, UUID, int]:
    """Two accounts whose events share a partition (commands and events use the same partition number)."""
    seen: dict[int, UUID] = {}
    while True:
        account_id = uuid.uuid4()
        receipt = bus.send(
            messages.CommandEnvelope.new(domain.OpenAccount(account_id, owner, "Current", "EUR"), "user:alice")
        )
        if receipt.partition in seen:
            return seen[receipt.partition], account_id, receipt.partition
        seen[receipt.partition] = account_id


def send(bus: CommandBus, command: domain.Command, actor: str = "user:alice") -> UUID:
    return bus.send(messages.CommandEnvelope.new(command, actor)).command_id


def balance(account_id: UUID) -> int | None:
    account = Account.objects.filter(id=account_id).first()
    return account.balance if account else None


def decodable_events(kafka: KafkaSettings) -> list[messages.EventEnvelope]:
    found = []
    for m in read_raw(kafka, kafka.events_topic):
        try:
            found.append(messages.decode_event(m.value()))
        except messages.PoisonMessage:
            continue
    return found


def settle(kafka: KafkaSettings) -> None:
    wait_until(lambda: caught_up(kafka), 60, 0.3, "the projector to catch up")


def without(events: list[messages.EventEnvelope], foreign: set[UUID]) -> list[messages.EventEnvelope]:
    return [e for e in events if e.event_id not in foreign]


def test_it_parks_an_account_at_a_gap_keeps_projecting_the_others_and_resumes_on_release(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker, projector: Worker, users: dict[str, User]
) -> None:
    parked, neighbour, partition = open_on_one_partition(bus, owner=str(users["alice"].pk))
    wait_until(lambda: balance(parked) == 0 and balance(neighbour) == 0, 60, what="both accounts projected")
    opened = next(e for e in read_events(kafka) if e.account_id == parked).to_dict()
    gap = {**opened, "event_id": str(uuid.uuid4()), "type": "MoneyDeposited", "version": 1, "sequence": 5}
    gap["data"] = {"amount": 1_00, "balance": 1_00}
    gap_offset = produce_raw(kafka, kafka.events_topic, str(parked).encode(), orjson.dumps(gap), partition)
    send(bus, domain.Deposit(parked, 3_00))
    send(bus, domain.Deposit(neighbour, 4_00))

    wait_until(lambda: balance(neighbour) == 4_00, 60, what="the neighbour's deposit after the gap")
    spot = ParkedAccount.objects.get()
    assert (spot.account_id, spot.partition, spot.offset) == (parked, partition, gap_offset)
    assert "sequence gap" in spot.reason
    assert balance(parked) == 0
    assert AuditEntry.objects.filter(account_id=parked).count() == 1
    page = Client()
    page.force_login(users["alice"])
    assert "history is delayed" in page.get(reverse("account", args=[parked])).content.decode()
    assert "history is delayed" not in page.get(reverse("account", args=[neighbour])).content.decode()
    status = run("bank_status")
    assert "parked by the projector: 1" in status
    assert f"{parked}  since" in status and f"{kafka.events_topic}[{partition}]@{gap_offset}: sequence gap" in status

    assert "sent ReleaseAccount" in run("release_account", str(parked))
    # The deposit after the gap is accepted, or rejected if the processor quarantined the account for the
    # foreign record: either way it is an event of the account that was held back, and is applied now.
    wait_until(lambda: not ParkedAccount.objects.exists(), 60, what="the release")
    settle(kafka)
    # The oracle: a hand fold of the log without the foreign record (the processor never counted it).
    assert projected_rows() == expected_rows(
        [e.to_dict() for e in without(read_events(kafka), {UUID(gap["event_id"])})]
    )
    assert AuditEntry.objects.filter(account_id=parked, type="AccountReleased").count() == 1
    assert AuditEntry.objects.filter(account_id=parked).count() == 3  # opened, the deposit's outcome, released
    assert projector.process.poll() is None


def test_it_parks_an_account_named_by_a_poison_record_and_dead_letters_it(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker, projector: Worker, users: dict[str, User]
) -> None:
    parked, neighbour, partition = open_on_one_partition(bus)
    wait_until(lambda: balance(parked) == 0 and balance(neighbour) == 0, 60, what="both accounts projected")
    produce_raw(
        kafka, kafka.events_topic, None, b"\xff not json", partition
    )  # names no account: dead-lettered, nobody parked
    poison = {"type": "MoneyPrinted", "account_id": str(parked), "sequence": 2}
    poison_offset = produce_raw(kafka, kafka.events_topic, str(parked).encode(), orjson.dumps(poison), partition)
    send(bus, domain.Deposit(parked, 7_00))
    send(bus, domain.Deposit(neighbour, 5_00))

    wait_until(lambda: balance(neighbour) == 5_00, 60, what="the neighbour's deposit after the poison")
    spot = ParkedAccount.objects.get()
    assert (spot.account_id, spot.offset) == (parked, poison_offset)
    assert spot.reason.startswith("poison: bad envelope")
    assert balance(parked) == 0
    assert sorted(d.error.split(":")[0] for d in DeadLetter.objects.all()) == ["bad envelope", "not JSON"]
    dead = read_raw(kafka, kafka.deadletters_topic)  # the processor may dead-letter the foreign records too
    assert len(dead) >= 2
    assert {dict(m.headers())["dlq.source.topic"] for m in dead} == {kafka.events_topic.encode()}
    with pytest.raises(CommandError, match="fixed with an upcaster and release_account"):
        run("deadletters", "--requeue", f"{dead[0].partition()}:{dead[0].offset()}")
    listing = run("deadletters")
    assert "parked by the projector: 1" in listing
    # The processor quarantined the account for the same record (its state topic says so).
    assert "quarantined by the processor: 1" in listing
    assert f"  {parked}  foreign record" in listing

    admin = Client()
    admin.force_login(users["carol"])  # staff, superuser: may release
    changelist = reverse("admin:projections_parkedaccount_changelist")
    listed = admin.get(changelist).content.decode()
    assert str(parked) in listed
    assert f"Quarantined by the processor: {parked}" in listed
    answer = admin.post(changelist, {"action": "release", "_selected_action": [str(parked)]}, follow=True)
    assert "Sent 1 ReleaseAccount command(s)" in answer.content.decode()
    wait_until(lambda: not ParkedAccount.objects.exists(), 60, what="the release")
    settle(kafka)
    assert projected_rows() == expected_rows([e.to_dict() for e in decodable_events(kafka)])
    assert AuditEntry.objects.filter(account_id=parked).count() == 3  # opened, the deposit's outcome, released
    assert projector.process.poll() is None


def test_it_projects_long_user_names_and_parks_only_the_account_whose_row_is_refused(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker, projector: Worker
) -> None:
    refused, neighbour, _ = open_on_one_partition(bus)
    wait_until(lambda: balance(refused) == 0 and balance(neighbour) == 0, 60, what="both accounts projected")
    long_name = "user:" + "l" * 150  # the longest Django user name
    send(bus, domain.Deposit(neighbour, 1_00), actor=long_name)
    send(bus, domain.Deposit(refused, 2_00), actor="user:" + "x" * 300)  # longer than the column: refused
    send(bus, domain.Deposit(neighbour, 3_00))

    wait_until(lambda: balance(neighbour) == 4_00, 60, what="the neighbour's deposits")
    spot = ParkedAccount.objects.get()
    assert spot.account_id == refused
    assert spot.reason.startswith("database refused a row")
    assert AuditEntry.objects.get(account_id=neighbour, sequence=2).actor == long_name
    assert balance(refused) == 0
    send(bus, domain.Deposit(refused, 5_00))  # held back while parked
    send(bus, domain.Deposit(neighbour, 6_00))
    wait_until(lambda: balance(neighbour) == 10_00, 60, what="more of the neighbour's deposits")
    assert balance(refused) == 0
    assert AuditEntry.objects.filter(account_id=refused).count() == 1
    assert projector.process.poll() is None


def test_it_stops_instead_of_parking_every_account_when_the_schema_refuses_them_all(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker, workers: Callable[..., Worker], transactional_db: None
) -> None:
    first, second, _ = open_on_one_partition(bus)
    wait_until(lambda: len(decodable_events(kafka)) >= 2, 60, what="the accounts opened")
    with connection.cursor() as cursor:
        # A schema the code does not know (as if a migration were missing): no row of anyone goes in.
        cursor.execute("ALTER TABLE projections_auditentry ADD COLUMN unknown_to_the_code integer NOT NULL")
    try:
        projector = workers("projector-schema", ["run_projector"], kafka)
        wait_until(lambda: projector.process.poll() is not None, 60, what="the projector to stop")
        assert projector.process.returncode == 1
        assert "the database refused the batch, not one account's rows" in projector.log()
        # Only these accounts: another test's projector may still be stopping while this one starts.
        assert not ParkedAccount.objects.filter(account_id__in=[first, second]).exists()
        assert not Account.objects.filter(id__in=[first, second]).exists()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE projections_auditentry DROP COLUMN unknown_to_the_code")


# --- replay follows the projector's parking rules ---

PROJECTION_TABLES = ("projections_account", "projections_auditentry", "projections_transfer")


def parked_spots(schema: str = "public") -> set[tuple[UUID, str, int, int, str]]:
    """The parked accounts, read with plain SQL (`since` is when it happened, not a fact of the log)."""
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT account_id, topic, partition, "offset", reason FROM {schema}.projections_parkedaccount')
        return set(cursor.fetchall())


def park_at_a_gap(kafka: KafkaSettings, bus: CommandBus, owner: str) -> tuple[UUID, int, int, UUID]:
    """An account parked by the live projector at a foreign record that jumps its sequence, and a neighbour
    that goes on; returns the parked account, its partition, the record's offset and its event id."""
    parked, neighbour, partition = open_on_one_partition(bus, owner=owner)
    wait_until(lambda: balance(parked) == 0 and balance(neighbour) == 0, 60, what="both accounts projected")
    opened = next(e for e in read_events(kafka) if e.account_id == parked).to_dict()
    gap = {**opened, "event_id": str(uuid.uuid4()), "type": "MoneyDeposited", "version": 1, "sequence": 5}
    gap["data"] = {"amount": 1_00, "balance": 1_00}
    gap_offset = produce_raw(kafka, kafka.events_topic, str(parked).encode(), orjson.dumps(gap), partition)
    send(bus, domain.Deposit(parked, 3_00))
    send(bus, domain.Deposit(neighbour, 4_00))
    wait_until(lambda: balance(neighbour) == 4_00, 60, what="the neighbour's deposit after the gap")
    settle(kafka)
    assert {(s[0], s[2], s[3]) for s in parked_spots()} == {(parked, partition, gap_offset)}
    return parked, partition, gap_offset, UUID(gap["event_id"])


def verified() -> str:
    """`replay --verify`, which raises CommandError on a difference; every table must be identical."""
    out = run("replay", "--verify", "--no-progress")
    for table in (*PROJECTION_TABLES, "projections_parkedaccount"):
        assert f"{table}: identical to a fresh replay" in out, out
    return out


def test_it_verifies_replay_equal_to_the_live_projections_while_parked_at_a_gap_and_after_release(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker, projector: Worker, users: dict[str, User]
) -> None:
    parked, _, _, _ = park_at_a_gap(kafka, bus, str(users["alice"].pk))
    verified()
    assert len(parked_spots()) == 1, "verify changes nothing"

    run("release_account", str(parked))
    wait_until(lambda: not ParkedAccount.objects.exists(), 60, what="the release")
    settle(kafka)
    verified()
    assert projector.process.poll() is None


def test_it_verifies_replay_equal_to_the_live_projections_while_parked_at_poison_and_after_release(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker, projector: Worker
) -> None:
    parked, neighbour, partition = open_on_one_partition(bus)
    wait_until(lambda: balance(parked) == 0 and balance(neighbour) == 0, 60, what="both accounts projected")
    poison = {"type": "MoneyPrinted", "account_id": str(parked), "sequence": 2}
    poison_offset = produce_raw(kafka, kafka.events_topic, str(parked).encode(), orjson.dumps(poison), partition)
    send(bus, domain.Deposit(parked, 7_00))
    send(bus, domain.Deposit(neighbour, 5_00))
    wait_until(lambda: balance(neighbour) == 5_00, 60, what="the neighbour's deposit after the poison")
    settle(kafka)
    [spot] = parked_spots()
    assert (spot[0], spot[3]) == (parked, poison_offset) and spot[4].startswith("poison: bad envelope")
    # What the projector held back (the deposit's outcome) is not in the replay either.
    assert AuditEntry.objects.filter(account_id=parked).count() == 1
    verified()

    run("release_account", str(parked))
    wait_until(lambda: not ParkedAccount.objects.exists(), 60, what="the release")
    settle(kafka)
    verified()
    assert AuditEntry.objects.filter(account_id=parked).count() == 3  # opened, the deposit's outcome, released


def test_it_rebuilds_the_live_projections_and_the_parked_account_from_an_imperfect_log(
    kafka: KafkaSettings,
    bus: CommandBus,
    processor: Worker,
    projector: Worker,
    workers: Callable[..., Worker],
    users: dict[str, User],
) -> None:
    parked, partition, gap_offset, foreign = park_at_a_gap(kafka, bus, str(users["alice"].pk))
    # The oracle, a hand fold of the log: everything but the parked account's events from the gap on.
    held_back = [
        orjson.loads(m.value())
        for m in read_raw(kafka, kafka.events_topic)
        if not (m.partition() == partition and m.offset() >= gap_offset and m.key() == str(parked).encode())
    ]
    live_rows, live_spots = projected_rows(), parked_spots()
    assert live_rows == expected_rows(held_back)
    # As of a moment after the last event, into a schema of its own: the same rows and spot.
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    try:
        run("replay", "--until", later, "--schema", "asof_parked", "--no-progress")
        assert projected_rows("asof_parked") == live_rows
        assert parked_spots("asof_parked") == live_spots
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP SCHEMA IF EXISTS asof_parked CASCADE")

    projector.stop()
    with connection.cursor() as cursor:  # drop every projection, the parked accounts and the checkpoints
        cursor.execute(f"TRUNCATE {', '.join(PROJECTION_TABLES)}, projections_parkedaccount, projections_checkpoint")
    assert "replayed" in run("replay", "--noinput", "--no-progress")
    assert projected_rows() == live_rows
    assert parked_spots() == live_spots

    # The live projector goes on from the replayed state: the release applies what the parked spot held back.
    workers("projector-after-replay", ["run_projector"], kafka).wait_for_log("projector assigned")
    run("release_account", str(parked))
    wait_until(lambda: not ParkedAccount.objects.exists(), 60, what="the release")
    settle(kafka)
    assert projected_rows() == expected_rows([e.to_dict() for e in without(read_events(kafka), {foreign})])
    verified()
