"""`manage.py bank_status`: where every partition stands — log ends, group positions and lag, checkpoints, dead letters."""

from __future__ import annotations

from typing import Any

from confluent_kafka import TopicPartition
from django.conf import settings
from django.core.management.base import BaseCommand

from bank.kafka import end_offsets, reader
from ops.held import held_back_lines
from projections import registry, store
from projections.models import DeadLetter


def group_positions(group: str, topic: str, partitions: list[int]) -> dict[int, int]:
    consumer = reader(settings.KAFKA, **{"group.id": group})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in committed if tp.offset >= 0}


class Command(BaseCommand):
    help = (
        "Per partition: log end offsets, consumer group positions and lag, projection checkpoints; dead letters; "
        "quarantined and parked accounts."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        kafka = settings.KAFKA
        topics = {"commands": kafka.commands_topic, "events": kafka.events_topic}
        ends = {name: end_offsets(kafka, topic) for name, topic in topics.items()}
        groups = {"processor": "commands", "projector": "events"}
        positions = {g: group_positions(kafka.group(g), topics[t], sorted(ends[t])) for g, t in groups.items()}
        checkpoints = store.load_checkpoints(_cursor(), kafka.events_topic, registry.PROJECTIONS)
        header = f"{'part':>4} {'commands end':>12} {'processor':>10} {'lag':>6} {'events end':>11} {'projector':>10} {'lag':>6}"
        header += "".join(f" {p + ' ckpt':>14}" for p in registry.PROJECTIONS)
        self.stdout.write(header)
        for p in sorted(ends["commands"]):
            proc = positions["processor"].get(p)
            proj = positions["projector"].get(p)
            line = (
                f"{p:>4} {ends['commands'][p]:>12} {_show(proc):>10} {_lag(ends['commands'][p], proc):>6} "
                f"{ends['events'].get(p, 0):>11} {_show(proj):>10} {_lag(ends['events'].get(p, 0), proj):>6}"
            )
            line += "".join(f" {_show(checkpoints.get((name, p))):>14}" for name in registry.PROJECTIONS)
            self.stdout.write(line)
        dead_topic = sum(end_offsets(kafka, kafka.deadletters_topic).values())
        self.stdout.write(
            f"dead letters: {dead_topic} on {kafka.deadletters_topic}, {DeadLetter.objects.count()} recorded by the projector"
        )
        for line in held_back_lines(kafka):
            self.stdout.write(line)


def _cursor() -> Any:
    from django.db import connection

    return connection.cursor()


def _show(value: int | None) -> str:
    return "-" if value is None else str(value)


def _lag(end: int, position: int | None) -> str:
    return str(end) if position is None else str(max(0, end - position))
