"""Decide-and-emit throughput: the command processor (Kafka transactions) against raw Kafka.

Prints commands/s decided by `consumers.processor.Processor` (consume, decode, decide,
produce events, commit offsets in transactions) and, on the same broker in the same run,
the raw rate of producing and then consuming the same number of messages without
transactions, decoding or deciding (the ceiling of the client and broker).

    .venv/bin/python bench/processor.py [--commands 20000] [--accounts 500]
"""

from __future__ import annotations

import argparse
import logging
import time
import uuid

from common import create_topic, fresh_kafka, table, write_results
from confluent_kafka import Consumer, Producer

from bank import domain, messages
from bank.config import KafkaSettings
from consumers.processor import Processor


def make_commands(accounts: int, commands: int) -> list[tuple[bytes, bytes, messages.Headers]]:
    ids = [uuid.uuid4() for _ in range(accounts)]
    out = [
        messages.encode(messages.CommandEnvelope.new(domain.OpenAccount(a, "bench", "Bench", "EUR"), "user:bench"))
        for a in ids
    ]
    for i in range(commands - accounts):
        account_id = ids[i % accounts]
        command: domain.Command = domain.Deposit(account_id, 1_00) if i % 4 else domain.Withdraw(account_id, 50)
        out.append(messages.encode(messages.CommandEnvelope.new(command, "user:bench")))
    return out


def produce_all(kafka: KafkaSettings, topic: str, payload: list[tuple[bytes, bytes, messages.Headers]]) -> None:
    producer = Producer(kafka.client_config() | {"linger.ms": 5, "partitioner": "murmur2_random", "acks": "all"})
    for key, value, headers in payload:
        while True:
            try:
                producer.produce(topic, key=key, value=value, headers=headers)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)


def raw_round_trip(kafka: KafkaSettings, payload: list[tuple[bytes, bytes, messages.Headers]]) -> float:
    """Seconds to produce the messages and consume them all back, plain Kafka."""
    started = time.perf_counter()
    produce_all(kafka, kafka.topic("raw"), payload)
    consumer = Consumer(kafka.client_config() | {"group.id": f"raw-{uuid.uuid4()}", "auto.offset.reset": "earliest"})
    consumer.subscribe([kafka.topic("raw")])
    seen = 0
    while seen < len(payload):
        seen += sum(1 for m in consumer.consume(1000, 0.5) if m.error() is None)
    consumer.close()
    return time.perf_counter() - started


def processor_run(kafka: KafkaSettings, payload: list[tuple[bytes, bytes, messages.Headers]]) -> tuple[float, float]:
    """(seconds to produce the commands, seconds for the processor to decide them all)."""
    started = time.perf_counter()
    produce_all(kafka, kafka.commands_topic, payload)
    produced = time.perf_counter() - started
    processor = Processor(kafka, instance=f"bench-{uuid.uuid4().hex[:6]}", group=f"bench-{uuid.uuid4().hex[:6]}")
    processor.start()
    while not processor.consumer.assignment():  # joining the group is not what we measure
        processor.process_batch()
    started = time.perf_counter()
    while processor.decided < len(payload):
        processor.process_batch()
    elapsed = time.perf_counter() - started
    processor.close()
    return produced, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=20_000)
    parser.add_argument("--accounts", type=int, default=500)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    kafka = fresh_kafka("processor")
    create_topic(kafka, kafka.topic("raw"))
    payload = make_commands(args.accounts, args.commands)
    raw = raw_round_trip(kafka, payload)
    _, decided = processor_run(kafka, payload)
    figures = {
        "commands": args.commands,
        "raw_produce_consume_per_s": round(args.commands / raw),
        "processor_decided_per_s": round(args.commands / decided),
        "ratio": round(raw / decided, 3),
    }
    print(f"decide-and-emit, {args.commands} commands over {args.accounts} accounts, {kafka.partitions} partitions")
    print(
        table(
            [
                (
                    "raw produce+consume, no transactions",
                    f"{figures['raw_produce_consume_per_s']:>8,} msg/s (baseline)",
                ),
                ("processor, transactions", f"{figures['processor_decided_per_s']:>8,} commands/s"),
                ("ratio", f"{figures['ratio']:.2f}x"),
            ]
        )
    )
    write_results("processor", figures)


if __name__ == "__main__":
    main()
