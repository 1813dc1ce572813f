"""Baseline for replay: the Python `eventsourcing` library rebuilding the same balances projection.

The same events as bench/projection.py (same generator, seed and account count) are stored in the
library's PostgreSQL recorder (`eventsourcing.postgres`, an `Application` whose `BankAccount`
aggregate has one event class per bank event, with the envelope's sequence as originator_version,
occurred_at as timestamp, and event_id, command_id and actor in the payload). Storing is set-up:
`Application.save(*events)` in chunks, timed but not a figure. `--reuse` keeps what an earlier run
stored when it is the same `--events`/`--accounts`.

Then, from an empty `balances` table (account id -> balance, as the Account projection's balance
column), the projection is rebuilt from every stored event and checked against the generator's
expected balances, two ways:

1. runner: the library's own projection path, `eventsourcing.projection.ProjectionRunner` with a
   `Projection` (singledispatch `process_event`) and a materialised view that subclasses
   `PostgresTrackingRecorder`: every event is applied in its own transaction with its tracking row,
   as the library's documentation and tests do it;
2. paged: the same `Projection`, fed by `app.recorder.select_notifications` in pages of `--page`
   events (`app.mapper.to_domain_event` for each), its view buffering the page and upserting the
   page's balances with one tracking row in one transaction: the fastest rebuild the library's
   API allows without leaving it.

The faster of the two rebuilds is the baseline that `manage.py replay` (bench/projection.py) is held
against: the goal is replay >= 10x it.

The library is in requirements.txt (`eventsourcing[postgres]`, for this benchmark only). It writes to a database of its own (`--database`, default `bank_bench_es` beside `bank`, created with the DATABASE_URL role;
other sizes default to `bank_bench_es_EVENTS_ACCOUNTS`, so a smoke test keeps the stored 1,000,000).

    .venv/bin/python -m bench.eventsourcing_baseline [--events 1000000] [--accounts 10000] [--reuse]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import time
import uuid
from collections.abc import Iterator
from typing import Any

from eventsourcing.application import Application
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.domain import Aggregate, DomainEventProtocol
from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore, PostgresTrackingRecorder
from eventsourcing.projection import Projection, ProjectionRunner
from eventsourcing.utils import get_topic
from psycopg.sql import SQL, Identifier

from bank import domain, messages
from bench import harness
from bench.harness import Expected, generate, table

ES_VERSION = importlib.metadata.version("eventsourcing")

# --- the write model, as a user of the library would declare it ---


class BankAccount(Aggregate):
    """A bank account; its events carry what our envelopes carry."""

    class Opened(Aggregate.Created):
        owner: str
        name: str
        currency: str
        event_id: uuid.UUID
        command_id: uuid.UUID
        actor: str

    def __init__(self, owner: str, name: str, currency: str) -> None:
        self.owner = owner
        self.name = name
        self.currency = currency
        self.balance = 0
        self.closed = False

    class Deposited(Aggregate.Event):
        amount: int
        balance: int
        event_id: uuid.UUID
        command_id: uuid.UUID
        actor: str

        def apply(self, account: BankAccount) -> None:
            account.balance = self.balance

    class Withdrawn(Aggregate.Event):
        amount: int
        balance: int
        event_id: uuid.UUID
        command_id: uuid.UUID
        actor: str

        def apply(self, account: BankAccount) -> None:
            account.balance = self.balance

    class Closed(Aggregate.Event):
        event_id: uuid.UUID
        command_id: uuid.UUID
        actor: str

        def apply(self, account: BankAccount) -> None:
            account.closed = True

    class Rejected(Aggregate.Event):
        command: str
        reason: str
        amount: int | None
        event_id: uuid.UUID
        command_id: uuid.UUID
        actor: str


class BankAccounts(Application[uuid.UUID]):
    """The write side; its events are stored in the `bankaccounts_events` table."""


ACCOUNT_TOPIC = get_topic(BankAccount)


def to_library_event(envelope: messages.EventEnvelope) -> DomainEventProtocol[uuid.UUID]:
    """Our envelope as the library's aggregate event (sequence -> originator_version, occurred_at -> timestamp)."""
    common = {
        "originator_id": envelope.account_id,
        "originator_version": envelope.sequence,
        "timestamp": envelope.occurred_at,
        "event_id": envelope.event_id,
        "command_id": envelope.command_id,
        "actor": envelope.actor,
    }
    match envelope.event:
        case domain.AccountOpened(owner=owner, name=name, currency=currency):
            return BankAccount.Opened(
                originator_topic=ACCOUNT_TOPIC, owner=owner, name=name, currency=currency, **common
            )
        case domain.MoneyDeposited(amount=amount, balance=balance):
            return BankAccount.Deposited(amount=amount, balance=balance, **common)
        case domain.MoneyWithdrawn(amount=amount, balance=balance):
            return BankAccount.Withdrawn(amount=amount, balance=balance, **common)
        case domain.AccountClosed():
            return BankAccount.Closed(**common)
        case domain.CommandRejected(command=command, reason=reason, amount=amount):
            return BankAccount.Rejected(command=command, reason=reason.value, amount=amount, **common)
    raise TypeError(f"unknown event {envelope.event!r}")


