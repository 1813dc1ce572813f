"""The projector and replay against the real broker and PostgreSQL: projections always equal the fold of the log."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from bank import domain, messages
from bank.command_bus import CommandBus
from bank.config import KafkaSettings
from bank.kafka import end_offsets
from projections import registry, replay
from projections.models import Account, AuditEntry, Checkpoint
from tests.helpers import (
    ROOT,
    Fold,
    Worker,
    opened_accounts,
    raw_events,
    read_events,
    read_raw,
    send,
    stream_commands,
    wait_until,
    worker_env,
)

pytestmark = [pytest.mark.timeout(240), pytest.mark.django_db(transaction=True)]


def expected_rows(events: list[dict[str, Any]]) -> tuple[dict[UUID, tuple[Any, ...]], dict[UUID, tuple[Any, ...]]]:
    """The rows the projections must hold, folded by hand from the events' JSON (not by the projector's code):
    the account rows of tests.helpers.Fold, one history row per event."""
    audit = {
        UUID(e["event_id"]): (
            *(UUID(e["account_id"]), e["sequence"], e["type"], e["data"].get("amount"), e["data"].get("balance")),
            *(datetime.fromisoformat(e["occurred_at"]), e["actor"], UUID(e["command_id"]), e["data"].get("reason", "")),
        )
        for e in events
    }
    accounts = Fold.of(events).accounts
    return {UUID(k): tuple(v[c] for c in ACCOUNT_COLUMNS) for k, v in accounts.items()}, audit


ACCOUNT_COLUMNS = ("owner", "name", "currency", "balance", "status", "opened_at", "last_sequence", "updated_at")


def projected_rows(schema: str = "public") -> tuple[dict[UUID, tuple[Any, ...]], dict[UUID, tuple[Any, ...]]]:
    """The projection tables, read with plain SQL."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, {', '.join(ACCOUNT_COLUMNS)} FROM {schema}.projections_account")
        accounts = {row[0]: tuple(row[1:]) for row in cursor.fetchall()}
        cursor.execute(
            "SELECT event_id, account_id, sequence, type, amount, balance_after, occurred_at, actor, command_id, reason "
            f"FROM {schema}.projections_auditentry"
        )
        audit = {row[0]: tuple(row[1:]) for row in cursor.fetchall()}
    return accounts, audit


def caught_up(kafka: KafkaSettings) -> bool:
    """True once every partition's checkpoint has reached the last event of bank.events."""
    ends = end_offsets(kafka, kafka.events_topic)
    last_events = {}
    for m in read_raw(kafka, kafka.events_topic):
        last_events[m.partition()] = m.offset() + 1
    positions = {
        c.partition: c.next_offset for c in Checkpoint.objects.filter(topic=kafka.events_topic, projection="audit")
    }
    return all(positions.get(p, 0) >= last_events.get(p, 0) for p in ends)


def wait_caught_up(kafka: KafkaSettings, commands: int, timeout: float = 90) -> list[messages.EventEnvelope]:
    wait_until(lambda: len(read_events(kafka)) >= commands, timeout, 0.5, f"{commands} events")
    wait_until(lambda: caught_up(kafka), timeout, 0.3, "the projector to catch up")
    return read_events(kafka)


def assert_projections_equal_the_log(kafka: KafkaSettings) -> list[dict[str, Any]]:
    events = raw_events(kafka)
    assert projected_rows() == expected_rows(events)
    return events


def test_it_keeps_projections_equal_to_the_fold_of_the_log(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker, projector: Worker
) -> None:
    accounts, ids = opened_accounts(kafka, bus, 8)
    ids |= stream_commands(bus, accounts, 25)
    rejected = send(bus, domain.Withdraw(accounts[0], 10**7))
    ids.add(rejected)
    wait_caught_up(kafka, len(ids))
    events = assert_projections_equal_the_log(kafka)
    assert AuditEntry.objects.get(command_id=rejected).reason == "insufficient_funds"
    assert Account.objects.count() == 8
    assert len(events) == AuditEntry.objects.count() == len(ids)


