"""The loop every long-running worker shares: batches until SIGTERM/SIGINT, a throughput line now and then."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Protocol

log = logging.getLogger(__name__)


class Worker(Protocol):
    def start(self) -> None: ...
    def process_batch(self) -> int: ...
    def close(self) -> None: ...


def run_worker(
    worker: Worker,
    shutdown: Shutdown,
    done: Callable[[], int],
    what: str,
    report_every: float = 30.0,
    on_turn: Callable[[], None] | None = None,
) -> None:
    """The loop of a long-running worker: batches until shutdown, a throughput line now and then, close() always."""
    last_report, last_count = time.monotonic(), 0
    try:
        worker.start()
        while not shutdown:
            worker.process_batch()
            if on_turn is not None:
                on_turn()  # the liveness heartbeat
            if (elapsed := time.monotonic() - last_report) >= report_every:
                count = done()
                log.info(
                    "%d %s so far (%.0f/s over the last %.0fs)", count, what, (count - last_count) / elapsed, elapsed
                )
                last_report, last_count = time.monotonic(), count
    finally:
        worker.close()


class Shutdown:
    """A flag set by SIGTERM/SIGINT so that a worker finishes its batch and stops cleanly."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def install(self) -> Shutdown:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s, stopping after the current batch", signal.Signals(signum).name)
        self._event.set()

    def set(self) -> None:
        self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds` (a back-off), waking at once on shutdown. True if shutting down."""
        return self._event.wait(seconds)
