"""The command bus against the real broker."""

from __future__ import annotations

import asyncio
import uuid

from bank import domain, messages
from bank.command_bus import CommandBus
from bank.config import KafkaSettings
from tests.helpers import read_raw


def envelope() -> messages.CommandEnvelope:
    return messages.CommandEnvelope.new(domain.Deposit(uuid.uuid4(), 1_00), "user:alice")


def test_it_keeps_working_after_a_waiting_view_gives_up(kafka: KafkaSettings, bus: CommandBus) -> None:
    async def give_up_early() -> None:
        waiting = asyncio.ensure_future(bus.asend(envelope()))
        await asyncio.sleep(0)
        waiting.cancel()  # a client that went away: the delivery report comes later, to nobody

    asyncio.run(give_up_early())
    receipt = bus.send(envelope())  # the callbacks are still served
    assert receipt.topic == kafka.commands_topic
    assert asyncio.run(bus.asend(envelope())).offset >= 0
    assert len(read_raw(kafka, kafka.commands_topic)) == 3


def test_it_returns_where_the_command_landed(kafka: KafkaSettings, bus: CommandBus) -> None:
    sent = envelope()
    receipt = bus.send(sent)
    (landed,) = [m for m in read_raw(kafka, kafka.commands_topic) if m.offset() == receipt.offset]
    assert landed.partition() == receipt.partition
    assert messages.decode_command(landed.value()).command_id == sent.command_id == receipt.command_id