def test_it_survives_a_sigkill_mid_batch(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker, projector: Worker, workers: Callable[..., Worker]
) -> None:
    accounts, ids = opened_accounts(kafka, bus, 20)
    sender = threading.Thread(target=lambda: ids.update(stream_commands(bus, accounts, 60)))
    sender.start()
    wait_until(lambda: AuditEntry.objects.count() > 200, 60, 0.05, "the projector to be mid-stream")
    projector.signal(signal.SIGKILL)
    projector.process.wait()
    partial = AuditEntry.objects.count()
    workers("projector-restarted", ["run_projector"], kafka, PROJECTOR_BATCH_SIZE="50")
    sender.join()
    wait_caught_up(kafka, len(ids))
    assert partial < len(ids)
    assert_projections_equal_the_log(kafka)


def dumps() -> dict[str, bytes]:
    with connection.cursor() as cursor:
        return {p.table: replay.dump(cursor, p) for p in registry.PROJECTIONS.values()}


def test_it_replays_to_byte_identical_tables(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker, projector: Worker
) -> None:
    accounts, ids = opened_accounts(kafka, bus, 6)
    ids |= stream_commands(bus, accounts, 20)
    ids.add(send(bus, domain.CloseAccount(accounts[1])))  # rejected: balance not zero
    wait_caught_up(kafka, len(ids))
    projector.stop()
    live = dumps()
    assert live["projections_auditentry"].count(b"\n") == len(ids)

    Account.objects.all().delete()
    AuditEntry.objects.all().delete()
    Checkpoint.objects.all().delete()
    call_command("replay", "--noinput", "--no-progress", stdout=io.StringIO())
    assert_projections_equal_the_log(kafka)
    assert dumps() == live

    out = run_manage(kafka, "replay", "--verify", "--no-progress")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "projections_account: identical" in out.stdout
    assert "projections_auditentry: identical" in out.stdout

    Account.objects.filter(id=accounts[2]).update(balance=1)
    out = run_manage(kafka, "replay", "--verify", "--no-progress")
    assert out.returncode != 0
    assert "projections_account: DIFFERENT" in out.stdout
    assert "projections_auditentry: identical" in out.stdout
    with pytest.raises(CommandError, match="differ"):
        call_command("replay", "--verify", "--no-progress", stdout=io.StringIO())


def test_it_replays_one_projection(kafka: KafkaSettings, bus: CommandBus, processor: Worker, projector: Worker) -> None:
    accounts, ids = opened_accounts(kafka, bus, 3)
    ids |= stream_commands(bus, accounts, 5)
    wait_caught_up(kafka, len(ids))
    projector.stop()
    live = dumps()
    AuditEntry.objects.all().delete()
    result = replay.replay(kafka, ["audit"], progress=False)
    assert result.events == len(ids)
    assert_projections_equal_the_log(kafka)
    assert dumps() == live


