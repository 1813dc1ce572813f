"""Decide-and-emit throughput: the command processor (Kafka transactions) against two baselines.

The same commands through the processor (consume, decide, produce events and commit offsets in one Kafka
transaction), through the same loop without transactions (idempotent producer, offsets committed after a
flush), and through raw Kafka (produce, then consume; the client's ceiling).

    .venv/bin/python -m bench.processor [--commands 20000] [--accounts 500] [--batch-size 500]
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

from bank import domain, messages
from bank.config import KafkaSettings
from bank.kafka import admin, consume_batch, consumer, next_offsets, producer
from bench.harness import arguments, fresh_kafka, produce_all, setup_django, table, time_until, write_results
from consumers.processor import Batch, Processor, ProcessorConfig

Payload = list[tuple[bytes, bytes, messages.Headers]]


def make_commands(accounts: int, commands: int) -> Payload:
    """`accounts` openings, then deposits and withdrawals round robin, encoded."""
    ids = [uuid.uuid4() for _ in range(accounts)]
    out: list[domain.Command] = [domain.OpenAccount(a, "bench", "Bench", "EUR") for a in ids]
    for i in range(commands - accounts):
        out.append(domain.Deposit(ids[i % accounts], 1_00) if i % 4 else domain.Withdraw(ids[i % accounts], 50))
    return [messages.encode(messages.CommandEnvelope.new(command, "user:bench")) for command in out]


def send_commands(kafka: KafkaSettings, payload: Payload, topic: str | None = None) -> None:
    produce_all(producer(kafka, **{"linger.ms": 5}), topic or kafka.commands_topic, payload)


def raw_round_trip(kafka: KafkaSettings, payload: Payload) -> float:
    """Seconds to produce the messages and consume them all back, plain Kafka."""
    started = time.perf_counter()
    send_commands(kafka, payload, kafka.topic("raw"))
    with consumer(kafka, f"raw-{uuid.uuid4()}") as raw:
        raw.subscribe([kafka.topic("raw")])
        seen = 0
        while seen < len(payload):
            seen += sum(1 for m in raw.consume(1000, 0.5) if m.error() is None)
    return time.perf_counter() - started


class UntransactionalProcessor(Processor):
    """The processor's loop with the transactions taken out: the baseline the issue asks for."""

    def __init__(self, kafka: KafkaSettings, config: ProcessorConfig) -> None:
        super().__init__(kafka, config)
        self.txn.producer = producer(kafka, **{"linger.ms": 5})

    def start(self) -> None:
        self.consumer.subscribe([self.kafka.commands_topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    def process_batch(self) -> int:
        batch = self._without_errors(consume_batch(self.consumer, self.batch_size, self.batch_wait))
        if not batch:
            return 0
        self.decided += sum(self._handle(message, Batch(batch, [], False, [])) for message in batch)
        self.txn.flush(30)
        self.consumer.commit(offsets=next_offsets(batch), asynchronous=False)
        return len(batch)


def run_loop(processor: Processor, total: int) -> float:
    """Seconds for `processor` to decide `total` commands, group joining excluded."""
    processor.start()
    seconds = time_until(processor.process_batch, lambda: processor.decided >= total, "processor")
    processor.close()
    return seconds


def decide_all(payload: Payload, batch_size: int, untransactional: bool = False, **options: object) -> float:
    """Seconds for a processor on topics of its own to decide every command of `payload`."""
    kafka = fresh_kafka("processor")
    send_commands(kafka, payload)
    kind = UntransactionalProcessor if untransactional else Processor
    group = f"{kind.__name__}-{uuid.uuid4().hex[:6]}"
    return run_loop(
        kind(kafka, ProcessorConfig(instance=group, group=group, batch_size=batch_size, **options)), len(payload)
    )  # type: ignore[arg-type]


def main() -> None:
    args = arguments(__doc__, commands=20_000, accounts=500, batch_size=500)
    setup_django()
    kafka = fresh_kafka("processor")
    with admin(kafka) as client:
        raw_topic = NewTopic(kafka.topic("raw"), kafka.partitions, kafka.replication_factor)
        client.create_topics([raw_topic])[raw_topic.topic].result()
    payload = make_commands(args.accounts, args.commands)
    raw = raw_round_trip(kafka, payload)
    plain = decide_all(payload, args.batch_size, untransactional=True)
    transactional = decide_all(payload, args.batch_size)
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
    print(f"decide-and-emit, {n} commands over {args.accounts} accounts, {kafka.partitions} partitions")
    rows = [
        ("raw produce+consume (ceiling)", f"{figures['raw_produce_consume_per_s']:>8,} msg/s"),
        ("same loop, no transactions (baseline)", f"{figures['untransactional_per_s']:>8,} commands/s"),
        ("processor, Kafka transactions", f"{figures['processor_decided_per_s']:>8,} commands/s"),
        ("processor / no-transaction loop", f"{figures['ratio_to_untransactional']:.2f}x (goal >= 0.8x)"),
        ("processor / raw", f"{figures['ratio_to_raw']:.2f}x"),
    ]
    print(table(rows))
    write_results("processor", figures)


if __name__ == "__main__":
    main()