# --- the read model: a balances table, maintained the library's way ---


class BalancesView(PostgresTrackingRecorder):
    """Materialised view: `balances` (account id -> balance) plus the library's tracking table.

    Each change is written in one transaction with its tracking row, as the library's projection
    views do (exactly-once: a second tracking row for the same position raises IntegrityError).
    """

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        schema = Identifier(self.datastore.schema)
        self.balances_table = SQL("{0}.{1}").format(schema, Identifier("balances"))
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {0} (account_id uuid PRIMARY KEY, balance bigint NOT NULL DEFAULT 0)"
            ).format(self.balances_table)
        )
        self.upsert_balance = SQL(
            "INSERT INTO {0} (account_id, balance) VALUES (%s, %s) "
            "ON CONFLICT (account_id) DO UPDATE SET balance = EXCLUDED.balance"
        ).format(self.balances_table)

    def set_balance(self, account_id: uuid.UUID, balance: int, tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as curs:
            self._insert_tracking(curs, tracking)
            curs.execute(self.upsert_balance, (account_id, balance), prepare=True)

    def balances(self) -> dict[uuid.UUID, int]:
        with self.datastore.transaction() as curs:
            curs.execute(SQL("SELECT account_id, balance FROM {0}").format(self.balances_table))
            return {row["account_id"]: row["balance"] for row in curs.fetchall()}

    def reset(self, application_name: str) -> None:
        """Empty the view and forget how far it got, so the next run rebuilds from the first event."""
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(SQL("TRUNCATE {0}").format(self.balances_table))
            curs.execute(
                SQL("DELETE FROM {0}.{1} WHERE application_name = %s").format(
                    Identifier(self.datastore.schema), Identifier(self.tracking_table_name)
                ),
                (application_name,),
            )


class PagedBalancesView(BalancesView):
    """The same view, buffering a page of changes and writing them with one tracking row in one transaction."""

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self.pending: dict[uuid.UUID, int] = {}
        self.last: Tracking | None = None

    def set_balance(self, account_id: uuid.UUID, balance: int, tracking: Tracking) -> None:
        self.pending[account_id] = balance
        self.last = tracking

    def insert_tracking(self, tracking: Tracking) -> None:
        self.last = tracking

    def flush(self) -> None:
        if self.last is None:
            return
        with self.datastore.transaction(commit=True) as curs:
            self._insert_tracking(curs, self.last)
            if self.pending:
                curs.executemany(self.upsert_balance, list(self.pending.items()))
        self.pending = {}
        self.last = None


class Balances(Projection[BalancesView]):
    """Account id -> balance, the Account projection's balance column."""

    name = "balances"

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Events that change no balance (rejections, closing) only move the tracking position."""
        self.view.insert_tracking(tracking)

    @process_event.register(BankAccount.Opened)
    def opened(self, domain_event: BankAccount.Opened, tracking: Tracking) -> None:
        self.view.set_balance(domain_event.originator_id, 0, tracking)

    @process_event.register(BankAccount.Deposited)
    @process_event.register(BankAccount.Withdrawn)
    def moved(self, domain_event: BankAccount.Deposited | BankAccount.Withdrawn, tracking: Tracking) -> None:
        self.view.set_balance(domain_event.originator_id, domain_event.balance, tracking)


# --- the database ---


def database_env(name: str) -> dict[str, str]:
    """The library's settings for database `name` (created if missing), with the DATABASE_URL role."""
    params = harness.bench_database(name)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        **{f"POSTGRES_{key.upper()}": params[key] for key in ("host", "port", "user", "password")},
        "POSTGRES_DBNAME": name,
        # A few connections per pool (the defaults open 5, up to 15): other benchmarks share the server.
        "POSTGRES_POOL_SIZE": "2",
        "POSTGRES_MAX_OVERFLOW": "2",
    }