def run_manage(kafka: KafkaSettings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=worker_env(kafka),
        stdin=subprocess.DEVNULL,  # as from a script: nobody to answer a question
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_it_replays_as_of_a_moment(kafka: KafkaSettings, bus: CommandBus, processor: Worker, projector: Worker) -> None:
    accounts, ids = opened_accounts(kafka, bus, 4)
    ids |= stream_commands(bus, accounts, 6)
    wait_until(lambda: len(read_events(kafka)) >= len(ids), 60)
    time.sleep(1.0)
    moment = datetime.now(UTC)
    time.sleep(1.0)
    later = stream_commands(bus, accounts, 6)
    wait_caught_up(kafka, len(ids) + len(later))

    out = run_manage(kafka, "replay", "--until", moment.isoformat(), "--no-progress")
    assert out.returncode == 0, out.stderr
    before = [e for e in raw_events(kafka) if datetime.fromisoformat(e["occurred_at"]) < moment]
    assert len(before) == len(ids)
    as_of = projected_rows("asof")
    with connection.cursor() as cursor:
        cursor.execute("DROP SCHEMA asof CASCADE")
    assert as_of == expected_rows(before)
    now = {a.id: a.balance for a in Account.objects.all()}
    assert now != {k: v[3] for k, v in as_of[0].items()}, "the later commands should have changed the balances"


def partition_of(kafka: KafkaSettings, account_id: UUID) -> int:
    return next(e for e in read_raw(kafka, kafka.events_topic) if e.key() == str(account_id).encode()).partition()


LISTENER = """
import django, sys, time, json, asyncio
django.setup()
from channels.layers import get_channel_layer
async def main():
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(sys.argv[1], channel)
    print("listening", flush=True)
    while True:
        try:
            message = await asyncio.wait_for(layer.receive(channel), float(sys.argv[2]))
        except asyncio.TimeoutError:
            return
        print(json.dumps({"at": time.time(), "message": message}), flush=True)
asyncio.run(main())
"""


def test_it_pushes_an_update_to_another_process_within_a_second(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker, projector: Worker
) -> None:
    (mine, other), _ = opened_accounts(kafka, bus, 2)
    wait_caught_up(kafka, 2)
    listener = subprocess.Popen(
        [sys.executable, "-c", LISTENER, f"account-{mine}", "4"],
        env=worker_env(kafka),
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert listener.stdout is not None
    assert listener.stdout.readline().strip() == "listening"
    other_command = send(bus, domain.Deposit(other, 5_00))
    command_id = send(bus, domain.Deposit(mine, 12_34))
    lines = [orjson.loads(line) for line in listener.stdout]
    listener.wait()
    assert len(lines) == 1, lines
    message = lines[0]["message"]
    assert message["type"] == "account.updated"
    assert message["account"]["balance"] == 12_34
    assert message["command_ids"] == [str(command_id)]
    assert str(other_command) not in str(lines)
    accepted = next(e for e in read_events(kafka) if e.command_id == command_id).occurred_at.timestamp()
    assert lines[0]["at"] - accepted < 1.0


def test_it_refuses_projections_built_from_another_log_and_a_replay_rebuilds_them(
    kafka: KafkaSettings, bus: CommandBus, processor: Worker, workers: Callable[..., Worker]
) -> None:
    """The database kept projections of an older log (the topic was created again, or another cluster):
    the projector stops with a line saying so instead of skipping the new log's events up to the old
    checkpoints (every page would have stayed "pending")."""
    accounts, ids = opened_accounts(kafka, bus, 2)
    wait_until(lambda: len(read_events(kafka)) >= len(ids), 60, 0.5, "the accounts opened in the log")
    for p in range(kafka.partitions):  # checkpoints far past anything this log holds
        Checkpoint.objects.create(projection="accounts", topic=kafka.events_topic, partition=p, next_offset=1_000_000)
    refused = workers("projector-ahead", ["run_projector"], kafka)
    assert refused.process.wait(timeout=60) == 1
    assert "the projections are ahead of" in refused.log() and "manage.py replay" in refused.log()
    assert Account.objects.count() == 0  # nothing applied, nothing skipped

    unconfirmed = run_manage(kafka, "replay", "--no-progress")  # no terminal to answer on
    assert unconfirmed.returncode == 1 and "pass --noinput" in unconfirmed.stderr
    assert "Traceback" not in unconfirmed.stderr
    result = run_manage(kafka, "replay", "--no-progress", "--noinput")
    assert result.returncode == 0, result.stdout + result.stderr
    again = workers("projector-after-replay", ["run_projector"], kafka)
    again.wait_for_log("projector assigned")
    send(bus, domain.Deposit(accounts[0], 5_00))
    wait_until(lambda: Account.objects.filter(id=accounts[0], balance=5_00).exists(), 60, what="the deposit projected")
    assert Account.objects.count() == 2 and again.process.poll() is None
