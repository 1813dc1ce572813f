"""`manage.py release_account ACCOUNT_ID...`: lift a quarantine or a parked projection, with a ReleaseAccount command."""

from __future__ import annotations

import getpass
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from bank.command_bus import CommandNotConfirmed, get_command_bus
from bank.quarantine import release
from ops.terminal import OperatorCommand


class Command(OperatorCommand):
    help = (
        "Release accounts: the processor decides their commands again and the projector applies their events "
        "from where it parked, accepting the foreign record or gap that held them back (fix poison with an "
        "upcaster first)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("account_ids", nargs="+", metavar="ACCOUNT_ID")

    def handle(self, *args: Any, account_ids: list[str], **options: Any) -> None:
        try:
            ids = [UUID(a) for a in account_ids]
        except ValueError as error:
            raise CommandError(f"not an account id: {error}") from None
        bus = get_command_bus()
        for account_id in ids:
            try:
                receipt = release(bus, account_id, f"admin:{getpass.getuser()}")
            except CommandNotConfirmed as error:
                raise CommandError(f"{account_id}: {error}") from None
            self.stdout.write(
                f"sent ReleaseAccount for {account_id} ({settings.KAFKA.commands_topic}[{receipt.partition}]"
                f"@{receipt.offset}); it takes effect once the processor decides it"
            )
