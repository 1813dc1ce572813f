"""Moved to tests/helpers.py; this name stays only so that branches written before the move still import."""

from tests.helpers import LOGS, ROOT, Worker, read_events, read_raw, wait_until, worker_env

__all__ = ["LOGS", "ROOT", "Worker", "read_events", "read_raw", "wait_until", "worker_env"]
