"""Shared set-up for the benchmark scripts: Django settings, the local services, fresh topics."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "server.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

from bank.config import KafkaSettings  # noqa: E402
from bank.kafka import ensure_topics  # noqa: E402
from devservices import services  # noqa: E402

# BENCH_RESULTS_DIR lets the smoke test write elsewhere than the committed figures.
RESULTS = Path(os.environ.get("BENCH_RESULTS_DIR") or ROOT / "bench" / "results")


def fresh_kafka(name: str) -> KafkaSettings:
    """The local services up, and topics under a prefix of their own for this run."""
    services.up(
        settings.VAR_DIR,
        settings.DATABASE_URL,
        settings.REDIS_URL,
        settings.KAFKA.bootstrap_servers,
        say=lambda s: None,
    )
    kafka = dataclasses.replace(settings.KAFKA, topic_prefix=f"bench-{name}-{uuid.uuid4().hex[:8]}.")
    ensure_topics(kafka)
    return kafka


def use_bench_database(name: str) -> str:
    """Point this process at database `name` (created if missing, then migrated) before anything connects; its URL.

    Benchmarks write projection tables: never in the DATABASE_URL database.
    """
    from urllib.parse import quote

    import psycopg
    from django.core.management import call_command
    from django.db import connections
    from psycopg import sql

    db = settings.DATABASES["default"]
    if name == db["NAME"]:
        raise SystemExit(f"refusing to benchmark in {name!r}, the DATABASE_URL database: its projections would be lost")
    host, port, user, password = db["HOST"] or "127.0.0.1", db["PORT"] or 5432, db["USER"], db["PASSWORD"] or ""
    params: dict[str, Any] = {"host": host, "port": port, "user": user} | ({"password": password} if password else {})
    with psycopg.connect(dbname=db["NAME"], autocommit=True, **params) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    connections.close_all()
    db["NAME"] = name
    connections["default"].settings_dict["NAME"] = name
    call_command("migrate", verbosity=0)
    auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
    return f"postgres://{auth}@{host}:{port}/{name}"


def create_topic(kafka: KafkaSettings, name: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient(kafka.client_config())
    admin.create_topics([NewTopic(name, kafka.partitions, kafka.replication_factor)])[name].result()


def write_results(name: str, figures: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    figures = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **figures}
    (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")


def table(rows: list[tuple[str, str]]) -> str:
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"  {label:<{width}}  {value}" for label, value in rows)
