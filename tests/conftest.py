"""Real services for the test session: one Kafka broker (fresh, on free ports), Redis, PostgreSQL.

Django's settings are already loaded when this runs (pytest-django loads them first), so the
session broker and Redis are swapped into `settings` here, and passed by environment to any
worker started as a subprocess.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from bank.config import KafkaSettings
from bank.local import postgres, redis
from bank.local.kafka import KafkaNode
from bank.local.process import free_port
from consumers.kafka import ensure_topics

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var" / "test"


def _start_services() -> KafkaNode:
    postgres.ensure(settings.DATABASE_URL)
    redis_port = free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    redis.ensure(redis_url, VAR / "redis")
    shutil.rmtree(VAR / "kafka", ignore_errors=True)
    node = KafkaNode(VAR / "kafka", port=free_port(), controller_port=free_port(), internal_partitions=3)
    node.start(wait=90)
    settings.REDIS_URL = redis_url
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": "test"},
        }
    }
    settings.KAFKA = dataclasses.replace(settings.KAFKA, bootstrap_servers=node.bootstrap, partitions=3)
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = node.bootstrap
    os.environ["REDIS_URL"] = redis_url
    return node


@pytest.fixture(scope="session", autouse=True)
def kafka_node() -> Iterator[KafkaNode]:
    node = _start_services()
    yield node
    node.stop()
    redis_pid = VAR / "redis"
    for pid_file in redis_pid.glob("redis-*.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), 15)


@pytest.fixture
def kafka(kafka_node: KafkaNode) -> KafkaSettings:
    """Kafka settings with a fresh topic prefix: each test gets its own, empty topics."""
    fresh = dataclasses.replace(settings.KAFKA, topic_prefix=f"t{uuid.uuid4().hex[:10]}.")
    ensure_topics(fresh)
    return fresh