# What the events table holds; "_decided" since the generator runs the domain's decide (older sets differ).
META = SQL(
    "CREATE TABLE IF NOT EXISTS bench_meta_decided "
    "(events bigint NOT NULL, accounts bigint NOT NULL, seed bigint NOT NULL, store_seconds float8 NOT NULL)"
)


def stored_run(recorder: PostgresApplicationRecorder) -> tuple[int, int, int, float] | None:
    """(events, accounts, seed, store seconds) of what the events table holds, if it is complete."""
    with recorder.datastore.transaction(commit=True) as curs:
        curs.execute(META)
        curs.execute("SELECT events, accounts, seed, store_seconds FROM bench_meta_decided")
        row = curs.fetchone()
        curs.execute(SQL("SELECT count(*) AS n FROM {0}").format(Identifier(recorder.events_table_name)))
        count = curs.fetchone()["n"]  # type: ignore[index]
    if row is None or count != row["events"]:
        return None
    return row["events"], row["accounts"], row["seed"], row["store_seconds"]


# --- storing (set-up) ---


def store(app: BankAccounts, events: int, accounts: int, seed: int, chunk: int) -> tuple[Expected, float]:
    """Store the generated events through `app.save` in chunks, in stream order. (expected state, seconds)."""
    recorder = app.recorder
    assert isinstance(recorder, PostgresApplicationRecorder)
    with recorder.datastore.transaction(commit=True) as curs:
        curs.execute(META)
        curs.execute("TRUNCATE bench_meta_decided")
        curs.execute(SQL("TRUNCATE {0} RESTART IDENTITY").format(Identifier(recorder.events_table_name)))
    expected = Expected()
    started = time.perf_counter()
    batch: list[DomainEventProtocol[uuid.UUID]] = []
    stored = 0
    for envelope in generate(events, accounts, expected, seed=seed):
        batch.append(to_library_event(envelope))
        if len(batch) == chunk:
            app.save(*batch)
            stored += len(batch)
            batch = []
            if stored % (chunk * 10) == 0:
                print(f"  stored {stored:,} of {events:,} ({time.perf_counter() - started:.0f}s)", flush=True)
    if batch:
        app.save(*batch)
    seconds = time.perf_counter() - started
    with recorder.datastore.transaction(commit=True) as curs:
        curs.execute(
            "INSERT INTO bench_meta_decided (events, accounts, seed, store_seconds) VALUES (%s, %s, %s, %s)",
            (events, accounts, seed, seconds),
        )
        curs.execute(SQL("ANALYZE {0}").format(Identifier(recorder.events_table_name)))
    return expected, seconds


def expected_only(events: int, accounts: int, seed: int) -> Expected:
    expected = Expected()
    for _ in generate(events, accounts, expected, seed=seed):
        pass
    return expected


# --- the measurements ---


