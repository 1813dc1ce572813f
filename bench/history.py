"""History at scale: an account page's history and a statement's CSV with 1,000,000 entries on one account,
against the newest page of an account with 1,000 entries, in the same run and database.

The audit rows are written straight into a scratch database (one INSERT … SELECT from generate_series:
a deposit of 10.00, every third entry a withdrawal of 3.00, one entry every 30 s), then each page is
asked for through Django's test client as a logged-in owner (routing, middleware, query, template), the
median of `--repeat` requests. The CSV is read as daphne would stream it (the async client), for a
period of `--csv-entries` entries, with the process's peak resident memory before and after.

    .venv/bin/python -m bench.history [--entries 1000000] [--small 1000] [--csv-entries 100000] [--repeat 20]
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil

from bench import harness
from bench.harness import table

START = datetime(2025, 1, 1, tzinfo=UTC)
STEP_SECONDS = 30


def fill(account_id: uuid.UUID, owner: str, entries: int) -> None:
    """An account and its `entries` audit rows, as the projector would have written them."""
    from django.db import connection

    withdrawals = entries // 3
    balance = (entries - withdrawals) * 10_00 - withdrawals * 3_00
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO projections_account (id, owner, name, currency, balance, in_flight, status, opened_at,"
            " last_sequence, updated_at) VALUES (%s, %s, %s, 'EUR', %s, 0, 'open', %s, %s, %s)",
            [account_id, owner, f"{entries:,} entries", balance, START, entries, START],
        )
        cursor.execute(
            "INSERT INTO projections_auditentry (event_id, account_id, sequence, type, amount, balance_after,"
            " occurred_at, actor, command_id, reason, command)"
            " SELECT gen_random_uuid(), %s, s,"
            " CASE WHEN s %% 3 = 0 THEN 'MoneyWithdrawn' ELSE 'MoneyDeposited' END,"
            " CASE WHEN s %% 3 = 0 THEN 300 ELSE 1000 END,"
            " (s - s / 3) * 1000 - (s / 3) * 300,"
            " %s + s * interval '30 seconds', 'user:bench', gen_random_uuid(), '', ''"
            " FROM generate_series(1, %s) AS s",
            [account_id, START, entries],
        )
        cursor.execute("ANALYZE projections_auditentry")


def median_ms(client: Any, url: str, repeat: int, expect: int = 200) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != expect:
            raise SystemExit(f"{url}: {response.status_code}")
    return round(statistics.median(times), 2)


def csv_run(user: Any, account_id: uuid.UUID, start: datetime, days: int) -> tuple[float, int, int, float]:
    """(seconds, bytes, lines, peak RSS growth in MB) for the CSV of `days` days from `start`, streamed."""
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    client = AsyncClient()
    client.force_login(user)
    end = (start + timedelta(days=days - 1)).date()
    url = f"/accounts/{account_id}/statement.csv?start={start.date()}&end={end}"
    process = psutil.Process()

    async def read() -> tuple[int, int, float]:
        response = await client.get(url)
        if response.status_code != 200:
            raise SystemExit(f"{url}: {response.status_code}")
        size = lines = 0
        peak = process.memory_info().rss
        async for part in response.streaming_content:
            size += len(part)
            lines += part.count(b"\n")
            peak = max(peak, process.memory_info().rss)
        return size, lines, peak

    before = process.memory_info().rss
    started = time.perf_counter()
    size, lines, peak = async_to_sync(read)()
    return time.perf_counter() - started, size, lines, round((peak - before) / 2**20, 1)


def main() -> None:
    args = harness.arguments(__doc__, entries=1_000_000, small=1_000, csv_entries=100_000, repeat=20, database=None)
    harness.setup_django()
    database = args.database or harness.scratch_name("bench_history")
    harness.use_bench_database(database)
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.test import Client

    from projections.history import PAGE_SIZE, Filter, page

    run_started = time.perf_counter()
    user = User.objects.create_user("bench", password=uuid.uuid4().hex)
    small, big = uuid.uuid4(), uuid.uuid4()
    started = time.perf_counter()
    fill(small, str(user.pk), args.small)
    fill(big, str(user.pk), args.entries)
    fill_seconds = time.perf_counter() - started

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]  # Django's test client's host
    client = Client()
    client.force_login(user)
    middle = args.entries // 2
    mid_day = (START + timedelta(seconds=STEP_SECONDS * middle)).date()
    day_start = datetime.combine(mid_day, datetime.min.time(), UTC)
    mid_moment = (START + timedelta(seconds=STEP_SECONDS * middle + 7)).strftime("%Y-%m-%dT%H:%M:%S")
    pages = {
        "small_first_page_ms": f"/accounts/{small}/",
        "first_page_ms": f"/accounts/{big}/",
        "middle_page_ms": f"/accounts/{big}/?before={middle}",
        "oldest_page_ms": f"/accounts/{big}/?before={PAGE_SIZE + 1}",
        "newer_from_middle_ms": f"/accounts/{big}/?after={middle}",
        "withdrawals_first_page_ms": f"/accounts/{big}/?kind=withdrawals",
        "one_day_in_the_middle_ms": f"/accounts/{big}/?since={mid_day}&until={mid_day}",
        "as_of_the_middle_ms": f"/accounts/{big}/?at={mid_moment}",
        "chart_365_days_ms": f"/accounts/{big}/?days=365",
    }
    for url in pages.values():  # warm: the first request of a process loads templates and URL patterns
        client.get(url)
    figures: dict[str, Any] = {name: median_ms(client, url, args.repeat) for name, url in pages.items()}
    baseline = figures["small_first_page_ms"]
    # The history's own reads (projections.history.page), without the rest of the page (chart, forms, template).
    queries = {
        "query_small_first_page_ms": (small, Filter(), None, None),
        "query_first_page_ms": (big, Filter(), None, None),
        "query_middle_page_ms": (big, Filter(), middle, None),
        "query_oldest_page_ms": (big, Filter(), PAGE_SIZE + 1, None),
        "query_one_day_in_the_middle_ms": (
            big,
            Filter(since=day_start, until=day_start + timedelta(days=1)),
            None,
            None,
        ),
        "query_withdrawals_page_ms": (big, Filter(kinds=("withdrawals",)), middle, None),
    }
    for name, (account, where, before, after) in queries.items():
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            found = page(account, where, before, after)
            times.append((time.perf_counter() - started) * 1000)
        if not found.entries:
            raise SystemExit(f"{name}: an empty page")
        figures[name] = round(statistics.median(times), 2)

    csv_days = max(1, args.csv_entries * STEP_SECONDS // 86_400)
    csv_start = START + timedelta(days=1)
    csv_seconds, csv_bytes, csv_lines, csv_rss_mb = csv_run(user, big, csv_start, csv_days)
    small_csv_seconds, _, small_lines, _ = csv_run(user, small, START, 1)
    load = os.getloadavg()
    figures |= {
        "entries": args.entries,
        "small_entries": args.small,
        "database": database,
        "fill_seconds": round(fill_seconds, 1),
        "csv_days": csv_days,
        "csv_rows": csv_lines - 3,
        "csv_seconds": round(csv_seconds, 2),
        "csv_rows_per_s": round((csv_lines - 3) / csv_seconds),
        "csv_megabytes": round(csv_bytes / 2**20, 1),
        "csv_peak_rss_growth_mb": csv_rss_mb,
        "small_csv_seconds": round(small_csv_seconds, 3),
        "small_csv_rows": small_lines - 3,
        "first_page_vs_small": round(figures["first_page_ms"] / baseline, 2),
        "load_average": [round(x, 2) for x in load],
        "run_seconds": round(time.perf_counter() - run_started, 1),
    }
    print(f"history, {args.entries:,} entries on one account against {args.small:,}, {database}, load {load[0]:.1f}")
    ms = "{:>8.1f} ms".format
    rows = [(f"{args.small:,} entries: newest page (baseline)", ms(baseline))]
    for name in pages:
        if name != "small_first_page_ms":
            ratio = figures[name] / baseline
            rows.append(
                (
                    f"{args.entries:,} entries: {name.removesuffix('_ms').replace('_', ' ')}",
                    f"{ms(figures[name])}  {ratio:.2f}x",
                )
            )
    query_baseline = figures["query_small_first_page_ms"]
    rows.append((f"{args.small:,} entries: history query, newest page (baseline)", ms(query_baseline)))
    for name in queries:
        if name != "query_small_first_page_ms":
            label = f"{args.entries:,} entries: history {name.removesuffix('_ms').replace('_', ' ')}"
            rows.append((label, f"{ms(figures[name])}  {figures[name] / query_baseline:.2f}x"))
    rows.append(
        (
            f"CSV statement, {figures['csv_rows']:,} entries ({csv_days} days)",
            f"{csv_seconds:8.2f} s  ({figures['csv_rows_per_s']:,} rows/s, {figures['csv_megabytes']} MB,"
            f" peak RSS +{csv_rss_mb} MB)",
        )
    )
    rows.append((f"CSV statement, {figures['small_csv_rows']:,} entries", f"{small_csv_seconds:8.3f} s"))
    print(table(rows) + f"\n  (whole run {figures['run_seconds']:.0f}s)")
    harness.write_results("history", figures)


if __name__ == "__main__":
    main()
