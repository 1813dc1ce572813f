"""Baseline for replay: the `eventsourcing` library rebuilding the same balances projection.

The events of bench/projection.py (same generator and seed) are stored as a `BankAccount` aggregate's
events with the library's PostgreSQL recorder (set-up; `--reuse` keeps an earlier run's of the same size),
then a `balances` table is rebuilt from them and checked, two ways: the library's `ProjectionRunner` (one
transaction per event, as its documentation does; `--runner-budget` seconds at most) and the same
`Projection` paged by hand (`select_notifications`, one transaction per `--page`). The faster is the
baseline for `manage.py replay` (goal >= 10x). Database: DATABASE_URL's name + `_bench_es[_EVENTS_ACCOUNTS]`.

    .venv/bin/python -m bench.eventsourcing_baseline [--events 1000000] [--accounts 10000] [--reuse]
"""

from __future__ import annotations

import importlib.metadata
import time
import uuid
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


class BankAccount(Aggregate):
    """A bank account, as a user of the library would declare it; its events carry what our envelopes carry."""

    class Opened(Aggregate.Created):
        owner: str
        name: str
        currency: str
        event_id: uuid.UUID
        command_id: uuid.UUID
        actor: str

    def __init__(self, owner: str, name: str, currency: str) -> None:
        self.owner, self.name, self.currency = owner, name, currency
        self.balance = 0
        self.closed = False

    class Traced(Aggregate.Event):
        event_id: uuid.UUID
        command_id: uuid.UUID
        actor: str

    class Moved(Traced):
        amount: int
        balance: int

        def apply(self, account: BankAccount) -> None:
            account.balance = self.balance

    class Deposited(Moved):
        pass

    class Withdrawn(Moved):
        pass

    class Closed(Traced):
        def apply(self, account: BankAccount) -> None:
            account.closed = True

    class Rejected(Traced):
        command: str
        reason: str
        amount: int | None


class BankAccounts(Application[uuid.UUID]):
    """The write side; its events are stored in the `bankaccounts_events` table."""


LIBRARY_EVENTS: dict[type, Any] = {
    domain.AccountOpened: BankAccount.Opened,
    domain.MoneyDeposited: BankAccount.Deposited,
    domain.MoneyWithdrawn: BankAccount.Withdrawn,
    domain.AccountClosed: BankAccount.Closed,
    domain.CommandRejected: BankAccount.Rejected,
}


def to_library_event(envelope: messages.EventEnvelope) -> DomainEventProtocol[uuid.UUID]:
    """Our envelope as the library's aggregate event."""
    data = {k: getattr(v, "value", v) for k, v in vars(envelope.event).items()}  # the Reason enum as its value
    if isinstance(envelope.event, domain.AccountOpened):
        data["originator_topic"] = get_topic(BankAccount)
    return LIBRARY_EVENTS[type(envelope.event)](  # type: ignore[no-any-return]
        originator_id=envelope.account_id,
        originator_version=envelope.sequence,
        timestamp=envelope.occurred_at,
        event_id=envelope.event_id,
        command_id=envelope.command_id,
        actor=envelope.actor,
        **data,
    )


