"""Reading the real topics back, and running workers as real processes, for the tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings

from bank import messages
from bank.config import KafkaSettings
from bank.kafka import read_to_end

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "var" / "test" / "logs"


def read_events(kafka: KafkaSettings) -> list[messages.EventEnvelope]:
    """Every committed event of bank.events, in partition order, as the domain sees them."""
    return [messages.decode_event(m.value()) for batch in read_to_end(kafka, kafka.events_topic) for m in batch]


def read_raw(kafka: KafkaSettings, topic: str) -> list[Any]:
    return [m for batch in read_to_end(kafka, topic) for m in batch]


def wait_until(
    condition: Callable[[], Any], timeout: float = 60.0, interval: float = 0.2, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def worker_env(kafka: KafkaSettings, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "server.settings",
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "KAFKA_PARTITIONS": str(kafka.partitions),
        "REDIS_URL": settings.REDIS_URL,
        # The test database pytest-django created, so that workers and tests see the same rows.
        "DATABASE_URL": test_database_url(),
        "CHANNELS_PREFIX": "test",
        "KAFKA_SESSION_TIMEOUT_MS": "2000",
        "PROCESSOR_TRANSACTION_TIMEOUT_MS": "5000",
        "PYTHONUNBUFFERED": "1",
        # No metrics endpoints unless a test asks: fixed ports would clash between workers.
        "PROCESSOR_METRICS_PORT": "0",
        "PROJECTOR_METRICS_PORT": "0",
        **extra,
    }


def test_database_url() -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


class Worker:
    """A manage.py worker in its own process, its output in var/test/logs/<name>.log."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], program: list[str] | None = None) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = LOGS / f"{name}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [*(program or [sys.executable, str(ROOT / "manage.py")]), *args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(self, text: str, timeout: float = 60.0) -> None:
        wait_until(
            lambda: text in self.log() or self.process.poll() is not None, timeout, what=f"{self.name}: {text!r}"
        )
        assert text in self.log(), f"{self.name} exited early:\n{self.log()[-3000:]}"

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode
