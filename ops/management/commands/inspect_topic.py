"""`manage.py inspect_topic`: read a bank topic from the start and print its messages, decoded."""

from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings
from django.core.management.base import CommandParser

from bank import messages
from bank.account_number import account_number
from bank.kafka import read_to_end
from ops.terminal import OperatorCommand

ACCOUNT_FIELDS = {"account_id", "to_account", "from_account"}


def summary(topic: str, value: bytes | None) -> str:
    """What the project's decoder makes of a command or an event, accounts as account numbers."""
    try:
        if topic == "commands":
            command = messages.decode_command(value)
            fields, kind = vars(command.command), command.type
        else:
            event = messages.decode_event(value)
            fields, kind = {"account_id": event.account_id, **vars(event.event)}, f"{event.type} #{event.sequence}"
    except messages.PoisonMessage as error:
        return f"  ! undecodable: {error}"
    shown = [f"{k}={account_number(v) if k in ACCOUNT_FIELDS else v}" for k, v in fields.items()]
    return f"  = {kind}: {', '.join(shown)}"


class Command(OperatorCommand):
    help = "Print the committed messages of bank.commands, bank.events or bank.deadletters (optionally of one account)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("topic", choices=["commands", "events", "deadletters"])
        parser.add_argument("--account", help="only messages with this account id as key")
        parser.add_argument("--transfer", help="only the commands and events of this transfer (its id), on any account")
        parser.add_argument("--limit", type=int, default=100, help="print at most the last N (default 100)")

    def handle(
        self, *args: Any, topic: str, account: str | None, transfer: str | None, limit: int, **options: Any
    ) -> None:
        name = settings.KAFKA.topic(topic)
        key = account.encode() if account else None
        needle = f'"transfer_id":"{transfer}"'.encode() if transfer else None
        shown = [
            m
            for batch in read_to_end(settings.KAFKA, name)
            for m in batch
            if (key is None or m.key() == key) and (needle is None or needle in (m.value() or b""))
        ]
        self.stdout.write(f"{name}: {len(shown)} message(s){' for ' + account if account else ''}")
        for m in shown[-limit:]:
            try:
                value = orjson.dumps(orjson.loads(m.value() or b"")).decode()
            except orjson.JSONDecodeError:
                value = repr(m.value())
            self.stdout.write(f"{m.partition()}:{m.offset()} {value}")
            if topic != "deadletters":
                self.stdout.write(summary(topic, m.value()))
