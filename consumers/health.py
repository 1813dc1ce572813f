"""A worker's own HTTP endpoint: `/metrics` for Prometheus, `/livez` and `/readyz` for health checks.

Served from a daemon thread, so a slow scrape never holds the worker's loop. Liveness means
the loop still turns; readiness means the worker can reach what it needs (the broker, and the
database for the projector), probed at most every few seconds with short timeouts, so a health
check never waits long and never hammers a dependency that is down.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client import REGISTRY, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from bank import metrics
from bank.config import KafkaSettings

log = logging.getLogger(__name__)

Probe = Callable[[], str | None]  # None when fine, else what is wrong


class LagMeter:
    """Per assigned partition: the log end minus the consumer's position, as `bank_consumer_lag`.

    Measured on the worker's own thread (from its loop's heartbeat, at most every `every`
    seconds): a confluent-kafka consumer blocks calls from other threads while it polls, so a
    scrape cannot ask it. Both figures are local to the client (the position it reached, the
    high watermark of its last fetch): no broker round trip.
    """

    def __init__(self, worker: str, consumer: Consumer, every: float = 1.0) -> None:
        self.worker = worker
        self.consumer = consumer
        self.every = every
        self._last = 0.0

    def measure(self) -> None:
        if time.monotonic() - self._last < self.every:
            return
        self._last = time.monotonic()
        try:
            positions = self.consumer.position(self.consumer.assignment())
            lags = {}
            for tp in positions:
                low, high = self.consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), cached=True)
                if high >= 0 and tp.offset >= 0:
                    lags[tp.partition] = max(0, high - tp.offset)
                elif high >= 0 and low >= 0:
                    # Nothing consumed from it yet (no position): everything it holds is still to read,
                    # and an empty partition reports 0 rather than no figure at all.
                    lags[tp.partition] = high - low
        except Exception as error:  # a figure must never break the worker
            log.debug("lag not measured: %s", error)
            return
        metrics.consumer_lag.clear()  # partitions this worker lost are no longer its to report
        for partition, lag in lags.items():
            metrics.consumer_lag.labels(self.worker, str(partition)).set(lag)


class Readiness(Collector):
    """`bank_worker_ready` 1/0, from the same probes as /readyz (cached: a scrape probes at most every few seconds)."""

    def __init__(self, worker: str, health: Health) -> None:
        self.worker = worker
        self.health = health

    def collect(self) -> Iterable[GaugeMetricFamily]:
        ready = GaugeMetricFamily("bank_worker_ready", "1 when the worker reaches what it needs.", labels=["worker"])
        ready.add_metric([self.worker], 0.0 if self.health.ready() else 1.0)
        yield ready


class Health:
    """What /livez and /readyz answer. The worker loop calls `beat()` on every turn."""

    def __init__(self, probes: dict[str, Probe], stale_after: float = 60.0, probe_every: float = 3.0) -> None:
        self.probes = probes
        self.stale_after = stale_after
        self.probe_every = probe_every
        self._last_beat = time.monotonic()
        self._last_probe = 0.0
        self._problems: list[str] = ["not probed yet"]
        self._lock = threading.Lock()

    def beat(self) -> None:
        self._last_beat = time.monotonic()

    def live(self) -> str | None:
        idle = time.monotonic() - self._last_beat
        return None if idle < self.stale_after else f"the worker loop has not turned for {idle:.0f}s"

    def ready(self) -> list[str]:
        with self._lock:  # one probe at a time, and at most every probe_every seconds
            if time.monotonic() - self._last_probe >= self.probe_every:
                self._problems = [f"{name}: {problem}" for name, probe in self.probes.items() if (problem := probe())]
                self._last_probe = time.monotonic()
            return list(self._problems)


def broker_probe(kafka: KafkaSettings, topic: str, timeout: float = 2.0) -> Probe:
    """A client of its own: the worker's consumer blocks calls from other threads while it polls."""
    admin = AdminClient(kafka.client_config())

    def probe() -> str | None:
        try:
            admin.list_topics(topic, timeout=timeout)
        except Exception as error:
            return f"broker unreachable ({error})"
        return None

    return probe


def database_probe(database_url: str, timeout: int = 2) -> Probe:
    """A fresh connection each time, never the worker's own: the probe must not disturb its transaction."""

    def probe() -> str | None:
        import psycopg

        try:
            with psycopg.connect(database_url, connect_timeout=timeout) as conn:
                conn.execute("SELECT 1")
        except Exception as error:
            return f"database unreachable ({str(error).splitlines()[0] if str(error) else type(error).__name__})"
        return None

    return probe


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes every few seconds would flood the log
        pass


def serve(port: int, health: Health, host: str = "127.0.0.1", token: str = "") -> Callable[[], None] | None:
    """Serve /metrics, /livez and /readyz on `host`:`port` from a daemon thread. Returns a stop function.

    Localhost unless told otherwise (WORKER_METRICS_HOST): the figures (commands by outcome, rejection
    reasons, quarantined accounts) are the ones the web's /metrics keeps for staff. With `token`
    (METRICS_TOKEN), /metrics asks for `Authorization: Bearer <token>`, as the web's does; the health
    answers stay open to the container's probes. A port already taken (a second instance on one
    machine) costs the metrics, never the worker.
    """
    if port <= 0:
        return None
    metrics_app = make_wsgi_app(REGISTRY)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/livez", "/readyz"):
            problems = [p for p in [health.live()] if p] if path == "/livez" else health.ready()
            status = "200 OK" if not problems else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
            return [("ok\n" if not problems else "\n".join(problems) + "\n").encode()]
        sent = str(environ.get("HTTP_AUTHORIZATION", "")).encode("latin-1", "replace")
        if token and not hmac.compare_digest(sent, f"Bearer {token}".encode()):
            start_response("403 Forbidden", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"The configured scraper only.\n"]
        return metrics_app(environ, start_response)  # type: ignore[no-any-return]

    try:
        server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    except OSError as error:
        log.warning("metrics and health endpoint not served on port %d: %s", port, error)
        return None
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    log.info("metrics on http://%s:%d/metrics, health on /livez and /readyz", host, port)
    return server.shutdown


def start(
    worker: str, consumer: Consumer, probes: dict[str, Probe], port: int, host: str = "127.0.0.1", token: str = ""
) -> Callable[[], None]:
    """Metrics (with the consumer's lag) and health on `host`:`port`; returns the heartbeat for the worker loop."""
    state = Health(probes)
    if metrics.ENABLED:
        REGISTRY.register(Readiness(worker, state))
    serve(port, state, host, token)
    lag = LagMeter(worker, consumer)

    def beat() -> None:
        state.beat()
        lag.measure()

    return beat
