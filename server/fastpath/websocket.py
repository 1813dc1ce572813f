"""The live page's consumer without two of Channels' per-message steps, which one push repeats for every open page.

- `dispatch`: Channels' `AsyncConsumer.dispatch` without its `aclose_old_connections()`, a thread hop per
  channel-layer message to close old database connections: a push goes to every open page, and the hops
  queued a thousand per push. Every read of the consumer goes through `database_sync_to_async`, which
  closes old connections in its own thread before and after.
- `past_session_wrapper`: frames go to the send under Channels' `InstanceSessionWrapper` (its
  `real_send`), which passes websocket messages on unchanged but reads the session's state through two
  lazy proxies for each one.
"""

from __future__ import annotations

from typing import Any

from channels.consumer import get_handler_name
from channels.sessions import InstanceSessionWrapper

from live import websocket

WEBSOCKET_MESSAGES = {"websocket.accept", "websocket.send", "websocket.close"}


def past_session_wrapper(send: Any) -> Any:
    """The send under Channels' session wrapper, which passes websocket messages on unchanged (it saves
    sessions on HTTP responses only) but reads the session's state through two lazy proxies for each: a
    fifth of daphne's CPU when a push goes to a thousand pages. The wrapper itself if it would act on them."""
    wrapper = getattr(send, "__self__", None)
    if isinstance(wrapper, InstanceSessionWrapper) and not WEBSOCKET_MESSAGES & {
        *wrapper.save_message_types,
        *wrapper.cookie_response_message_types,
    }:
        return wrapper.real_send
    return send


class LiveConsumer(websocket.LiveConsumer):
    async def connect(self) -> None:
        self.base_send = past_session_wrapper(self.base_send)  # type: ignore[has-type]
        await super().connect()

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch without its thread hop per message to close old database connections: a push
        goes to every open page, and the hops queued a thousand per push. Every read here goes through
        database_sync_to_async, which closes old connections in its own thread before and after."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)
