"""`manage.py deadletters`: list the dead-letter topic and the accounts held back; re-queue dead-lettered commands.

Only commands are re-queued (to bank.commands, keyed and partitioned as the command bus does, so a
command lands on its account's partition). Only the processor writes bank.events: a dead-lettered
event is fixed with an upcaster and `release_account`, never written back.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from bank.kafka import producer, read_to_end
from ops.held import held_back_lines
from ops.terminal import OperatorCommand

EVENTS_REFUSED = (
    "is a dead-lettered event: only the processor writes {topic}; events are fixed with an upcaster and "
    "release_account, not re-queued"
)


class Command(OperatorCommand):
    help = (
        "List bank.deadletters (origin, error, value) and the quarantined/parked accounts, or re-queue "
        "dead-lettered commands with --requeue PARTITION:OFFSET."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--requeue", action="append", default=[], metavar="PARTITION:OFFSET")
        parser.add_argument("--limit", type=int, default=50, help="show at most this many, newest last")

    def handle(self, *args: Any, requeue: list[str], limit: int, **options: Any) -> None:
        kafka = settings.KAFKA
        letters = [m for batch in read_to_end(kafka, kafka.deadletters_topic) for m in batch]
        if not requeue:
            self.stdout.write(f"{len(letters)} dead letter(s) on {kafka.deadletters_topic}")
            for m in letters[-limit:]:
                h = {str(k[0]): _text(k[1]) for k in m.headers() or []}
                value = (m.value() or b"").decode("utf-8", "replace")
                self.stdout.write(
                    f"{m.partition()}:{m.offset()}  from {h.get('dlq.source.topic')}[{h.get('dlq.source.partition')}]"
                    f"@{h.get('dlq.source.offset')}  {h.get('dlq.error')}"
                )
                self.stdout.write(f"    {value[:200]}")  # a line of its own (each write is escaped as one line)
            for line in held_back_lines(kafka):
                self.stdout.write(line)
            return
        wanted = set()
        for spec in requeue:
            partition, _, offset = spec.partition(":")
            if not (partition.isdigit() and offset.isdigit()):
                raise CommandError(f"--requeue {spec!r}: give PARTITION:OFFSET as listed, e.g. 0:12")
            wanted.add((int(partition), int(offset)))
        found = [m for m in letters if (m.partition(), m.offset()) in wanted]
        if len(found) != len(wanted):
            raise CommandError(
                f"not found on {kafka.deadletters_topic}: {sorted(wanted - {(m.partition(), m.offset()) for m in found})}"
            )
        for m in found:
            source = _text(dict((str(h[0]), h[1]) for h in m.headers() or []).get("dlq.source.topic"))
            if source != kafka.commands_topic:
                what = (
                    EVENTS_REFUSED.format(topic=kafka.events_topic)
                    if source == kafka.events_topic
                    else (
                        f"comes from {source or 'an unknown topic'}, not {kafka.commands_topic}: only commands are re-queued"
                    )
                )
                raise CommandError(f"{m.partition()}:{m.offset()} {what}")
        # The command bus's producer settings (murmur2 partitioner): a command keyed by its account
        # lands on its account's partition, behind the commands already there.
        out = producer(kafka)
        for m in found:
            original = [(str(h[0]), h[1]) for h in m.headers() or [] if not str(h[0]).startswith("dlq.")]
            out.produce(kafka.commands_topic, key=m.key(), value=m.value(), headers=original)
        if out.flush(30):
            raise CommandError("Kafka did not confirm the re-queue")
        self.stdout.write(self.style.SUCCESS(f"re-queued {len(found)} message(s)"))


def _text(value: str | bytes | None) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value or ""
