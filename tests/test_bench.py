"""Every benchmark script runs on a tiny input (figures are not checked: timings stay out of pass/fail)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from devservices.kafka import KafkaNode
from tests.helpers import ROOT

pytestmark = pytest.mark.timeout(600)


def test_it_runs_every_benchmark_on_a_tiny_input(kafka_node: KafkaNode, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_node.bootstrap,
        "REDIS_URL": settings.REDIS_URL,
        "BENCH_RESULTS_DIR": str(tmp_path),
    }
    run = subprocess.run(
        [sys.executable, "-m", "bench.run_all", "--tiny"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    print(run.stdout.strip().splitlines()[-1])  # each script's duration (pytest -s shows it)
    for name in (
        "http",
        "processor",
        "recovery",
        "projection",
        "eventsourcing",
        "latency",
        "transfers",
        "history",
        "rebuild",
    ):
        figures = json.loads((tmp_path / f"{name}.json").read_text())
        assert figures["benchmark"] == name
