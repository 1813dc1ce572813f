"""The bank's Prometheus metrics: every name and label in one place.

Conventions (prometheus/client_python): counters end in `_total`, durations are `_seconds`
histograms in base units, labels have few values — a message type, an outcome, a reason, a
partition number; never an account id or a user name.

Each process exposes its own: the workers on their own port (`consumers/health.py`), the web
server on `/metrics` for staff or a configured scraper (`web/metrics.py`). When several web
processes share a socket, `PROMETHEUS_MULTIPROC_DIR` makes the web's figures add up across them
(prometheus_client's multiprocess mode).
"""

from __future__ import annotations

from typing import Any

import prometheus_client

from bank.config import env_bool

# Off only to measure what metrics cost (bench/metrics_cost.py): every metric becomes a no-op.
ENABLED = env_bool("BANK_METRICS", True)


class _Noop:
    """Stands in for any metric when metrics are off: every call does nothing."""

    def labels(self, *args: Any, **kwargs: Any) -> _Noop:
        return self

    def inc(self, amount: float = 1) -> None: ...
    def dec(self, amount: float = 1) -> None: ...
    def set(self, value: float) -> None: ...
    def observe(self, value: float) -> None: ...
    def clear(self) -> None: ...


def Counter(*args: Any, **kwargs: Any) -> Any:
    return prometheus_client.Counter(*args, **kwargs) if ENABLED else _Noop()


def Gauge(*args: Any, **kwargs: Any) -> Any:
    return prometheus_client.Gauge(*args, **kwargs) if ENABLED else _Noop()


def Histogram(*args: Any, **kwargs: Any) -> Any:
    return prometheus_client.Histogram(*args, **kwargs) if ENABLED else _Noop()


# Latencies here run from a millisecond (a broker ack on loopback) to seconds (a broker outage).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)

# --- web: the command bus ---

commands_received = Counter(
    "bank_commands_received_total", "Commands the web (or admin) handed to the command bus.", ["type"]
)
commands_sent = Counter(
    "bank_commands_sent_total",
    "Commands the broker confirmed (result=confirmed) or did not (result=not_confirmed).",
    ["type", "result"],
)
command_confirm_seconds = Histogram(
    "bank_command_confirm_seconds",
    "Time from producing a command to the broker's confirmation (acks=all).",
    buckets=LATENCY_BUCKETS,
)

# --- processor ---

commands_decided = Counter(
    "bank_processor_commands_total",
    "Commands the processor handled, by type and outcome (accepted, rejected, duplicate, poison).",
    ["type", "outcome"],
)
rejections = Counter("bank_processor_rejections_total", "Rejected commands by reason.", ["reason"])
transactions = Counter(
    "bank_processor_transactions_total", "Kafka transactions of the processor, committed or aborted.", ["result"]
)
processor_batch_size = Histogram(
    "bank_processor_batch_size", "Commands per processor transaction.", buckets=BATCH_BUCKETS
)
processor_batch_seconds = Histogram(
    "bank_processor_batch_seconds", "Time to decide and commit one batch of commands.", buckets=LATENCY_BUCKETS
)
fenced = Counter("bank_processor_fenced_total", "Times this processor was fenced by a newer instance.")
producers_replaced = Counter(
    "bank_processor_producers_replaced_total",
    "Transactional producers replaced in-process (fatal error, or a call wedged past its timeout).",
)

# --- both workers: measured on the worker's thread (consumers/health.py) ---

consumer_lag = Gauge(
    "bank_consumer_lag", "Messages between the consumer's position and the log end.", ["worker", "partition"]
)

# --- projector ---

events_applied = Counter(
    "bank_projector_events_applied_total", "Events applied to the projections, per partition.", ["partition"]
)
duplicates_skipped = Counter(
    "bank_projector_duplicates_total", "Events skipped because the projections already had them."
)
checkpoint_offset = Gauge(
    "bank_projector_checkpoint_offset", "Next offset of bank.events the projections will apply.", ["partition"]
)
projector_batch_seconds = Histogram(
    "bank_projector_batch_seconds", "Time to apply and commit one batch of events.", buckets=LATENCY_BUCKETS
)
projector_batch_size = Histogram("bank_projector_batch_size", "Events per projector batch.", buckets=BATCH_BUCKETS)

# --- both workers ---

dead_letters = Counter(
    "bank_deadletters_total", "Messages sent to the dead-letter topic, by the worker that sent them.", ["worker"]
)
quarantined_accounts = Gauge(
    "bank_quarantined_accounts",
    "Accounts whose commands (processor) or projection (projector) are held until an operator releases them.",
    ["worker"],
)

# --- live updates ---

websockets_open = Gauge("bank_websockets_open", "Open websockets (pages).", multiprocess_mode="livesum")
pushes_sent = Counter("bank_live_pushes_total", "Channel-layer messages the projector sent after a commit.")
event_to_push_seconds = Histogram(
    "bank_event_to_push_seconds",
    "Time from an event's occurred_at to its push through the channel layer.",
    buckets=LATENCY_BUCKETS,
)

# --- replay ---

replay_events = Counter("bank_replay_events_total", "Events a replay has applied.")
replay_progress = Gauge("bank_replay_progress_ratio", "How far the running replay is, from 0 to 1.")
replay_rate = Gauge("bank_replay_events_per_second", "The running replay's rate.")

# --- rebuild (projections/generations.py) ---

rebuild_phase = Gauge("bank_rebuild_phase", "1 for the phase the running rebuild is in, 0 for the others.", ["phase"])
rebuild_events = Gauge("bank_rebuild_events_read", "Events the running rebuild has read from bank.events.")
rebuild_rate = Gauge("bank_rebuild_events_per_second", "The running rebuild's fill rate.")
rebuild_lag = Gauge("bank_rebuild_lag_offsets", "Offsets the rebuilt generation is behind the live one (catch-up).")

# --- money in flight, computed when scraped from the accounts' projections (web/operations.py) ---

TRANSFERS_IN_FLIGHT = "bank_transfers_in_flight"
TRANSFERS_IN_FLIGHT_HELP = "Transfers debited and not yet completed or refunded, by the step they wait at."
TRANSFERS_IN_FLIGHT_OLDEST = "bank_transfers_in_flight_oldest_seconds"
TRANSFERS_IN_FLIGHT_OLDEST_HELP = "How long the oldest transfer waiting at each step has been in flight."
