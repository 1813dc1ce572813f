"""The four headline figures from bench/results/*.json, and their plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def headline(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Ratios to the baselines measured in the same run, with the lines to print."""
    out: dict[str, Any] = {"lines": [], "bars": []}

    def add(group: str, label: str, value: float, baseline: float, unit: str, goal: str) -> None:
        ratio = value / baseline if baseline else 0.0
        bar = {"group": group, "label": label, "ratio": round(ratio, 3), "value": value, "baseline": baseline}
        out["bars"].append(bar | {"unit": unit})
        out["lines"].append(
            f"  {group:<12} {label:<44} {value:>10,.0f} vs {baseline:>10,.0f} {unit:<9} {ratio:5.2f}x  ({goal})"
        )

    if web := results.get("http"):
        c, b = web["command"], web["baseline"]
        add("HTTP", "deposit commands vs update-in-place", c["per_s"], b["per_s"], "req/s", "goal >= 1.0x, target 1.3x")
        out["lines"].append(
            f"  {'':<12} p50 {c['p50_ms']:.1f} vs {b['p50_ms']:.1f} ms, p99 {c['p99_ms']:.1f} vs {b['p99_ms']:.1f} ms (goal: p99 no worse)"
        )
        for n, tier in web.get("by_processes", {}).items():
            if int(n) != web.get("processes", 1):
                c, b = tier["command"], tier["baseline"]
                label = f"… with {n} web processes"
                add("HTTP", label, c["per_s"], b["per_s"], "req/s", f"p99 {tier['p99_ratio']:.2f}x; goal >= 1.0x")
    if proc := results.get("processor"):
        for key, label, goal in (
            ("untransactional_per_s", "transactions vs the same loop without", "goal >= 0.8x"),
            ("raw_produce_consume_per_s", "transactions vs raw produce+consume", "ceiling"),
        ):
            add("processor", label, proc["processor_decided_per_s"], proc[key], "cmd/s", goal)
    if proj := results.get("projection"):
        projector, ceiling = proj["projector_per_s"], proj["ceiling_consume_decode_per_s"]
        add("projection", "live projector vs consume+decode ceiling", projector, ceiling, "events/s", "goal >= 0.2x")
        add("projection", "replay vs live projector", proj["replay_per_s"], projector, "events/s", "goal >= 2x")
        if es := results.get("eventsourcing"):
            replay = proj.get("replay_accounts_per_s") or proj["replay_per_s"]
            runner, paged = es["runner_rebuild_per_s"], es["paged_rebuild_per_s"]
            add("projection", "replay vs eventsourcing ProjectionRunner", replay, runner, "events/s", "goal >= 10x")
            add("projection", "replay vs eventsourcing, paged by hand", replay, paged, "events/s", "for reference")
    if lat := results.get("latency"):
        for rate in lat["rates"]:
            q = rate["latency_ms"]
            out["lines"].append(
                f"  {'latency':<12} {rate['rate']:>4}/s: p50 {q['p50']:.0f} ms, p95 {q['p95']:.0f} ms, p99 {q['p99']:.0f} ms"
                f"{'' if rate.get('held') else '  (not held)'}"
            )
        out["latency"] = [{"rate": r["rate"], **r["latency_ms"], "held": r.get("held")} for r in lat["rates"]]
        out["lines"].append(
            f"  {'latency':<12} highest rate held: {lat.get('max_held_rate')}/s (goal: p99 < 100 ms at 200/s)"
        )
        out["max_held_rate"] = lat.get("max_held_rate")
    return out


def plot(figures: dict[str, Any], path: Path, meta: dict[str, str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [3, 2]})
    bars = figures["bars"]
    labels = [f"{b['group']}: {b['label']}" for b in bars]
    ratios = [b["ratio"] for b in bars]
    colors = ["#1a7f4b" if r >= 1 else "#2753d7" for r in ratios]
    left.barh(range(len(bars)), ratios, color=colors)
    left.set_yticks(range(len(bars)), labels, fontsize=8)
    left.invert_yaxis()
    left.axvline(1.0, color="#999", linestyle="--", linewidth=1)
    left.set_xscale("log")
    left.set_xlabel("ratio to the baseline measured in the same run (log scale)")
    for i, r in enumerate(ratios):
        left.text(r, i, f" {r:.2f}x", va="center", fontsize=8)
    left.set_title("Throughput against baselines")
    if figures.get("latency"):
        rates = [p["rate"] for p in figures["latency"]]
        for key, style in (("p50", "-o"), ("p95", "-s"), ("p99", "-^")):
            right.plot(rates, [p[key] for p in figures["latency"]], style, label=key)
        right.axhline(100, color="#b42318", linestyle="--", linewidth=1, label="goal p99 < 100 ms")
        right.set_yscale("log")
        right.set_xlabel("commands per second (open loop)")
        right.set_ylabel("view accepted → websocket update (ms)")
        right.legend()
        right.set_title("End-to-end latency")
    fig.suptitle(f"Kafka Bank benchmarks — {meta['machine']}, {meta['date']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
