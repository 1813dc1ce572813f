"""Django settings. Values that differ between machines come from bank.config (the environment)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

from bank.config import env_bool, env_choice, env_float, env_int, env_list, env_str, env_url, kafka_from_env
from server import fastpath

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

# Off unless asked for: `./run` (the local development path) turns it on and says so.
DEBUG = env_bool("DJANGO_DEBUG", False)
_DEV_SECRET = "dev-only-insecure-secret-key-change-me"
SECRET_KEY = env_str("DJANGO_SECRET_KEY", _DEV_SECRET)
if not SECRET_KEY or (not DEBUG and SECRET_KEY == _DEV_SECRET):
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set (and not the development key) when DJANGO_DEBUG is false")
# Django looks for its middleware by name; ours are subclasses, checked by web/checks.py instead.
SILENCED_SYSTEM_CHECKS = ["security.W001", "security.W002", "security.W003"]
# Error pages and reports print no credential (the passwords in DATABASE_URL, REDIS_URL, Kafka's SASL).
DEFAULT_EXCEPTION_REPORTER_FILTER = "web.debug.SafeReporterFilter"
INTERNAL_IPS = ["127.0.0.1", "::1"]  # the only clients shown Django's debug pages (with DEBUG on)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# Behind TLS (a proxy that terminates it and sets X-Forwarded-Proto): Secure cookies, HSTS, HTTPS redirects.
HTTPS = env_bool("DJANGO_HTTPS", False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE_SSL_REDIRECT = HTTPS
_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31_536_000, minimum=0)
SECURE_HSTS_SECONDS = _HSTS_SECONDS if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_PRELOAD = HTTPS
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if HTTPS else None
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]  # probed and scraped over plain HTTP inside the network
# Our forms are a few hundred bytes: a larger body is refused (413/400) before it is parsed for the CSRF check.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("REQUEST_BODY_MAX", 65_536, minimum=1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = DATA_UPLOAD_MAX_MEMORY_SIZE

DATABASE_URL = env_url("DATABASE_URL", "postgres://bank:bank@127.0.0.1:5432/bank", ("postgres", "postgresql"))
DATABASES = {"default": environ.Env.db_url_config(DATABASE_URL)}
# A pool per process bounds the connections: Channels runs ORM calls on many threads, and a
# persistent connection per thread exhausted PostgreSQL's 100 slots under load.
DATABASE_POOL_SIZE = env_int("DATABASE_POOL_SIZE", 10, minimum=0)
# Seconds a request waits for a pooled connection, e.g. while PostgreSQL restarts, before its 503.
DATABASE_POOL_TIMEOUT = env_float("DATABASE_POOL_TIMEOUT", 10.0, minimum=0.1)
if DATABASE_POOL_SIZE:
    DATABASES["default"]["OPTIONS"] = {
        "pool": {
            "min_size": 1,
            "max_size": DATABASE_POOL_SIZE,
            "timeout": DATABASE_POOL_TIMEOUT,
        }
    }
    # With a pool, Django turns this into psycopg_pool's check=ConnectionPool.check_connection: each
    # connection is checked when lent out, so after a PostgreSQL restart a stale one is replaced, not used.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
else:
    DATABASES["default"]["CONN_MAX_AGE"] = 60
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

# Off: every override of Django, Channels, asgiref and redis-py internals (server/fastpath/, whose table
# says what each buys) is left out, and stock Django and Channels run.
FASTPATH = env_bool("BANK_FASTPATH", True)

REDIS_URL = env_url("REDIS_URL", "redis://127.0.0.1:6379/0", ("redis", "rediss"))


def redis_backends(url: str, prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The channel layer and the cache on the Redis at `url` (also used by the tests' own Redis)."""
    channel_layers = {
        "default": {
            # Pub/sub: one Redis connection per process carries every open websocket's groups (the
            # list-based layer held a pooled connection per blocked receive: the 101st page failed).
            # At most once, which live updates can be: a page catches up when it (re)connects.
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            # No socket timeout: a quiet subscription is not a dead one (channels_redis#422).
            "CONFIG": {"hosts": [{"address": url, "socket_timeout": None}], "prefix": prefix},
        }
    }
    # Sessions and the logged-in user (web.auth) without a database round trip per request.
    caches = {
        "default": {
            # Redis errors as misses (web.cache); with the fast path also native async, one client per process.
            "BACKEND": fastpath.CACHE_BACKEND if FASTPATH else "web.cache.RedisCache",
            "LOCATION": url,
            "KEY_PREFIX": f"{prefix}-cache",
            # A request waits up to 5 s for a free connection (web.cache: a blocking pool). Per process with
            # the fast path; stock Django makes a pool per cache object, i.e. per request under ASGI.
            "OPTIONS": {"max_connections": 50, "timeout": 5},
        }
    }
    return channel_layers, caches


CHANNEL_LAYERS, CACHES = redis_backends(REDIS_URL, env_str("CHANNELS_PREFIX", "bank"))
# Read from the cache, written through to PostgreSQL (on log in and out only): a Redis restart logs nobody out.
# Open live pages one web process takes; more are told to try again later (close code 4013).
LIVE_MAX_SOCKETS = env_int("LIVE_MAX_SOCKETS", 5000, minimum=1)
# Signed and stored under hashed keys in the cache (web.sessions): what Redis holds logs nobody in.
SESSION_ENGINE = "web.sessions"
AUTHENTICATION_BACKENDS = ["web.auth.CachedModelBackend"]

