"""The services the suite runs on are real: a Kafka broker, PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from django.contrib.auth.models import User
from django.db import connection

from bank.config import KafkaSettings
from bank.kafka import consumer, reader
from devservices.kafka import KafkaNode


def read_all(kafka: KafkaSettings, topic: str, partitions: int, timeout: float = 10.0) -> list[bytes]:
    c: Consumer = reader(kafka)
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1] for p in range(partitions)}
    values: list[bytes] = []
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = c.poll(0.2)
        if msg is not None and msg.error() is None:
            values.append(msg.value())
        positions = {
            tp.partition: tp.offset for tp in c.position([TopicPartition(topic, p) for p in range(partitions)])
        }
        if all(positions[p] >= ends[p] or ends[p] == 0 for p in range(partitions)):
            break
    c.close()
    return values


def test_it_produces_and_consumes_through_the_broker(kafka: KafkaSettings) -> None:
    producer = Producer(kafka.client_config() | {"acks": "all"})
    producer.produce(kafka.commands_topic, key=b"k", value=b"hello")
    assert producer.flush(10) == 0
    c = consumer(kafka, f"g-{uuid.uuid4()}")
    c.subscribe([kafka.commands_topic])
    received = None
    for _ in range(100):
        msg = c.poll(0.2)
        if msg is not None and msg.error() is None:
            received = msg.value()
            break
    c.close()
    assert received == b"hello"


def test_it_shows_committed_transactions_and_hides_aborted_ones(kafka: KafkaSettings) -> None:
    producer = Producer(kafka.client_config() | {"transactional.id": f"tx-{uuid.uuid4()}"})
    producer.init_transactions(10)
    producer.begin_transaction()
    producer.produce(kafka.events_topic, key=b"a", value=b"committed", partition=0)
    producer.commit_transaction(10)
    producer.begin_transaction()
    producer.produce(kafka.events_topic, key=b"a", value=b"aborted", partition=0)
    producer.flush(10)
    producer.abort_transaction(10)
    producer.begin_transaction()
    producer.produce(kafka.events_topic, key=b"a", value=b"committed-too", partition=0)
    producer.commit_transaction(10)
    assert read_all(kafka, kafka.events_topic, 1) == [b"committed", b"committed-too"]


def test_it_keeps_events_forever(kafka: KafkaSettings) -> None:
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient(kafka.client_config())
    resource = ConfigResource("topic", kafka.events_topic)
    config = admin.describe_configs([resource])[resource].result()
    assert config["retention.ms"].value == "-1"
    metadata = admin.list_topics(kafka.events_topic, timeout=5)
    assert len(metadata.topics[kafka.events_topic].partitions) == kafka.partitions


@pytest.mark.django_db
def test_it_reads_and_writes_postgresql() -> None:
    User.objects.create_user("alice", password="pw-alice-123")
    assert User.objects.get(username="alice").check_password("pw-alice-123")
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        assert "PostgreSQL" in cursor.fetchone()[0]


def test_it_carries_a_channel_layer_message_between_processes(kafka_node: KafkaNode) -> None:
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    assert layer is not None
    group = f"g{uuid.uuid4().hex}"
    sender = (
        "import django, sys; django.setup();"
        "from asgiref.sync import async_to_sync; from channels.layers import get_channel_layer;"
        "from django.conf import settings;"
        f"async_to_sync(get_channel_layer().group_send)('{group}', {{'type': 'ping', 'text': 'from-another-process'}})"
    )

    async def subscribe_send_receive() -> dict[str, str]:
        # One event loop throughout: the pub/sub layer's channels live in the loop that made them,
        # and a message published before the subscription would reach nobody.
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", sender], check=True, timeout=30, env=_child_env()
        )
        return await asyncio.wait_for(layer.receive(channel), 10)  # type: ignore[no-any-return]

    message = async_to_sync(subscribe_send_receive)()
    assert message == {"type": "ping", "text": "from-another-process"}


def _child_env() -> dict[str, str]:
    import os

    from django.conf import settings

    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "server.settings",
        "CHANNELS_PREFIX": "test",
        "REDIS_URL": settings.REDIS_URL,
    }
