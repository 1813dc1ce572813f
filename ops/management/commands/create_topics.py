"""`manage.py create_topics`: the bank's topics, created idempotently from settings."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from bank.kafka import ensure_topics


class Command(BaseCommand):
    help = "Create bank.commands, bank.events (kept forever) and bank.deadletters when missing."
    requires_system_checks: list[str] = []

    def handle(self, *args: Any, **options: Any) -> None:
        kafka = settings.KAFKA
        created = ensure_topics(kafka)
        for name in (kafka.commands_topic, kafka.events_topic, kafka.deadletters_topic, kafka.state_topic):
            state = "created" if name in created else "exists"
            self.stdout.write(
                f"{name}: {state} ({kafka.partitions} partitions, replication {kafka.replication_factor})"
            )
