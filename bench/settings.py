"""Settings for benchmark servers: the app's own, plus the benchmark-only URLs (never in the app's)."""

from server.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
