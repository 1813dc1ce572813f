"""`manage.py run_processor`: decide commands from Kafka into events, until SIGTERM or Ctrl-C."""

from __future__ import annotations

import socket
import sys
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from bank.connection import check_connection
from bank.kafka import ReadInterrupted
from consumers import health
from consumers.processor import Processor, ProcessorConfig, ProcessorFailed, log
from consumers.worker import Shutdown, run_worker


class Command(BaseCommand):
    help = "Run the command processor (consumer group bank-processor)."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--instance", default=settings.PROCESSOR_INSTANCE, help="stable id of this instance (default: host name)"
        )
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args: Any, instance: str, batch_size: int, **options: Any) -> None:
        try:  # a refused password or an untrusted certificate stops here, in one line
            check_connection(settings.KAFKA)
        except ImproperlyConfigured as error:
            raise CommandError(str(error)) from None
        shutdown = Shutdown().install()
        config = ProcessorConfig(
            instance=instance or socket.gethostname(),
            max_amount=settings.BANK_MAX_AMOUNT,
            batch_size=batch_size,
            transaction_timeout_ms=settings.PROCESSOR_TRANSACTION_TIMEOUT_MS,
            recovery="full" if settings.PROCESSOR_RECOVERY == "full" else "state",
            dedup_window=settings.PROCESSOR_DEDUP_WINDOW,
        )
        processor = Processor(settings.KAFKA, config, stop=shutdown.__bool__)
        probes = {"kafka": health.broker_probe(settings.KAFKA, settings.KAFKA.commands_topic)}
        beat = health.start(
            "processor",
            processor.consumer,
            probes,
            settings.PROCESSOR_METRICS_PORT,
            settings.WORKER_METRICS_HOST,
            settings.METRICS_TOKEN,
        )
        try:
            run_worker(processor, shutdown, lambda: processor.decided, "commands decided", on_turn=beat)
        except ReadInterrupted as stopped:
            log.info("processor %s stopped while reading the log: %s", processor.instance, stopped)
        except ProcessorFailed as error:
            log.error("%s", error)
            sys.exit(1)
