"""`manage.py bank_status`: where every partition stands — log ends, group positions and lag, checkpoints,
dead letters, and the accounts held back (quarantined by the processor, parked by the projector)."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from ops.held import held_back_lines, stuck_lines, transfers_in_flight
from ops.status import gather, rebuild_lines
from ops.terminal import OperatorCommand


class Command(OperatorCommand):
    help = (
        "Per partition: log end offsets, consumer group positions and lag, projection checkpoints; dead letters; "
        "quarantined and parked accounts; transfers in flight; projection generations and the rebuild's phase."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        kafka = settings.KAFKA
        status = gather(kafka)
        header = f"{'part':>4} {'commands end':>12} {'processor':>10} {'lag':>6} {'events end':>11} {'projector':>10} {'lag':>6}"
        header += "".join(f" {p + ' ckpt':>14}" for p in status.projections)
        self.stdout.write(header)
        for row in status.partitions:
            line = (
                f"{row.partition:>4} {row.commands_end:>12} {_show(row.processor):>10} {row.processor_lag:>6} "
                f"{row.events_end:>11} {_show(row.projector):>10} {row.projector_lag:>6}"
            )
            line += "".join(f" {_show(row.checkpoints[name]):>14}" for name in status.projections)
            self.stdout.write(line)
        self.stdout.write(transfers_in_flight())
        for line in stuck_lines():
            self.stdout.write(line)
        self.stdout.write(
            f"dead letters: {status.dead_letters_on_topic} on {kafka.deadletters_topic}, "
            f"{status.dead_letters_recorded} recorded by the projector"
        )
        for line in held_back_lines(kafka):
            self.stdout.write(line)
        for line in rebuild_lines(kafka):
            self.stdout.write(line)


def _show(value: int | None) -> str:
    return "-" if value is None else str(value)
