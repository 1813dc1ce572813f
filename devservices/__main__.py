"""`python -m devservices up|down|status`: the local Kafka, PostgreSQL and Redis, at the configured addresses."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from devservices import services
from devservices.process import ServiceError
from devservices.prometheus import PrometheusServer, Target


def local_prometheus(settings: Any, port: int) -> PrometheusServer:
    """Prometheus for `./run`: the web on 8000 (with METRICS_TOKEN) and the workers on their metrics ports."""
    targets = [
        Target("web", "127.0.0.1:8000", "/metrics", settings.METRICS_TOKEN),
        Target("processor", f"127.0.0.1:{settings.PROCESSOR_METRICS_PORT}"),
        Target("projector", f"127.0.0.1:{settings.PROJECTOR_METRICS_PORT}"),
    ]
    rules = str(settings.BASE_DIR / "monitoring" / "alerts.yml")
    return PrometheusServer(settings.VAR_DIR / "prometheus", port, targets, [rules])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devservices", description="Start (up), stop (down) or report (status) the local services."
    )
    parser.add_argument("action", choices=["up", "down", "status", "prometheus"])
    parser.add_argument(
        "--port", type=int, default=9090, help="prometheus: its port (it scrapes the web on 8000 and the workers)"
    )
    args = parser.parse_args(argv)
    action = args.action
    # The addresses come from the app's settings (the environment), read without starting Django.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "server.settings")
    from django.conf import settings

    bootstrap = settings.KAFKA.bootstrap_servers
    try:
        if action == "up":
            services.up(settings.VAR_DIR, settings.DATABASE_URL, settings.REDIS_URL, bootstrap)
        elif action == "prometheus":
            server = local_prometheus(settings, args.port)
            started = server.start()
            print(f"prometheus: {'started' if started else 'already up'} on {server.url}")
        elif action == "down":
            services.down(settings.VAR_DIR, bootstrap)
            print("kafka: stopped (PostgreSQL and Redis are shared system services and keep running)")
        else:
            rows = services.status(settings.VAR_DIR, settings.DATABASE_URL, settings.REDIS_URL, bootstrap)
            for row in rows:
                print(row.line(), flush=True)
            if not all(row.up for row in rows):
                print("some services are down: run `python -m devservices up`", file=sys.stderr)
                return 1
    except ServiceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
