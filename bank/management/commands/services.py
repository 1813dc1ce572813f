"""`manage.py services up|down|status`: the local Kafka, PostgreSQL and Redis."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from bank.local import services
from bank.local.process import ServiceError


class Command(BaseCommand):
    help = "Start (up), stop (down) or report (status) the local Kafka, PostgreSQL and Redis."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["up", "down", "status"])

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        bootstrap = settings.KAFKA.bootstrap_servers
        try:
            if action == "up":
                services.up(
                    settings.VAR_DIR, settings.DATABASE_URL, settings.REDIS_URL, bootstrap, say=self.stdout.write
                )
            elif action == "down":
                services.down(settings.VAR_DIR, bootstrap)
                self.stdout.write("kafka: stopped (PostgreSQL and Redis are shared system services and keep running)")
            else:
                rows = services.status(settings.VAR_DIR, settings.DATABASE_URL, settings.REDIS_URL, bootstrap)
                for row in rows:
                    self.stdout.write(row.line())
                if not all(row.up for row in rows):
                    raise CommandError("some services are down: run `manage.py services up`")
        except ServiceError as error:
            raise CommandError(str(error)) from None
