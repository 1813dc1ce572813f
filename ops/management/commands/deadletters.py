"""`manage.py deadletters`: list the dead-letter topic, and re-queue a message to where it came from."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from bank.kafka import producer, read_to_end


class Command(BaseCommand):
    help = "List bank.deadletters (origin, error, value), or re-queue messages with --requeue PARTITION:OFFSET."

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
                    f"@{h.get('dlq.source.offset')}  {h.get('dlq.error')}\n    {value[:200]}"
                )
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
        out = producer(kafka)
        for m in found:
            headers = [(str(h[0]), h[1]) for h in m.headers() or []]
            source = next((v for k, v in headers if k == "dlq.source.topic"), None)
            if not isinstance(source, bytes):
                raise CommandError(f"{m.partition()}:{m.offset()} has no dlq.source.topic header")
            original = [(k, v) for k, v in headers if not k.startswith("dlq.")]
            out.produce(source.decode(), key=m.key(), value=m.value(), headers=original)
        if out.flush(30):
            raise CommandError("Kafka did not confirm the re-queue")
        self.stdout.write(self.style.SUCCESS(f"re-queued {len(found)} message(s)"))


def _text(value: str | bytes | None) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value or ""