def notifications(app: BankAccounts, page: int) -> Iterator[list[Any]]:
    """Every stored event in notification order, a page at a time (the recorder's select_notifications)."""
    last = 0
    while True:
        got = app.recorder.select_notifications(start=last, limit=page, inclusive_of_start=False)
        if not got:
            return
        yield list(got)
        last = got[-1].id


def paged_rebuild(app: BankAccounts, view: PagedBalancesView, page: int) -> float:
    """Seconds to rebuild the view from the first event, one transaction per page."""
    projection = Balances(view=view)
    to_domain_event = app.mapper.to_domain_event
    name = app.name
    started = time.perf_counter()
    for got in notifications(app, page):
        for notification in got:
            projection.process_event(to_domain_event(notification), Tracking(name, notification.id))
        view.flush()
    return time.perf_counter() - started


def runner_rebuild(env: dict[str, str], last_id: int, timeout: float, budget: float | None = None) -> tuple[int, float]:
    """(events processed, seconds) for the library's ProjectionRunner from the first event to `last_id`.

    With a `budget`, it stops after that many seconds: one transaction per event makes its rate
    steady, and a full 1,000,000 takes over ten minutes.
    """
    started = time.perf_counter()
    with ProjectionRunner(
        application_class=BankAccounts, projection_class=Balances, view_class=BalancesView, env=env
    ) as runner:
        view = runner.projection.view
        deadline = time.monotonic() + timeout
        report = time.monotonic() + 60
        while (done := view.max_tracking_id(runner.app_name) or 0) < last_id:
            runner.run_forever(timeout=0.02)  # re-raises an error of the processing thread
            if time.monotonic() > report:
                print(f"  runner at {done:,} of {last_id:,} ({time.perf_counter() - started:.0f}s)", flush=True)
                report += 60
            if budget is not None and time.perf_counter() - started > budget:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"runner: not caught up after {timeout:.0f}s")
        seconds = time.perf_counter() - started
        done = view.max_tracking_id(runner.app_name) or 0
    return done, seconds


def check(view: BalancesView, expected: Expected, what: str) -> None:
    got = view.balances()
    if got != expected.balances:
        wrong = [k for k in expected.balances if got.get(k) != expected.balances[k]]
        raise SystemExit(
            f"{what}: balances do not match the events: {len(got)} rows, {len(wrong)} wrong (e.g. {wrong[:3]})"
        )


