from __future__ import annotations

from django.urls import URLPattern, path

from consumers.websocket import LiveConsumer

websocket_urlpatterns: list[URLPattern] = [path("ws/live/", LiveConsumer.as_asgi())]
