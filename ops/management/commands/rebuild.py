"""`manage.py rebuild`: build the next generation of projections from bank.events while the bank runs, then swap it
in (projections/generations.py); `--rollback` swaps the kept one back, `--drop-old` drops it."""

from __future__ import annotations

from typing import Any

import psycopg
from django.conf import settings
from django.core.management.base import CommandError, CommandParser
from django.db import DatabaseError

from ops.terminal import OperatorCommand
from projections import generations


class Command(OperatorCommand):
    help = (
        "Rebuild projections online: fill their next generation from offset 0 of bank.events (bulk), catch up with "
        "the live projector, swap at a batch boundary. The previous generation is kept for --rollback until "
        "--drop-old. A projection not deployed yet (e.g. daily_balances on a bank with history) is backfilled and "
        "goes live the same way."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        self.add_log_reader_arguments(parser, "serve the rebuild's figures on this port")
        parser.add_argument("--rollback", action="store_true", help="swap the kept previous generation back in")
        parser.add_argument("--drop-old", action="store_true", help="drop the kept previous generation")
        parser.add_argument("--status", action="store_true", help="say which generation is live, change nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        self.start_metrics(options)
        kafka = settings.KAFKA
        names = options["projection"]
        say = self.stdout.write
        try:
            if options["status"]:
                for line in generations.describe(kafka):
                    say(line)
            elif options["drop_old"]:
                if not options["noinput"]:
                    self.confirm("This drops the kept generations: no rollback to them after. Type 'yes' to go on: ")
                for line in generations.drop_old(names) or ["no previous generation is kept: nothing dropped"]:
                    say(line)
            elif options["rollback"]:
                for line in generations.rollback(kafka, names, say=say):
                    say(self.style.SUCCESS(line))
            else:
                result = generations.rebuild(
                    kafka,
                    names,
                    progress=not options["no_progress"],
                    progress_file=self.progress_file(options),
                    say=say,
                )
                say(
                    self.style.SUCCESS(
                        f"rebuilt {', '.join(result.projections)} as g{result.generation}: {result.events} events "
                        f"filled in {result.fill_seconds:.1f}s ({result.fill_rate:,.0f} events/s), "
                        f"{result.caught_up} caught up, swapped after {result.seconds:.1f}s; "
                        f"the previous generation is kept (--rollback, --drop-old)"
                    )
                )
        except generations.RebuildRefused as refused:
            raise CommandError(str(refused)) from None
        except (
            DatabaseError,
            psycopg.Error,
        ) as error:  # e.g. a row the database refuses: the rebuild fails, the live tables stay
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise CommandError(f"rebuild failed, the live generation is untouched: {first}") from error
