"""The app's URLs plus the update-in-place baseline view that only benchmarks serve."""

from __future__ import annotations

from django.urls import path

from bench import baseline
from server.urls import urlpatterns as app_urlpatterns

urlpatterns = [
    *app_urlpatterns,
    path("bench/deposit-in-place/<uuid:account_id>", baseline.deposit_in_place, name="deposit-in-place"),
]
