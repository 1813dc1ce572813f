"""`python -m devservices up|down|status|acls|certs`: the local Kafka, PostgreSQL and Redis, at the configured addresses.

BANK_LOCAL_KAFKA=cluster (what `./run --cluster` sets) starts the 3-node SASL_SSL cluster with ACLs
(devservices.cluster) instead of the single PLAINTEXT broker. `acls` grants the services' ACLs on
the configured Kafka (KAFKA_* variables of a principal that may alter ACLs, e.g. on Amazon MSK).
`certs DIR HOST...` makes a CA and a broker certificate for those hosts (docker-compose.yml).
"""

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
        Target("processor", f"127.0.0.1:{settings.PROCESSOR_METRICS_PORT}", "/metrics", settings.METRICS_TOKEN),
        Target("projector", f"127.0.0.1:{settings.PROJECTOR_METRICS_PORT}", "/metrics", settings.METRICS_TOKEN),
    ]
    rules = str(settings.BASE_DIR / "monitoring" / "alerts.yml")
    return PrometheusServer(settings.VAR_DIR / "prometheus", port, targets, [rules])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devservices", description="Start (up), stop (down) or report (status) the local services."
    )
    parser.add_argument("action", choices=["up", "down", "status", "acls", "certs", "prometheus"])
    parser.add_argument(
        "--port", type=int, default=9090, help="prometheus: its port (it scrapes the web on 8000 and the workers)"
    )
    parser.add_argument("dir", nargs="?", help="certs: where to write ca.pem and broker.pem")
    parser.add_argument("hosts", nargs="*", help="certs: the brokers' host names (default localhost 127.0.0.1)")
    args = parser.parse_args(argv)
    action = args.action
    if action == "certs":  # needs no settings: docker-compose runs it before anything else exists
        from pathlib import Path

        from devservices import tls

        if not args.dir:
            parser.error("certs needs a directory")
        files = tls.ensure(Path(args.dir), tuple(args.hosts) or tls.LOCAL_HOSTS)
        print(f"tls: CA {files.ca}, broker key store {files.keystore}")
        return 0
    # The addresses come from the app's settings (the environment), read without starting Django.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "server.settings")
    from django.conf import settings

    bootstrap = settings.KAFKA.bootstrap_servers
    cluster = os.environ.get("BANK_LOCAL_KAFKA", "single") == "cluster"
    try:
        if action == "acls":
            from confluent_kafka.admin import AdminClient

            from devservices import acls

            count = acls.apply(AdminClient(settings.KAFKA.client_config()), settings.KAFKA)
            print(f"kafka: {count} ACLs granted on {bootstrap} (prefix {settings.KAFKA.topic_prefix})")
        elif action == "up" and cluster:
            services.up_cluster(settings.VAR_DIR, settings.DATABASE_URL, settings.REDIS_URL, settings.KAFKA)
        elif action == "down" and cluster:
            services.local_cluster(settings.VAR_DIR).stop()
            print("kafka cluster: stopped (PostgreSQL and Redis are shared system services and keep running)")
        elif action == "up":
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
