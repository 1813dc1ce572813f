"""Pure tests need no service: running them alone starts no broker, Redis or PostgreSQL."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT


def test_it_runs_the_domain_tests_without_starting_any_service() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_domain.py", "-q", "--setup-show", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "SETUP    S django_db_setup" not in run.stdout
    assert "kafka_node" not in run.stdout  # the session broker, Redis and PostgreSQL start together