def our_replay(events: int) -> int | None:
    """replay_per_s from bench/results/projection.json, when it was measured on as many events."""
    ours = harness.read_results("projection") or {}
    return ours.get("replay_per_s") if ours.get("events") == events else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--database",
        help="scratch database of its own (default: DATABASE_URL's + _bench_es, or + _bench_es_EVENTS_ACCOUNTS for "
        "other sizes, so that a smoke test keeps the stored 1,000,000)",
    )
    parser.add_argument("--reuse", action="store_true", help="keep the stored events if they are this run's")
    parser.add_argument("--chunk", type=int, default=10_000, help="events per app.save() when storing")
    parser.add_argument("--page", type=int, default=10_000, help="events per page (and transaction) when paged")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds the runner may take")
    parser.add_argument("--runner-budget", type=float, help="stop the runner after this many seconds; rate over those")
    args = parser.parse_args()
    harness.setup_django()
    if args.database is None:
        default = (args.events, args.accounts) == (parser.get_default("events"), parser.get_default("accounts"))
        args.database = harness.scratch_name("bench_es" if default else f"bench_es_{args.events}_{args.accounts}")
    run_started = time.perf_counter()

    env = database_env(args.database)
    app = BankAccounts(env=env)
    recorder = app.recorder
    assert isinstance(recorder, PostgresApplicationRecorder)

    previous = stored_run(recorder)
    if args.reuse and previous is not None and previous[:3] == (args.events, args.accounts, args.seed):
        print(f"reusing the {args.events:,} events stored in {args.database} ({previous[3]:.0f}s to store)")
        expected = expected_only(args.events, args.accounts, args.seed)
        store_seconds, reused = previous[3], True
    else:
        print(f"storing {args.events:,} events over {args.accounts:,} accounts in {args.database} ...", flush=True)
        expected, store_seconds = store(app, args.events, args.accounts, args.seed, args.chunk)
        reused = False
    last_id = recorder.max_notification_id() or 0
    if last_id != args.events:
        raise SystemExit(f"the events table ends at notification {last_id}, not {args.events}")
    account = app.repository.get(next(iter(expected.balances)))
    if account.balance != next(iter(expected.balances.values())):
        raise SystemExit("an aggregate rebuilt by the repository does not have its expected balance")

    seconds: dict[str, float] = {}
    runner_events = args.events
    datastore = app.factory.datastore  # type: ignore[attr-defined]
    paged = PagedBalancesView(datastore, tracking_table_name="balances_tracking")
    paged.create_table()
    paged.reset(app.name)
    seconds["paged"] = paged_rebuild(app, paged, args.page)
    check(paged, expected, "paged")
    runner_view = BalancesView(datastore, tracking_table_name="balances_tracking")  # the same tables
    runner_view.reset(app.name)
    print("runner: one transaction per event ...", flush=True)
    done, seconds["runner"] = runner_rebuild(env, last_id, args.timeout, args.runner_budget)
    if done >= last_id:
        check(runner_view, expected, "runner")
    else:
        runner_events = done  # a rate over the first `done` events, within the budget
        print(f"runner: {done:,} events in its {args.runner_budget:.0f}s budget; rate measured over those")
    app.close()

    counted = {"paged": args.events, "runner": runner_events}
    rates = {mode: round(counted[mode] / s) for mode, s in seconds.items()}
    baseline_mode = max(rates, key=lambda m: rates[m])
    ours = our_replay(args.events)
    figures: dict[str, Any] = {
        "events": args.events,
        "accounts": args.accounts,
        "event_types": expected.types,
        "database": args.database,
        "library": f"eventsourcing {ES_VERSION}",
        "stored_now": not reused,
        "store_seconds": round(store_seconds, 1),
        "store_per_s": round(args.events / store_seconds),
        "store_chunk": args.chunk,
        "page": args.page,
        **{f"{mode}_rebuild_seconds": round(s, 2) for mode, s in seconds.items()},
        **{f"{mode}_rebuild_per_s": rate for mode, rate in rates.items()},
        "runner_events_measured": runner_events,
        "baseline": baseline_mode,
        "baseline_per_s": rates[baseline_mode],
        "our_replay_per_s": ours,
        "replay_vs_baseline": round(ours / rates[baseline_mode], 2) if ours else None,
        **{f"replay_vs_{mode}": round(ours / rate, 2) if ours else None for mode, rate in rates.items()},
        "run_seconds": round(time.perf_counter() - run_started, 1),
    }
    print(
        f"eventsourcing {ES_VERSION}, {args.events:,} events over {args.accounts:,} accounts, database {args.database}"
    )
    stored = f"{figures['store_per_s']:>9,} events/s ({store_seconds:.1f}s{', earlier run' if reused else ''})"
    rows = [("events", f"{args.events:>9,}"), ("store: app.save() in chunks (set-up, not a figure)", stored)]
    rows.append((f"rebuild, paged ({args.page:,} events per transaction)", f"{rates['paged']:>9,} events/s"))
    rows.append(("rebuild, ProjectionRunner (a transaction per event)", f"{rates['runner']:>9,} events/s"))
    if ours:
        rows.append(("our replay (bench/results/projection.json)", f"{ours:>9,} events/s"))
        for mode in rates:
            goal = " (goal >= 10x)" if mode == baseline_mode else ""
            rows.append((f"our replay / {mode} rebuild{goal}", f"{figures[f'replay_vs_{mode}']:.2f}x"))
    print(table(rows))
    print(f"  (whole run {figures['run_seconds']:.0f}s)")
    harness.write_results("eventsourcing", figures)


if __name__ == "__main__":
    main()
