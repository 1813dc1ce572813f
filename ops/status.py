"""Where the bank stands, per partition: what `bank_status` prints and the admin's operations page shows.

One function gathers the figures so that the terminal and the page can never disagree:
log ends of bank.commands and bank.events, the processor's and the projector's committed
positions (the broker's offsets of their consumer groups) and lag, the projections'
checkpoints, and the dead letters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import TopicPartition
from django.db import connection

from bank.config import KafkaSettings
from bank.kafka import end_offsets, reader
from projections import generations, registry, store
from projections.models import DeadLetter


@dataclass(frozen=True)
class PartitionStatus:
    partition: int
    commands_end: int
    processor: int | None  # the group's committed offset; None when it never committed
    events_end: int
    projector: int | None
    checkpoints: dict[str, int | None]

    @property
    def processor_lag(self) -> int:
        return lag(self.commands_end, self.processor)

    @property
    def projector_lag(self) -> int:
        return lag(self.events_end, self.projector)


@dataclass(frozen=True)
class BankStatus:
    partitions: list[PartitionStatus]
    projections: tuple[str, ...]
    dead_letters_on_topic: int
    dead_letters_recorded: int
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def processor_lag(self) -> int:
        return sum(p.processor_lag for p in self.partitions)

    @property
    def projector_lag(self) -> int:
        return sum(p.projector_lag for p in self.partitions)


def lag(end: int, position: int | None) -> int:
    return end if position is None else max(0, end - position)


def group_positions(kafka: KafkaSettings, group: str, topic: str, partitions: list[int]) -> dict[int, int]:
    consumer = reader(kafka, **{"group.id": group})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in committed if tp.offset >= 0}


def gather(kafka: KafkaSettings) -> BankStatus:
    """The figures, read now from the broker and the database."""
    commands_end = end_offsets(kafka, kafka.commands_topic)
    events_end = end_offsets(kafka, kafka.events_topic)
    processor = group_positions(kafka, kafka.group("processor"), kafka.commands_topic, sorted(commands_end))
    projector = group_positions(kafka, kafka.group("projector"), kafka.events_topic, sorted(events_end))
    with connection.cursor() as cursor:
        checkpoints = store.load_checkpoints(cursor, kafka.events_topic, registry.PROJECTIONS)
    rows = [
        PartitionStatus(
            partition=p,
            commands_end=commands_end[p],
            processor=processor.get(p),
            events_end=events_end.get(p, 0),
            projector=projector.get(p),
            checkpoints={name: checkpoints.get((name, p)) for name in registry.PROJECTIONS},
        )
        for p in sorted(commands_end)
    ]
    return BankStatus(
        partitions=rows,
        projections=tuple(registry.PROJECTIONS),
        dead_letters_on_topic=sum(end_offsets(kafka, kafka.deadletters_topic).values()),
        dead_letters_recorded=DeadLetter.objects.count(),
    )


def rebuild_lines(kafka: KafkaSettings) -> list[str]:
    """The live generation of each projection, and the running (or last) rebuild's phase and figures."""
    lines = generations.describe(kafka)
    found = generations.running_rebuild()
    if found is None:
        return lines
    figures = f"{found['events_read']:,}/{found['events_total']:,} offsets read, {found['rate']:,.0f} events/s"
    if found["eta"] is not None and found["phase"] == "fill":
        figures += f", ETA {found['eta']:.0f}s"
    if found["lag"] is not None:
        figures += f", catch-up lag {found['lag']:,}"
    line = f"rebuild g{found['generation']} of {found['projections']}: {found['phase']} ({figures})"
    if found["message"]:
        line += f"; {found['message']}"
    return [*lines, line + f", updated {found['updated_at']:%H:%M:%S}"]
