"""A cap on request bodies in daphne itself, before any of a body is kept.

Daphne (Twisted's HTTP server) reads a request's whole body, to memory or a temporary file, before the
application sees the request: Django's DATA_UPLOAD_MAX_MEMORY_SIZE then refuses a 150 MB anonymous POST
only after it was read. Here a request whose Content-Length is over the cap is answered 413 and its
connection closed at once, and a chunked body is cut off the same way once it passes the cap.
Installed by server/asgi.py, which daphne imports in its own process.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)
TOO_LARGE = b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/plain\r\nContent-Length: 24\r\nConnection: close\r\n\r\nThe request is too big.\n"


def install(limit: int) -> None:
    """Make daphne's HTTP factory build requests that refuse bodies over `limit` bytes."""
    try:
        from daphne import http_protocol
    except ImportError:  # not under daphne
        return
    if getattr(http_protocol.WebRequest, "body_limit", None) is not None:
        http_protocol.WebRequest.body_limit = limit
        return

    class CappedRequest(http_protocol.WebRequest):
        body_limit = limit
        refused = False
        received = 0

        def gotLength(self, length: int | None) -> None:
            if length is not None and length > self.body_limit:
                self._refuse(f"Content-Length {length}")
            super().gotLength(0 if self.refused else length)

        def handleContentChunk(self, data: bytes) -> None:
            if self.refused:
                return
            self.received += len(data)
            if self.received > self.body_limit:
                self._refuse(f"more than {self.body_limit} bytes")
                return
            super().handleContentChunk(data)

        def process(self) -> Any:
            if self.refused:
                return None
            return super().process()

        def _refuse(self, what: str) -> None:
            self.refused = True
            log.warning("request body refused before reading it: %s (REQUEST_BODY_MAX=%d)", what, self.body_limit)
            self.channel.transport.write(TOO_LARGE)
            self.channel.transport.loseConnection()

    http_protocol.WebRequest = CappedRequest
