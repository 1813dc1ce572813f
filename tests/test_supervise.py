"""./run's process manager: supervisord restarts a worker that exits and serves the web from N daphne processes."""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from bank.config import KafkaSettings
from devservices.process import free_port
from server.supervise import config
from tests.helpers import LOGS, ROOT, Worker, wait_until

pytestmark = [pytest.mark.timeout(180), pytest.mark.django_db(transaction=True)]

SUPERVISORCTL = ROOT / ".venv" / "bin" / "supervisorctl"


def ctl(conf: Path, *args: str) -> str:
    return subprocess.run([SUPERVISORCTL, "-c", conf, *args], capture_output=True, text=True, timeout=30).stdout


def pid_of(conf: Path, name: str) -> int:
    answer = ctl(conf, "pid", name).strip()
    return int(answer) if answer.isdigit() else 0


def test_it_restarts_a_killed_worker_and_serves_from_two_web_processes(
    kafka: KafkaSettings, workers: Callable[..., Worker], tmp_path: Path
) -> None:
    port = free_port()
    logs = LOGS / "supervised"
    logs.mkdir(parents=True, exist_ok=True)
    conf = tmp_path / "supervisor" / "supervisord.conf"
    conf.parent.mkdir()
    conf.write_text(config(tmp_path, port=port, web_processes=2, startsecs=1, logs=logs))
    supervisord = workers("supervisord", ["-c", str(conf)], kafka, program=[str(ROOT / ".venv/bin/supervisord")])
    supervisord.wait_for_log("success: processor entered RUNNING state")
    wait_until(lambda: "assigned partitions" in (logs / "processor.log").read_text(), 60, what="the processor")
    wait_until(lambda: ctl(conf, "status").count("RUNNING") == 4, 60, what="web-0, web-1, processor, projector")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
        assert answer.status == 200

    first = pid_of(conf, "processor")
    assert first > 0
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: pid_of(conf, "processor") not in (0, first), 60, what="the processor to be started again")
    supervisord.wait_for_log("exited: processor (terminated by SIGKILL; not expected)")
    supervisord.wait_for_log("success: processor entered RUNNING state")
    assert supervisord.log().count("spawned: 'processor'") == 2
    assert supervisord.process.poll() is None

    children = [pid_of(conf, name) for name in ("processor", "projector", "web:web-0", "web:web-1")]
    assert all(children), children
    supervisord.signal(signal.SIGINT)  # Ctrl-C
    assert supervisord.process.wait(60) == 0
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]
