"""The web app: pages, forms, admin; closes a session's live websockets when it logs out."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.contrib.auth.signals import user_logged_out
from django.http import HttpRequest


def close_live_sockets(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    """A websocket authenticated by this session would otherwise keep receiving updates after logout."""
    from live.updates import end_session

    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if session_key:
        end_session(session_key)


class WebConfig(AppConfig):
    name = "web"

    def ready(self) -> None:
        from web import checks  # noqa: F401 - registers the deploy checks on our middleware
        from web.auth import connect_signals

        user_logged_out.connect(close_live_sockets, dispatch_uid="web.close_live_sockets")
        connect_signals()  # a saved or deleted user leaves the user cache