KAFKA = kafka_from_env()
# Largest amount one command may move, in minor units (default 1,000,000.00).
BANK_MAX_AMOUNT = env_int("BANK_MAX_AMOUNT", 100_000_000, minimum=1)
# A transfer still in flight after this many seconds is flagged in the admin and by bank_status.
BANK_TRANSFER_FLAG_AFTER = env_int("BANK_TRANSFER_FLAG_AFTER", 60, minimum=1)
PROCESSOR_INSTANCE = env_str("PROCESSOR_INSTANCE", "")  # empty: the host name
PROCESSOR_TRANSACTION_TIMEOUT_MS = env_int("PROCESSOR_TRANSACTION_TIMEOUT_MS", 10_000, minimum=1000)
# Fault injection for tests only: seconds each transaction is held open before its commit.
# Fault injection for tests only: a rebuild stops in this phase (fill, catch-up, swap) for REBUILD_FAULT_SECONDS.
REBUILD_FAULT_PAUSE = env_choice("REBUILD_FAULT_PAUSE", "", ("", "fill", "catch-up", "swap"))
REBUILD_FAULT_SECONDS = env_float("REBUILD_FAULT_SECONDS", 600.0, minimum=0.0)
# How the processor gets its accounts back on assignment: "state" (bank.account-state + the tail of
# bank.events) or "full" (fold the whole history: the benchmark's baseline).
PROCESSOR_RECOVERY = env_choice("PROCESSOR_RECOVERY", "state", ("state", "full"))
# Command ids remembered per account: a resend of one of its last N commands is skipped, an older one decided again.
PROCESSOR_DEDUP_WINDOW = env_int("PROCESSOR_DEDUP_WINDOW", 20, minimum=1)
PROJECTOR_BATCH_SIZE = env_int("PROJECTOR_BATCH_SIZE", 2000, minimum=1)
PROJECTOR_BATCH_WAIT = env_float("PROJECTOR_BATCH_WAIT", 0.05)
# daphne processes under supervisord (server/supervise.py reads it too); 0: one per core.
WEB_PROCESSES = env_int("WEB_PROCESSES", 0, minimum=0)

# Metrics: each worker serves /metrics, /livez and /readyz on its own port (0: none); the web
# serves /metrics to staff, or to a scraper that sends `Authorization: Bearer <METRICS_TOKEN>`.
METRICS_ENABLED = env_bool("BANK_METRICS", True)
PROCESSOR_METRICS_PORT = env_int("PROCESSOR_METRICS_PORT", 9101, minimum=0)
PROJECTOR_METRICS_PORT = env_int("PROJECTOR_METRICS_PORT", 9102, minimum=0)
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
# The address the workers' endpoints listen on: localhost; 0.0.0.0 in a container that Prometheus scrapes
# (with METRICS_TOKEN set, their /metrics asks for it too).
WORKER_METRICS_HOST = env_str("WORKER_METRICS_HOST", "127.0.0.1")
# Set when several web processes share a socket: their metrics are summed from files here.
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR", "")

INSTALLED_APPS = [
    "daphne",
    "web.admin_site.BankAdminConfig",  # django.contrib.admin, with the bank's site (web/admin_site.py)
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "servestatic",  # its configuration checks
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "django_htmx",
    "template_partials",
    "bank",
    "projections",
    "consumers",
    "web",
    "ops",
]

MIDDLEWARE = [
    "web.middleware.DebugPagesForLoopbackOnly",  # outermost: sees every debug page; gone with DEBUG off
    "django.middleware.security.SecurityMiddleware",
    # ServeStatic (WhiteNoise's async fork): a sync-only middleware here would run every async
    # view through the one sync thread, holding it while the view awaits Kafka.
    "servestatic.middleware.ServeStaticMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Before LoginRequiredMiddleware, whose user lookup it must be able to catch (with the fast path,
    # AuthenticationMiddleware loads the user in async mode and answers the same 503 itself).
    "web.middleware.DatabaseUnavailableMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "web.middleware.TimezoneMiddleware",
]
if FASTPATH:
    # The same middleware, with the hooks that do no I/O called in the event loop instead of a thread
    # per hook (server/fastpath/middleware.py): the async views' chain has no sync-to-async hop.
    MIDDLEWARE = [fastpath.MIDDLEWARE.get(name, name) for name in MIDDLEWARE]

ROOT_URLCONF = "server.urls"
ASGI_APPLICATION = "server.asgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Sign-up attempts one client address may make per window (web.ratelimit).
SIGNUP_LIMIT = env_int("SIGNUP_LIMIT", 10, minimum=1)
SIGNUP_WINDOW_SECONDS = env_int("SIGNUP_WINDOW_SECONDS", 3600, minimum=1)
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Daphne serves static files through ServeStatic; in development straight from the app folders.
SERVESTATIC_USE_FINDERS = DEBUG
SERVESTATIC_AUTOREFRESH = DEBUG
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}
