from __future__ import annotations

from django.urls import URLPattern, path

from live.websocket import LiveConsumer


def websocket_urls(consumer: type[LiveConsumer] = LiveConsumer) -> list[URLPattern]:
    """The live page's websocket, served by `consumer` (the composition root may pass a subclass)."""
    return [path("ws/live/", consumer.as_asgi())]