class BalancesView(PostgresTrackingRecorder):
    """Materialised view: `balances` plus the library's tracking table, a change and its tracking row per
    transaction, as the library's views do (a second tracking row for the same position raises)."""

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self.table = SQL("{0}.{1}").format(Identifier(self.datastore.schema), Identifier("balances"))
        create = "CREATE TABLE IF NOT EXISTS {0} (account_id uuid PRIMARY KEY, balance bigint NOT NULL DEFAULT 0)"
        self.sql_create_statements.append(SQL(create).format(self.table))  # type: ignore[arg-type]
        self.upsert = SQL(
            "INSERT INTO {0} (account_id, balance) VALUES (%s, %s) "
            "ON CONFLICT (account_id) DO UPDATE SET balance = EXCLUDED.balance"
        ).format(self.table)

    def set_balance(self, account_id: uuid.UUID, balance: int, tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as curs:
            self._insert_tracking(curs, tracking)
            curs.execute(self.upsert, (account_id, balance), prepare=True)

    def balances(self) -> dict[uuid.UUID, int]:
        with self.datastore.transaction() as curs:
            curs.execute(SQL("SELECT account_id, balance FROM {0}").format(self.table))
            return {row["account_id"]: row["balance"] for row in curs.fetchall()}

    def reset(self, application_name: str) -> None:
        """Empty the view and forget how far it got, so the next run rebuilds from the first event."""
        tracking = SQL("{0}.{1}").format(Identifier(self.datastore.schema), Identifier(self.tracking_table_name))
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(SQL("TRUNCATE {0}").format(self.table))
            curs.execute(SQL("DELETE FROM {0} WHERE application_name = %s").format(tracking), (application_name,))


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
        if self.last is not None:
            with self.datastore.transaction(commit=True) as curs:
                self._insert_tracking(curs, self.last)
                curs.executemany(self.upsert, list(self.pending.items()))
        self.pending, self.last = {}, None


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


# What the events table holds; "_decided" since the generator runs the domain's decide (older sets differ).
META = (
    "CREATE TABLE IF NOT EXISTS bench_meta_decided (events bigint, accounts bigint, seed bigint, store_seconds float8)"
)


def stored_run(recorder: PostgresApplicationRecorder) -> tuple[int, int, int, float] | None:
    """(events, accounts, seed, store seconds) of what the events table holds, if it is complete."""
    with recorder.datastore.transaction(commit=True) as curs:
        curs.execute(META)
        curs.execute("SELECT events, accounts, seed, store_seconds FROM bench_meta_decided")
        row = curs.fetchone()
        curs.execute(SQL("SELECT count(*) AS n FROM {0}").format(Identifier(recorder.events_table_name)))
        count = curs.fetchone()["n"]  # type: ignore[index]
    return None if row is None or count != row["events"] else tuple(row.values())  # type: ignore[return-value]


def store(app: BankAccounts, recorder: PostgresApplicationRecorder, args: Any) -> tuple[Expected, float]:
    """Store the generated events through `app.save` in chunks, in stream order. (expected state, seconds)."""
    events_table = Identifier(recorder.events_table_name)
    with recorder.datastore.transaction(commit=True) as curs:
        curs.execute(META)
        curs.execute("TRUNCATE bench_meta_decided")
        curs.execute(SQL("TRUNCATE {0} RESTART IDENTITY").format(events_table))
    expected = Expected()
    started = time.perf_counter()
    batch: list[DomainEventProtocol[uuid.UUID]] = []
    for n, envelope in enumerate(generate(args.events, args.accounts, expected, seed=args.seed), 1):
        batch.append(to_library_event(envelope))
        if len(batch) == args.chunk or n == args.events:
            app.save(*batch)
            batch = []
    seconds = time.perf_counter() - started
    with recorder.datastore.transaction(commit=True) as curs:
        values = (args.events, args.accounts, args.seed, seconds)
        curs.execute("INSERT INTO bench_meta_decided VALUES (%s, %s, %s, %s)", values)
        curs.execute(SQL("ANALYZE {0}").format(events_table))
    return expected, seconds


def paged_rebuild(app: BankAccounts, view: PagedBalancesView, page: int) -> float:
    """Seconds to rebuild the view from the first event, one transaction per page of notifications."""
    projection = Balances(view=view)
    started, last = time.perf_counter(), 0
    while got := app.recorder.select_notifications(start=last, limit=page, inclusive_of_start=False):
        for notification in got:
            projection.process_event(app.mapper.to_domain_event(notification), Tracking(app.name, notification.id))
        view.flush()
        last = got[-1].id
    return time.perf_counter() - started


def runner_rebuild(env: dict[str, str], last_id: int, budget: float) -> tuple[int, float]:
    """(events processed, seconds) for the library's ProjectionRunner from the first event to `last_id`, or until
    `budget` seconds are spent (one transaction per event makes its rate steady)."""
    started = time.perf_counter()
    with ProjectionRunner(
        application_class=BankAccounts, projection_class=Balances, view_class=BalancesView, env=env
    ) as runner:
        view = runner.projection.view
        while (view.max_tracking_id(runner.app_name) or 0) < last_id and time.perf_counter() - started < budget:
            runner.run_forever(timeout=0.02)  # re-raises an error of the processing thread
        seconds = time.perf_counter() - started
        return view.max_tracking_id(runner.app_name) or 0, seconds


def check(view: BalancesView, expected: Expected, what: str) -> None:
    got = view.balances()
    if got != expected.balances:
        wrong = [k for k in expected.balances if got.get(k) != expected.balances[k]]
        raise SystemExit(f"{what}: balances do not match the events: {len(got)} rows, {len(wrong)} wrong ({wrong[:3]})")


def main() -> None:
    args = harness.arguments(
        __doc__, events=1_000_000, accounts=10_000, seed=42, database=None, reuse=False, chunk=10_000,
        page=10_000, runner_budget=7200.0,
    )  # fmt: skip
    harness.setup_django()
    default = (args.events, args.accounts) == (1_000_000, 10_000)
    database = args.database or harness.scratch_name(
        "bench_es" if default else f"bench_es_{args.events}_{args.accounts}"
    )
    run_started = time.perf_counter()
    params = harness.bench_database(database)
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        **{f"POSTGRES_{key.upper()}": params[key] for key in ("host", "port", "user", "password", "dbname")},
        "POSTGRES_POOL_SIZE": "2",  # the defaults open 5, up to 15: other benchmarks share the server
        "POSTGRES_MAX_OVERFLOW": "2",
    }
    app = BankAccounts(env=env)
    recorder = app.recorder
    assert isinstance(recorder, PostgresApplicationRecorder)

    previous = stored_run(recorder)
    reused = bool(args.reuse and previous and previous[:3] == (args.events, args.accounts, args.seed))
    if reused and previous:
        print(f"reusing the {args.events:,} events stored in {database} ({previous[3]:.0f}s to store)")
        expected, store_seconds = Expected(), previous[3]
        for _ in generate(args.events, args.accounts, expected, seed=args.seed):
            pass
    else:
        print(f"storing {args.events:,} events over {args.accounts:,} accounts in {database} ...", flush=True)
        expected, store_seconds = store(app, recorder, args)
    if (last_id := recorder.max_notification_id() or 0) != args.events:
        raise SystemExit(f"the events table ends at notification {last_id}, not {args.events}")
    first_id, first_balance = next(iter(expected.balances.items()))
    if app.repository.get(first_id).balance != first_balance:
        raise SystemExit("an aggregate rebuilt by the repository does not have its expected balance")

    datastore = app.factory.datastore  # type: ignore[attr-defined]
    paged = PagedBalancesView(datastore, tracking_table_name="balances_tracking")
    paged.create_table()
    paged.reset(app.name)
    seconds = {"paged": paged_rebuild(app, paged, args.page)}
    check(paged, expected, "paged")
    runner_view = BalancesView(datastore, tracking_table_name="balances_tracking")  # the same tables
    runner_view.reset(app.name)
    print("runner: one transaction per event ...", flush=True)
    runner_events, seconds["runner"] = runner_rebuild(env, last_id, args.runner_budget)
    if runner_events >= last_id:
        check(runner_view, expected, "runner")
    else:
        print(f"runner: {runner_events:,} events in its {args.runner_budget:.0f}s budget; rate measured over those")
    app.close()

    rates = {"paged": round(args.events / seconds["paged"]), "runner": round(runner_events / seconds["runner"])}
    baseline_mode = max(rates, key=lambda m: rates[m])
    projection = harness.read_results("projection") or {}  # replay_per_s, when measured on as many events
    ours = projection.get("replay_per_s") if projection.get("events") == args.events else None
    figures: dict[str, Any] = {
        "events": args.events,
        "accounts": args.accounts,
        "event_types": expected.types,
        "database": database,
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
    print(f"eventsourcing {ES_VERSION}, {args.events:,} events over {args.accounts:,} accounts, database {database}")
    stored = f"{figures['store_per_s']:>9,} events/s ({store_seconds:.1f}s{', earlier run' if reused else ''})"
    rows = [("events", f"{args.events:>9,}"), ("store: app.save() in chunks (set-up, not a figure)", stored)]
    rows.append((f"rebuild, paged ({args.page:,} events per transaction)", f"{rates['paged']:>9,} events/s"))
    rows.append(("rebuild, ProjectionRunner (a transaction per event)", f"{rates['runner']:>9,} events/s"))
    if ours:
        rows.append(("our replay (bench/results/projection.json)", f"{ours:>9,} events/s"))
        for mode in rates:
            goal = " (goal >= 10x)" if mode == baseline_mode else ""
            rows.append((f"our replay / {mode} rebuild{goal}", f"{figures[f'replay_vs_{mode}']:.2f}x"))
    print(table(rows) + f"\n  (whole run {figures['run_seconds']:.0f}s)")
    harness.write_results("eventsourcing", figures)


if __name__ == "__main__":
    main()
