"""Decide-and-emit throughput: the command processor (Kafka transactions) against two baselines.

Prints, for the same commands on the same broker in the same run:
- the processor: `consumers.processor.Processor` (consume, decode, decide, produce events,
  commit the offsets in the same Kafka transaction), commands/s;
- the same loop without transactions: identical decoding and deciding, events produced by
  an idempotent producer, offsets committed after a flush (at-least-once, what one would
  write without exactly-once);
- raw Kafka: produce the messages, then consume them, no decoding (the client's ceiling).

    .venv/bin/python -m bench.processor [--commands 20000] [--accounts 500]
"""

from __future__ import annotations

import argparse
import time
import uuid

from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

from bank import domain, messages
from bank.config import KafkaSettings
from bank.kafka import admin, consume_batch, consumer, next_offsets, producer
from bench.harness import fresh_kafka, setup_django, table, write_results
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
    out = producer(kafka, **{"linger.ms": 5})
    for key, value, headers in payload:
        while True:
            try:
                out.produce(topic, key=key, value=value, headers=headers)
                break
            except BufferError:
                out.poll(0.05)
    out.flush(60)


def raw_round_trip(kafka: KafkaSettings, payload: list[tuple[bytes, bytes, messages.Headers]]) -> float:
    """Seconds to produce the messages and consume them all back, plain Kafka."""
    started = time.perf_counter()
    produce_all(kafka, kafka.topic("raw"), payload)
    with consumer(kafka, f"raw-{uuid.uuid4()}") as raw:
        raw.subscribe([kafka.topic("raw")])
        seen = 0
        while seen < len(payload):
            seen += sum(1 for m in raw.consume(1000, 0.5) if m.error() is None)
    return time.perf_counter() - started


class UntransactionalProcessor(Processor):
    """The processor's loop with the transactions taken out: the baseline the issue asks for."""

    def __init__(self, kafka: KafkaSettings, **kwargs: object) -> None:
        super().__init__(kafka, **kwargs)  # type: ignore[arg-type]
        self.producer = producer(kafka, **{"linger.ms": 5})

    def start(self) -> None:
        self.consumer.subscribe([self.kafka.commands_topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    def process_batch(self) -> int:
        batch = self._without_errors(consume_batch(self.consumer, self.batch_size, self.batch_wait))
        if not batch:
            return 0
        self.decided += sum(self._handle(message) for message in batch)
        self.producer.flush(30)
        self.consumer.commit(offsets=next_offsets(batch), asynchronous=False)
        return len(batch)


def run_loop(processor: Processor, total: int) -> float:
    """Seconds for `processor` to decide `total` commands, group joining excluded."""
    processor.start()
    while not processor.consumer.assignment():
        processor.process_batch()
    started = time.perf_counter()
    while processor.decided < total:
        processor.process_batch()
    elapsed = time.perf_counter() - started
    processor.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=20_000)
    parser.add_argument("--accounts", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    setup_django()
    kafka = fresh_kafka("processor")
    with admin(kafka) as client:
        client.create_topics([NewTopic(kafka.topic("raw"), kafka.partitions, kafka.replication_factor)])[
            kafka.topic("raw")
        ].result()
    payload = make_commands(args.accounts, args.commands)
    raw = raw_round_trip(kafka, payload)
    produce_all(kafka, kafka.commands_topic, payload)
    plain = run_loop(
        UntransactionalProcessor(
            kafka, instance="plain", group=f"plain-{uuid.uuid4().hex[:6]}", batch_size=args.batch_size
        ),
        len(payload),
    )
    # Topics of its own, so the transactional run starts from the same empty state.
    second = fresh_kafka("processor")
    produce_all(second, second.commands_topic, payload)
    transactional = run_loop(
        Processor(
            second,
            instance=f"bench-{uuid.uuid4().hex[:6]}",
            group=f"tx-{uuid.uuid4().hex[:6]}",
            batch_size=args.batch_size,
        ),
        len(payload),
    )
    n = args.commands
    figures = {
        "commands": n,
        "batch_size": args.batch_size,
        "raw_produce_consume_per_s": round(n / raw),
        "untransactional_per_s": round(n / plain),
        "processor_decided_per_s": round(n / transactional),
        "ratio_to_untransactional": round(plain / transactional, 3),
        "ratio_to_raw": round(raw / transactional, 3),
    }
    print(f"decide-and-emit, {args.commands} commands over {args.accounts} accounts, {kafka.partitions} partitions")
    print(
        table(
            [
                ("raw produce+consume (ceiling)", f"{figures['raw_produce_consume_per_s']:>8,} msg/s"),
                ("same loop, no transactions (baseline)", f"{figures['untransactional_per_s']:>8,} commands/s"),
                ("processor, Kafka transactions", f"{figures['processor_decided_per_s']:>8,} commands/s"),
                ("processor / no-transaction loop", f"{figures['ratio_to_untransactional']:.2f}x (goal >= 0.8x)"),
                ("processor / raw", f"{figures['ratio_to_raw']:.2f}x"),
            ]
        )
    )
    write_results("processor", figures)


if __name__ == "__main__":
    main()
