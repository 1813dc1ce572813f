"""Foreign records on the processor's compacted state topic (bank.account-state): recovery trusts only what it wrote.

The events are the truth; a state record the processor could not have written (garbage, a tombstone, a key that
is not its account, an offset past the log) makes the load fold that partition's events instead.
"""

from __future__ import annotations

import uuid
from uuid import UUID

import orjson
import pytest

from bank import domain, messages
from bank.config import KafkaSettings
from bank.kafka import end_offsets
from bank.quarantine import quarantined
from consumers.recovery import Loader
from tests.helpers import Fold, produce_raw, raw_events, read_events, read_raw
from tests.test_recovery import fold, in_process, produce_commands, run_until

pytestmark = pytest.mark.timeout(120)


def settled_bank(kafka: KafkaSettings, n: int = 12) -> list[UUID]:
    """`n` accounts opened, then given a deposit each by a second processor, so that the states written last
    reflect an offset past the accounts' first events (the load reads only the events after it)."""
    accounts = [uuid.uuid4() for _ in range(n)]
    for command in (lambda a: domain.OpenAccount(a, "alice", "Main", "EUR"), lambda a: domain.Deposit(a, 2_00)):
        produce_commands(kafka, [messages.CommandEnvelope.new(command(a), "user:alice") for a in accounts])
        processor = in_process(kafka, state_every=1)
        run_until(processor, lambda: processor.decided >= n)  # noqa: B023 - called within the iteration
        run_until(processor, lambda: not any(part.dirty for part in processor.partitions.values()), 60)  # noqa: B023
        processor.close()
    return accounts


def states_by_partition(kafka: KafkaSettings) -> dict[int, dict[bytes, bytes]]:
    found: dict[int, dict[bytes, bytes]] = {}
    for m in read_raw(kafka, kafka.state_topic):
        found.setdefault(m.partition(), {})[m.key()] = m.value()
    return found


def loaded_states(kafka: KafkaSettings) -> dict[UUID, domain.Account]:
    loaded, _ = Loader(kafka).load(range(kafka.partitions))
    return {a: r.state for part in loaded.values() for a, r in part.accounts.items()}


def test_a_tombstone_a_borrowed_key_or_an_offset_past_the_log_never_decides_an_accounts_state(
    kafka: KafkaSettings,
) -> None:
    settled_bank(kafka)
    states = states_by_partition(kafka)
    assert len(states) == 3, "the test needs accounts on every partition"
    (p0, s0), (p1, s1), (p2, s2) = sorted(states.items())
    # A tombstone for a real account: the processor would forget it (its events are before the tail it reads).
    produce_raw(kafka, kafka.state_topic, next(iter(s0)), None, p0)  # type: ignore[arg-type]
    # A real account's state under another key, with money it never had: the last record per key wins.
    rich = orjson.loads(next(iter(s1.values()))) | {"balance": 999_999_999_00}
    produce_raw(kafka, kafka.state_topic, b"not-an-account", orjson.dumps(rich), p1)
    # A state that claims to reflect an offset of bank.events far past its end.
    far = orjson.loads(next(iter(s2.values()))) | {"events_offset": 10**15}
    produce_raw(kafka, kafka.state_topic, far["account_id"].encode(), orjson.dumps(far), p2)

    assert loaded_states(kafka) == fold(read_events(kafka))


def test_garbage_on_the_state_topic_is_folded_around_and_the_processor_keeps_deciding(kafka: KafkaSettings) -> None:
    accounts = settled_bank(kafka)
    real = orjson.loads(next(v for s in states_by_partition(kafka).values() for v in s.values()))
    garbage = [
        b"",
        b"\xff\xfe not utf-8",
        b"null",
        b"[]",
        b'"a string"',
        b"12",
        b"[" * 5000 + b"]" * 5000,  # deeper than any JSON parser nests
        orjson.dumps(real | {"format": "2"}),  # numbers as strings
        orjson.dumps(real | {"balance": "1e309"}),
        orjson.dumps(real | {"balance": -(2**63)}),
        orjson.dumps(real | {"status": "rich"}),
        orjson.dumps(real | {"transfers": {"x": 1}}),
        orjson.dumps(real | {"command_ids": "!!"}),
        orjson.dumps({"format": 2}),
        b"x" * 900_000,  # near the broker's default limit of 1 MB
    ]
    for i, value in enumerate(garbage):  # each on one partition, every partition some
        key = None if i % 2 else str(accounts[i % len(accounts)]).encode()
        produce_raw(kafka, kafka.state_topic, key, value, i % kafka.partitions)
    assert loaded_states(kafka) == fold(read_events(kafka))
    assert quarantined(kafka) == {}  # what bank_status and deadletters list

    processor = in_process(kafka)
    before = sum(end_offsets(kafka, kafka.events_topic).values())
    produce_commands(kafka, [messages.CommandEnvelope.new(domain.Withdraw(a, 50), "user:alice") for a in accounts])
    run_until(processor, lambda: processor.decided >= len(accounts))
    processor.close()
    assert sum(end_offsets(kafka, kafka.events_topic).values()) - before >= len(accounts)
    oracle = Fold.of(raw_events(kafka))
    oracle.check()
    assert all(oracle.balances[str(a)] == 1_50 for a in accounts)
