from __future__ import annotations

from django.urls import URLPattern

websocket_urlpatterns: list[URLPattern] = []  # the live-updates consumer joins in a later change
