"""`manage.py inspect_topic`: read a bank topic from the start and print its messages, decoded."""

from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from bank.kafka import read_to_end


class Command(BaseCommand):
    help = "Print the committed messages of bank.commands, bank.events or bank.deadletters (optionally of one account)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("topic", choices=["commands", "events", "deadletters"])
        parser.add_argument("--account", help="only messages with this account id as key")
        parser.add_argument("--limit", type=int, default=100, help="print at most the last N (default 100)")

    def handle(self, *args: Any, topic: str, account: str | None, limit: int, **options: Any) -> None:
        name = settings.KAFKA.topic(topic)
        key = account.encode() if account else None
        shown = [m for batch in read_to_end(settings.KAFKA, name) for m in batch if key is None or m.key() == key]
        self.stdout.write(f"{name}: {len(shown)} message(s){' for ' + account if account else ''}")
        for m in shown[-limit:]:
            try:
                value = orjson.dumps(orjson.loads(m.value() or b"")).decode()
            except orjson.JSONDecodeError:
                value = repr(m.value())
            self.stdout.write(f"{m.partition()}:{m.offset()} {value}")
