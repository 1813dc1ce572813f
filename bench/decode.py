"""Decoding speed: `messages.decode_event` against parsing the same bytes with orjson alone.

Builds `--events` encoded event envelopes in memory (commands decided by `domain.decide`,
folded with `domain.evolve`, over `--accounts` accounts), then times, best of `--repeat`:

1. baseline: `orjson.loads` of every value (JSON parsing only, no checks, no objects);
2. ours: `messages.decode_event` of every value (envelope and data validated, upcast, the
   domain's event built), the projector's and replay's per-event cost.

No broker, no database. CPU-bound and noisy on a shared machine: compare the two figures
of one run, not figures across runs. Writes bench/results/decode.json.

    .venv/bin/python -m bench.decode [--events 200000] [--accounts 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from bank import domain, messages

RESULTS = Path(os.environ.get("BENCH_RESULTS_DIR") or Path(__file__).resolve().parent / "results")


def encoded_events(events: int, accounts: int, seed: int = 42) -> list[bytes]:
    """`events` encoded envelopes: each account opened first, then deposits and withdrawals, some rejected."""
    rng = random.Random(seed)
    states = [domain.Account.new(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(accounts)]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    out: list[bytes] = []
    while len(out) < events:
        i = rng.randrange(accounts)
        state = states[i]
        command: domain.Command
        if state.status is domain.Status.NONE:
            command = domain.OpenAccount(state.account_id, str(i % 997 + 1), f"Account {i}", "EUR")
        elif rng.random() < 0.55:
            command = domain.Deposit(state.account_id, rng.randrange(0, 50_000))
        else:
            command = domain.Withdraw(state.account_id, rng.randrange(1, 40_000))
        for event in domain.decide(state, command):
            state = domain.evolve(state, event)
            envelope = messages.EventEnvelope(
                event=event,
                event_id=uuid.UUID(int=rng.getrandbits(128), version=4),
                account_id=state.account_id,
                sequence=state.version,
                occurred_at=start + timedelta(milliseconds=len(out)),
                command_id=uuid.UUID(int=rng.getrandbits(128), version=4),
                actor=f"user:{i % 997 + 1}",
            )
            out.append(messages.encode(envelope)[1])
        states[i] = state
    return out[:events]


def best_rates(decoders: dict[str, Callable[[bytes], Any]], values: list[bytes], repeat: int) -> dict[str, float]:
    """Events per second of each decoder's fastest pass; passes alternate, so a busy spell hits both alike."""
    best = dict.fromkeys(decoders, float("inf"))
    for _ in range(repeat):
        for name, decode in decoders.items():
            started = time.perf_counter()
            for value in values:
                decode(value)
            best[name] = min(best[name], time.perf_counter() - started)
    return {name: len(values) / seconds for name, seconds in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    values = encoded_events(args.events, args.accounts)
    rates = best_rates({"parse_only": orjson.loads, "decode": messages.decode_event}, values, args.repeat)
    parse_only, decode = rates["parse_only"], rates["decode"]
    figures = {
        "events": len(values),
        "parse_only_per_s": round(parse_only),
        "decode_event_per_s": round(decode),
        "decode_us_per_event": round(1e6 / decode, 2),
        "decode_vs_parse_only": round(decode / parse_only, 3),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (RESULTS / "decode.json").write_text(json.dumps({"benchmark": "decode", "when": when, **figures}, indent=2) + "\n")
    print(f"decode of {len(values):,} events, best of {args.repeat} alternating passes (noisy on a shared machine)")
    print(f"  orjson.loads alone (baseline)  {parse_only:>12,.0f} events/s")
    print(f"  messages.decode_event          {decode:>12,.0f} events/s  ({1e6 / decode:.2f} µs/event)")
    print(f"  ratio to the baseline          {decode / parse_only:>12.2f}x")


if __name__ == "__main__":
    main()
