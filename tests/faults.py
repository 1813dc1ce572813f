"""Fault injection for processor tests: the one hook (`consumers.processor.fault_hook`) and a worker that installs it.

`Faults(...)` is given to a Processor in the test's process (`faults=`); `python tests/faults.py run_processor ...`
runs the worker with it installed, from FAULT_PAUSE / FAULT_WEDGE in its environment. Production never imports it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from confluent_kafka import KafkaError, KafkaException

if TYPE_CHECKING:
    from consumers.processor import Processor

log = logging.getLogger("bank.processor")


@dataclass
class Faults:
    pause: float = 0.0  # hold each transaction open this long before committing it
    abort_every: int = 0  # abort every n-th transaction, as a failed commit would
    wedge: float = 0.0  # block the first commit this long before making it (librdkafka #5456)

    def __call__(self, processor: Processor, point: str) -> None:
        if point == "held":
            if self.pause:
                log.info("fault injection: holding a transaction open for %.1fs", self.pause)
                time.sleep(self.pause)
            if self.abort_every and (processor.transactions + 1) % self.abort_every == 0:
                processor.transactions += 1
                processor.txn.flush(30)  # as a failed commit would: everything sent, then refused
                raise KafkaException(KafkaError(KafkaError._FAIL, "fault injection: abort this transaction"))
        elif point == "commit" and self.wedge:
            pause, self.wedge = self.wedge, 0.0
            log.info("fault injection: this commit blocks for %.1fs before it is made", pause)
            time.sleep(pause)


def program() -> list[str]:
    """The command line of a worker with the fault hook installed (its arguments follow)."""
    return [sys.executable, str(Path(__file__).resolve())]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "server.settings")
    from django.core.management import execute_from_command_line

    from consumers import processor as processor_module

    processor_module.fault_hook = Faults(
        pause=float(os.environ.get("FAULT_PAUSE", "0")), wedge=float(os.environ.get("FAULT_WEDGE", "0"))
    )
    execute_from_command_line([sys.argv[0], *sys.argv[1:]])
