"""Which accounts are held back, and releasing them: the processor's quarantine and the projector's parking.

The processor keeps each account's state, with why it is quarantined, in the compacted topic
`<prefix>account-state` (the last record per account wins); the projector parks accounts in
the ParkedAccount projection. Both end with one command: ReleaseAccount, sent through the
command bus like any other (only the processor writes bank.events).
"""

from __future__ import annotations

import logging
from uuid import UUID

import orjson
from confluent_kafka import Consumer

from bank import domain, messages
from bank.command_bus import CommandBus, Receipt
from bank.config import KafkaSettings
from bank.kafka import read_to_end, reader

log = logging.getLogger(__name__)


def state_topic(kafka: KafkaSettings) -> str:
    return kafka.topic("account-state")


def quarantined(kafka: KafkaSettings) -> dict[UUID, str]:
    """Account id → why the processor rejects its commands, from the last state record of each account."""
    topic = state_topic(kafka)
    probe: Consumer = reader(kafka)
    try:
        metadata = probe.list_topics(topic, timeout=10).topics.get(topic)
    finally:
        probe.close()
    if metadata is None or metadata.error is not None or not metadata.partitions:
        return {}  # no state topic (yet): nothing is quarantined
    last: dict[bytes, bytes | None] = {}
    for batch in read_to_end(kafka, topic):
        for message in batch:
            last[message.key() or b""] = message.value()
    found = {}
    for value in last.values():
        try:
            body = orjson.loads(value or b"null")
            if isinstance(body, dict) and body.get("quarantine"):
                found[UUID(body["account_id"])] = str(body["quarantine"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("unreadable record on %s: %r", topic, (value or b"")[:200])
    return found


def release(bus: CommandBus, account_id: UUID, actor: str) -> Receipt:
    """Send ReleaseAccount: the processor lifts its quarantine, the projector unparks it on AccountReleased."""
    return bus.send(messages.CommandEnvelope.new(domain.ReleaseAccount(account_id), actor))
