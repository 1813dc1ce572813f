"""`manage.py replay`: rebuild projections from bank.events (all, one, or as of a moment), or verify them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from ops.terminal import OperatorCommand
from projections import registry, replay


def moment(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(f"--until {text!r} is not an ISO 8601 time such as 2026-11-26T10:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Command(OperatorCommand):
    help = (
        "Rebuild the projections from offset 0 of bank.events. --until T builds them as of T into a separate "
        "schema (default 'asof'); --verify rebuilds into a scratch schema and compares with the live tables. "
        "Accounts are parked and released as the live projector does (a gap, a poison record naming them)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        self.add_log_reader_arguments(parser, "serve the replay's progress and rate for Prometheus on this port")
        parser.add_argument(
            "--until", type=moment, help="as of this moment (ISO 8601), via the broker's offsets-for-times"
        )
        parser.add_argument("--schema", help="write into this PostgreSQL schema instead of the live tables")
        parser.add_argument("--verify", action="store_true", help="compare a fresh rebuild with the live projections")
        parser.add_argument("--dry-run", action="store_true", help="say what would be replayed, change nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        self.start_metrics(options)
        kafka = settings.KAFKA
        projections = tuple(options["projection"] or registry.PROJECTIONS)
        progress = not options["no_progress"]
        if options["verify"]:
            self._verify(projections, progress)
            return
        schema = options["schema"] or ("asof" if options["until"] else None)
        ends = replay.plan(kafka, options["until"])
        target = f"schema {schema}" if schema else "the LIVE tables"
        self.stdout.write(
            f"replay {', '.join(projections)} from {kafka.events_topic} up to offsets "
            f"{dict(sorted(ends.items()))} ({sum(ends.values())} offsets, transaction markers included) into {target}"
        )
        if options["dry_run"]:
            self.stdout.write("dry run: nothing changed")
            return
        if not schema and not options["noinput"]:
            self.confirm("This empties and rebuilds the live projections. Type 'yes' to go on: ", "replay cancelled")
        result = replay.replay(
            kafka, projections, ends=ends, schema=schema, progress=progress, progress_file=self.progress_file(options)
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"replayed {result.events} events ({result.poison} poison skipped, {result.parked} accounts parked) "
                f"in {result.seconds:.1f}s "
                f"= {result.rate:,.0f} events/s into {result.schema}"
            )
        )

    def _verify(self, projections: tuple[str, ...], progress: bool) -> None:
        compared: list[str] = []
        differences = replay.verify(settings.KAFKA, projections, progress=progress, compared=compared)
        for table in compared:
            found = [d for d in differences if d.table == table]
            if not found:
                self.stdout.write(self.style.SUCCESS(f"{table}: identical to a fresh replay"))
            for d in found:
                self.stdout.write(
                    self.style.ERROR(
                        f"{table}: DIFFERENT: live {d.live_rows} rows md5 {d.live_checksum}, "
                        f"replay {d.replayed_rows} rows md5 {d.replayed_checksum}"
                    )
                )
                for sample in d.samples:
                    self.stdout.write(f"  {sample}")
        if differences:
            raise CommandError(f"{len(differences)} projection table(s) differ from the event log")
