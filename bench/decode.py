"""Decoding speed: `messages.decode_event` (validate, upcast, build the domain event) against `orjson.loads` alone.

Over `--events` envelopes encoded in memory, best of `--repeat` alternating passes; no broker, no database.
CPU-bound and noisy on a shared machine: compare the two figures of one run.

    .venv/bin/python -m bench.decode [--events 200000] [--accounts 1000] [--repeat 5]
"""

from __future__ import annotations

import time

import orjson

from bank import messages
from bench.harness import arguments, generate, write_results


def main() -> None:
    args = arguments(__doc__, events=200_000, accounts=1_000, repeat=5)
    values = [messages.encode(envelope)[1] for envelope in generate(args.events, args.accounts)]
    decoders = {"parse_only": orjson.loads, "decode": messages.decode_event}
    best = dict.fromkeys(decoders, float("inf"))
    for _ in range(args.repeat):
        for name, decode in decoders.items():
            started = time.perf_counter()
            for value in values:
                decode(value)
            best[name] = min(best[name], time.perf_counter() - started)
    parse_only, decode = len(values) / best["parse_only"], len(values) / best["decode"]
    write_results(
        "decode",
        {
            "events": len(values),
            "parse_only_per_s": round(parse_only),
            "decode_event_per_s": round(decode),
            "decode_us_per_event": round(1e6 / decode, 2),
            "decode_vs_parse_only": round(decode / parse_only, 3),
        },
    )
    print(f"decode of {len(values):,} events, best of {args.repeat} alternating passes (noisy on a shared machine)")
    print(f"  orjson.loads alone (baseline)  {parse_only:>12,.0f} events/s")
    print(f"  messages.decode_event          {decode:>12,.0f} events/s  ({1e6 / decode:.2f} µs/event)")
    print(f"  ratio to the baseline          {decode / parse_only:>12.2f}x")


if __name__ == "__main__":
    main()
