"""ASGI entry point: HTTP through Django, websockets through Channels (authenticated, origin-checked)."""

from __future__ import annotations

import gc
import os
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "server.settings")
django.setup(set_prefix=False)  # as django.core.asgi.get_asgi_application does

from django.conf import settings  # noqa: E402

from server import fastpath  # noqa: E402

# Django's handler; with the fast path, with no worker thread for requests that need none (the command views).
django_asgi_app = fastpath.http_handler(settings.FASTPATH)()

from django.core.exceptions import ImproperlyConfigured  # noqa: E402

from bank.connection import check_connection  # noqa: E402

try:  # a refused password or an untrusted certificate stops the web server here, in one line
    check_connection(settings.KAFKA)
except ImproperlyConfigured as error:
    sys.exit(f"error: {error}")

from server import body_limit  # noqa: E402

body_limit.install(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)  # daphne reads whole bodies before Django sees them

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from live.routing import websocket_urls  # noqa: E402

# The collector, not the code, made every third or so push to a thousand open pages slow: full
# collections of 120-170 ms that found nothing to free, and 5-15 ms ones of the middle generation
# (measured with gc.callbacks during bench.fanout). What start-up made lives as long as the process:
# frozen out of the collector's way; and collections run far less often (reference cycles are rare here).
gc.freeze()
gc.set_threshold(50_000, 20, 50)

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            fastpath.websocket_auth(settings.FASTPATH)(
                URLRouter(websocket_urls(fastpath.live_consumer(settings.FASTPATH)))
            )
        ),
    }
)
