"""Operators' views: the admin's live operations page and the web server's own /metrics."""

from __future__ import annotations

import hmac
from collections.abc import Iterator

from confluent_kafka import KafkaException
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily

from bank import metrics
from ops.held import held_back_lines, stuck_lines, stuck_transfers, transfers_in_flight
from ops.status import gather, rebuild_lines

REFRESH_SECONDS = 2


@staff_member_required
@require_GET
def operations(request: HttpRequest) -> HttpResponse:
    """Per-partition lag, checkpoints and dead letters, the figures of `bank_status`; htmx refreshes the table."""
    held: list[str] = []
    rebuild: list[str] = []
    try:
        status, error = gather(settings.KAFKA), None
        held = [*held_back_lines(settings.KAFKA), transfers_in_flight(), *stuck_lines()]
        rebuild = rebuild_lines(settings.KAFKA)
    except KafkaException as failure:
        status, error = None, f"Kafka did not answer: {failure.args[0].str() if failure.args else failure}"
    template = "admin/operations.html#figures" if request.htmx else "admin/operations.html"  # type: ignore[attr-defined]
    context = {
        "status": status,
        "held": held,
        "rebuild": rebuild,
        "error": error,
        "refresh": REFRESH_SECONDS,
        "title": "Operations",
    }
    return render(request, template, {**admin.site.each_context(request), **context})


def _may_scrape(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    sent = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
        return True
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated and user.is_staff)


@login_not_required
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """The web process's metrics (all web processes' with PROMETHEUS_MULTIPROC_DIR) for staff or the scraper."""
    if not _may_scrape(request):
        return HttpResponse("Staff or the configured scraper only.\n", status=403, content_type="text/plain")
    registry = REGISTRY
    if settings.PROMETHEUS_MULTIPROC_DIR:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    body = generate_latest(registry)
    if metrics.ENABLED:
        body += generate_latest(_in_flight_registry())
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)


class InFlightCollector:
    """Transfers in flight per step and the age of the oldest, read from the projections at each scrape: a
    transfer stuck for any reason (a lost step, a worker down) shows here and trips BankTransfersStuck."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        found = stuck_transfers()
        count = GaugeMetricFamily(metrics.TRANSFERS_IN_FLIGHT, metrics.TRANSFERS_IN_FLIGHT_HELP, labels=["step"])
        oldest = GaugeMetricFamily(
            metrics.TRANSFERS_IN_FLIGHT_OLDEST, metrics.TRANSFERS_IN_FLIGHT_OLDEST_HELP, labels=["step"]
        )
        for step, waiting in found.items():
            count.add_metric([step], waiting.count)
            oldest.add_metric([step], waiting.oldest_seconds)
        yield count
        yield oldest


def _in_flight_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(InFlightCollector())
    return registry
