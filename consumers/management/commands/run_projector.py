"""`manage.py run_projector`: keep the projections up to date from bank.events, until SIGTERM or Ctrl-C."""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from bank.connection import check_connection
from consumers import health
from consumers.projector import Projector, ProjectorFailed, log
from consumers.worker import Shutdown, run_worker


class Command(BaseCommand):
    help = "Run the projector (consumer group bank-projector)."

    def handle(self, *args: Any, **options: Any) -> None:
        try:  # a refused password or an untrusted certificate stops here, in one line
            check_connection(settings.KAFKA)
        except ImproperlyConfigured as error:
            raise CommandError(str(error)) from None
        shutdown = Shutdown().install()
        projector = Projector(
            settings.KAFKA,
            batch_size=settings.PROJECTOR_BATCH_SIZE,
            batch_wait=settings.PROJECTOR_BATCH_WAIT,
            shutdown=shutdown,
        )
        probes = {
            "kafka": health.broker_probe(settings.KAFKA, settings.KAFKA.events_topic),
            "postgresql": health.database_probe(settings.DATABASE_URL),
        }
        beat = health.start(
            "projector",
            projector.consumer,
            probes,
            settings.PROJECTOR_METRICS_PORT,
            settings.WORKER_METRICS_HOST,
            settings.METRICS_TOKEN,
        )
        try:
            run_worker(projector, shutdown, lambda: projector.applied, "events applied", on_turn=beat)
        except ProjectorFailed as error:
            log.error("projector stopped: %s", error)
            sys.exit(1)
