"""The account's past with Django's test client: keyset history, filters, the as-of view, statements and CSV.

The audit rows are written here as the projector would have written them (a known history), so that
every figure on the pages can be checked against a fold done by hand.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.test import AsyncClient

from projections.models import Account, AuditEntry, Transfer
from tests.helpers import Fold, account_of, logged_in

pytestmark = pytest.mark.django_db(transaction=True)

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


def entry(
    account: Account, sequence: int, kind: str, amount: int | None, balance: int | None, at: datetime, **extra: object
) -> AuditEntry:
    return AuditEntry(
        event_id=uuid.uuid4(),
        account_id=account.id,
        sequence=sequence,
        type=kind,
        amount=amount,
        balance_after=balance,
        occurred_at=at,
        actor="user:alice",
        command_id=uuid.uuid4(),
        reason=str(extra.pop("reason", "")),
        command=str(extra.pop("command", "")),
        **extra,  # type: ignore[arg-type]
    )


def known_history(account: Account, n: int, step: timedelta = timedelta(hours=1)) -> list[AuditEntry]:
    """Opened at T0, then deposits of 10.00 and every third a withdrawal of 3.00, one per `step`."""
    rows = [entry(account, 1, "AccountOpened", None, None, T0)]
    balance = 0
    for sequence in range(2, n + 1):
        at = T0 + step * (sequence - 1)
        if sequence % 3:
            balance += 10_00
            rows.append(entry(account, sequence, "MoneyDeposited", 10_00, balance, at))
        else:
            balance -= 3_00
            rows.append(entry(account, sequence, "MoneyWithdrawn", 3_00, balance, at))
    AuditEntry.objects.bulk_create(rows)
    Account.objects.filter(id=account.id).update(balance=balance, last_sequence=n, opened_at=T0)
    account.refresh_from_db()
    return rows


def fold(rows: list[AuditEntry], until: datetime) -> int:
    """The balance by hand (tests.helpers.Fold over the entries as plain events), of the entries at or before `until`:
    deposits in, withdrawals out."""
    events = [
        {
            "account_id": str(row.account_id),
            "type": row.type,
            "sequence": row.sequence,
            "occurred_at": row.occurred_at.isoformat(),
            "data": {"amount": row.amount},
        }
        for row in rows
        if row.occurred_at <= until
    ]
    return sum(Fold.of(events).balances.values())


def exported(user: User, url: str, query: dict[str, str], zone: str = "UTC") -> tuple[int, str, list[bytes]]:
    """GET a CSV through the async client (as daphne serves it): status, content type, the parts as streamed."""
    client = AsyncClient()
    client.force_login(user)  # type: ignore[attr-defined]
    client.cookies["tz"] = zone

    async def get() -> tuple[int, str, list[bytes]]:
        response = await client.get(url, query)
        if not response.streaming:
            return response.status_code, response["Content-Type"], [response.content]
        parts = [part async for part in response.streaming_content]  # type: ignore[union-attr]
        return response.status_code, response["Content-Type"], parts

    return async_to_sync(get)()


def sequences(body: str) -> list[int]:
    return [int(s) for s in re.findall(r'<td class="hide-sm">#(\d+)</td>', body)]


def test_it_pages_the_history_by_sequence_both_ways(users: dict[str, User]) -> None:
    account = account_of(users["alice"])
    known_history(account, 45)
    client = logged_in(users["alice"])
    first = client.get(f"/accounts/{account.id}/").content.decode()
    assert sequences(first) == list(range(45, 25, -1))
    assert "?before=26" in first and "after=" not in first
    assert f'id="audit-live-{account.id}"' in first, "the newest page takes live rows"
    second = client.get(f"/accounts/{account.id}/?before=26").content.decode()
    assert sequences(second) == list(range(25, 5, -1))
    assert f'id="audit-live-{account.id}"' not in second
    third = client.get(f"/accounts/{account.id}/?before=6").content.decode()
    assert sequences(third) == [5, 4, 3, 2, 1]
    assert "before=" not in third.split('id="history"')[1].split("</section>")[0].replace('name="before"', "")
    back = client.get(f"/accounts/{account.id}/?after=5").content.decode()
    assert sequences(back) == list(range(25, 5, -1))
    assert sequences(client.get(f"/accounts/{account.id}/?after=25").content.decode()) == list(range(45, 25, -1))


def test_it_filters_by_kind_and_by_days_in_the_users_zone(users: dict[str, User]) -> None:
    account = account_of(users["alice"])
    known_history(account, 60)  # one entry an hour from 2026-11-01 08:00 UTC
    client = logged_in(users["alice"])
    body = client.get(f"/accounts/{account.id}/?kind=withdrawals").content.decode()
    assert sequences(body) == list(range(60, 2, -3))[:20]
    assert "Withdrawal" in body and "<td>Deposit" not in body
    assert f'id="audit-live-{account.id}"' not in body, "a filtered page takes no live rows"
    # 2026-11-02 in Tokyo (UTC+9) is 2026-11-01 15:00 to 2026-11-02 15:00 UTC: sequences 8 to 31.
    client.cookies["tz"] = "Asia/Tokyo"
    body = client.get(f"/accounts/{account.id}/?since=2026-11-02&until=2026-11-02").content.decode()
    assert sequences(body) == list(range(31, 11, -1))
    older = client.get(f"/accounts/{account.id}/?since=2026-11-02&until=2026-11-02&before=12").content.decode()
    assert sequences(older) == [11, 10, 9, 8]
    assert "Days in Asia/Tokyo" in body


def test_it_shows_the_account_as_of_a_moment(users: dict[str, User]) -> None:
    account = account_of(users["alice"])
    rows = known_history(account, 30)
    client = logged_in(users["alice"])
    at = T0 + timedelta(hours=10, minutes=30)  # after sequence 11
    body = client.get(f"/accounts/{account.id}/", {"at": at.strftime("%Y-%m-%dT%H:%M")}).content.decode()
    assert 'id="past-banner"' in body and 'id="back-to-live"' in body
    assert f'data-cents="{fold(rows, at)}"' in body.split('id="past-balance"')[1][:80]
    assert sequences(body) == list(range(11, 0, -1))
    assert 'data-page=""' in body, "a past view takes no live updates"
    assert 'id="deposit-form"' not in body, "no orders from the past"
    before_opening = client.get(f"/accounts/{account.id}/", {"at": "2026-10-31T12:00"}).content.decode()
    assert "not opened yet" in before_opening and sequences(before_opening) == []


def test_it_shows_money_in_flight_and_the_status_as_of_a_moment(users: dict[str, User]) -> None:
    account = account_of(users["alice"])
    known_history(account, 4)
    transfer = uuid.uuid4()
    other = uuid.uuid4()
    debit, done = T0 + timedelta(hours=5), T0 + timedelta(hours=6)
    AuditEntry.objects.bulk_create(
        [
            entry(account, 5, "TransferDebited", 5_00, 12_00, debit, transfer_id=transfer, counterparty=other),
            entry(account, 6, "TransferCompleted", 5_00, None, done, transfer_id=transfer, counterparty=other),
            entry(account, 7, "AccountClosed", None, None, T0 + timedelta(hours=7)),
        ]
    )
    Transfer.objects.create(
        id=transfer,
        transfer_id=transfer,
        from_account=account.id,
        to_account=other,
        amount=5_00,
        currency="EUR",
        status="completed",
        debited_at=debit,
        completed_at=done,
    )
    Account.objects.filter(id=account.id).update(status="closed")  # as the projector has it after the closing
    client = logged_in(users["alice"])

    def at(moment: datetime) -> str:
        return client.get(f"/accounts/{account.id}/", {"at": moment.strftime("%Y-%m-%dT%H:%M:%S")}).content.decode()

    during = at(debit + timedelta(minutes=30))
    assert "€5.00 in flight" in during and 'id="past-status">open' in during
    after = at(done + timedelta(minutes=30))
    assert "nothing in flight" in after.split('id="past-in-flight"')[1][:80]
    assert 'id="past-status">closed' in at(T0 + timedelta(hours=8))


def test_it_makes_a_statement_of_a_calendar_month_by_default(users: dict[str, User]) -> None:
    account = account_of(users["alice"])
    now = datetime.now(UTC)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    rows = [
        entry(account, 1, "MoneyDeposited", 50_00, 50_00, month_start - timedelta(days=3)),
        entry(account, 2, "MoneyDeposited", 20_00, 70_00, month_start + timedelta(minutes=1)),
        entry(account, 3, "MoneyWithdrawn", 5_00, 65_00, month_start + timedelta(minutes=2)),
        entry(
            account,
            4,
            "CommandRejected",
            999_00,
            None,
            month_start + timedelta(minutes=3),
            reason="insufficient_funds",
            command="Withdraw",
        ),
    ]
    AuditEntry.objects.bulk_create(rows)
    client = logged_in(users["alice"])
    body = client.get(f"/accounts/{account.id}/statement").content.decode()
    assert 'id="opening" data-cents="5000"' in body
    assert 'id="money-in" data-cents="2000"' in body and 'id="money-out" data-cents="500"' in body
    assert 'id="closing" data-cents="6500"' in body
    assert sequences(body) == [2, 3, 4]
    assert month_start.strftime("%Y-%m-01") in body


def test_it_exports_a_statement_as_csv_with_neutralised_formulas(users: dict[str, User]) -> None:
    account = account_of(users["alice"], name='=HYPERLINK("http://evil","x")')
    savings = account_of(users["alice"], name="@SUM(A1)")
    transfer = uuid.uuid4()
    AuditEntry.objects.bulk_create(
        [
            entry(account, 1, "MoneyDeposited", 100_00, 100_00, T0),
            entry(
                account,
                2,
                "TransferDebited",
                25_50,
                74_50,
                T0 + timedelta(hours=1),
                transfer_id=transfer,
                counterparty=savings.id,
            ),
            entry(account, 3, "MoneyWithdrawn", 4_50, 70_00, T0 + timedelta(days=1)),
        ]
    )
    status, kind, parts = exported(
        users["alice"],
        f"/accounts/{account.id}/statement.csv",
        {"start": "2026-11-01", "end": "2026-11-30"},
        "Europe/Paris",
    )
    assert status == 200 and kind.startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(parts).decode())))
    assert rows[0] == ["time", "entry", "description", "amount", "currency", "balance", "sequence"]
    assert rows[1][:2] == ["2026-11-01T00:00:00+01:00", "Opening balance"] and rows[1][5] == "0.00"
    assert rows[1][2].startswith("'=HYPERLINK"), "a formula in the account's name is neutralised"
    assert rows[2] == ["2026-11-01T09:00:00+01:00", "Deposit", "", "100.00", "EUR", "100.00", "1"]
    assert rows[3][3] == "-25.50" and rows[3][5] == "74.50"
    assert rows[3][2] == 'from “=HYPERLINK("http://evil","x")” to “@SUM(A1)”'
    assert rows[4][3] == "-4.50" and rows[4][0] == "2026-11-02T09:00:00+01:00"
    assert rows[5][:2] == ["2026-12-01T00:00:00+01:00", "Closing balance"] and rows[5][5] == "70.00"
    assert all(not cell.startswith(("=", "+", "@", "\t", "\r")) for row in rows for cell in row)


def test_it_streams_a_long_statement_a_chunk_at_a_time(users: dict[str, User]) -> None:
    account = account_of(users["alice"])
    rows = known_history(account, 5_000, step=timedelta(seconds=30))
    client = AsyncClient()
    client.force_login(users["alice"])  # type: ignore[attr-defined]

    async def get() -> list[bytes]:
        response = await client.get(
            f"/accounts/{account.id}/statement.csv", {"start": "2026-11-01", "end": "2026-11-03"}
        )
        assert response.status_code == 200
        return [part async for part in response.streaming_content]  # type: ignore[union-attr]

    parts = async_to_sync(get)()
    assert len(parts) >= 4, "written a chunk of entries at a time, not all at once"
    lines = b"".join(parts).decode().splitlines()
    assert len(lines) == 1 + 1 + 5_000 + 1
    assert lines[-1].endswith(f",EUR,{fold(rows, T0 + timedelta(days=3)) / 100:.2f},")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"at": "yesterday"}, "Enter a date and time, like 2026-11-01 09:00."),
        ({"at": "0001-01-01T00:00"}, "Enter a date between 2000 and 2100."),
        ({"at": "9999-12-31T23:59"}, "Enter a date between 2000 and 2100."),
        ({"at": "2099-01-01T00:00"}, "That moment has not come yet"),
        ({"since": "2026-13-01"}, "Enter a date, like 2026-11-01."),
        ({"since": "2026-11-05", "until": "2026-11-01"}, "The first day comes after the last"),
        ({"kind": "everything"}, "Select a valid choice."),
        ({"before": "-1"}, "greater than or equal to 1"),
        ({"before": "99999999999999999999"}, "less than or equal to"),
    ],
)
def test_it_answers_malformed_moments_and_filters_with_a_message(
    users: dict[str, User], query: dict[str, str], message: str
) -> None:
    account = account_of(users["alice"])
    known_history(account, 5)
    response = logged_in(users["alice"]).get(f"/accounts/{account.id}/", query)
    assert response.status_code == 400
    body = response.content.decode()
    assert message in body
    if "at" not in query:
        assert sequences(body) == [], "nothing from the history beside the message"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"start": "2026-11-31", "end": "2026-12-01"}, "Enter a date, like 2026-11-01."),
        ({"start": "2026-12-01", "end": "2026-11-01"}, "The first day comes after the last"),
        ({"start": "2024-01-01", "end": "2026-01-01"}, "A statement covers at most 366 days."),
        ({"start": "2026-11-01"}, "Enter the last day."),
        ({"start": "1900-01-01", "end": "1900-01-02"}, "Enter a date between 2000 and 2100."),
    ],
)
def test_it_answers_malformed_periods_with_a_message(
    users: dict[str, User], query: dict[str, str], message: str
) -> None:
    account = account_of(users["alice"])
    known_history(account, 5)
    client = logged_in(users["alice"])
    page = client.get(f"/accounts/{account.id}/statement", query)
    assert page.status_code == 400 and message in page.content.decode()
    assert 'id="opening"' not in page.content.decode()
    status, kind, parts = exported(users["alice"], f"/accounts/{account.id}/statement.csv", query)
    assert status == 400 and kind.startswith("text/plain")
    assert message in b"".join(parts).decode() and "Opening" not in b"".join(parts).decode()


def test_it_hides_another_users_past_statements_and_csv(users: dict[str, User]) -> None:
    alices = account_of(users["alice"], "Alice's secret savings")
    known_history(alices, 5)
    bob = logged_in(users["bob"])
    for url, query in [
        (f"/accounts/{alices.id}/statement.csv", {"start": "2026-11-01", "end": "2026-11-30"}),
        (f"/accounts/{alices.id}/statement.csv", {"start": "bad"}),
    ]:
        status, _, parts = exported(users["bob"], url, query)
        assert status == 404 and b"secret" not in b"".join(parts)
    for url, query in [
        (f"/accounts/{alices.id}/", {"at": "2026-11-01T10:00"}),
        (f"/accounts/{alices.id}/", {"before": "3"}),
        (f"/accounts/{alices.id}/statement", {}),
        (f"/accounts/{alices.id}/statement", {"start": "2026-11-01", "end": "2026-11-30"}),
    ]:
        response = bob.get(url, query)
        assert response.status_code == 404, (url, query)
        assert b"secret" not in response.content and b"10.00" not in response.content


def test_it_names_both_own_accounts_of_a_transfer_and_only_the_number_of_anyone_elses(users: dict[str, User]) -> None:
    current = account_of(users["alice"], "Current")
    savings = account_of(users["alice"], "Holiday savings")
    bobs = account_of(users["bob"], "Bob's private pot")
    own, paid = uuid.uuid4(), uuid.uuid4()
    AuditEntry.objects.bulk_create(
        [
            entry(current, 2, "TransferDebited", 5_00, 0, T0, transfer_id=own, counterparty=savings.id),
            entry(savings, 2, "TransferCredited", 5_00, 5_00, T0, transfer_id=own, counterparty=current.id),
            entry(current, 3, "TransferDebited", 1_00, 0, T0, transfer_id=paid, counterparty=bobs.id),
            entry(bobs, 2, "TransferCredited", 1_00, 1_00, T0, transfer_id=paid, counterparty=current.id),
        ]
    )
    alice, bob = logged_in(users["alice"]), logged_in(users["bob"])
    for account in (current, savings):
        body = alice.get(f"/accounts/{account.id}/").content.decode()
        assert "from “Current” to “Holiday savings”" in body
    assert "Bob" not in alice.get(f"/accounts/{current.id}/").content.decode()
    bobs_page = bob.get(f"/accounts/{bobs.id}/").content.decode()
    assert "Current" not in bobs_page and "Holiday" not in bobs_page
    assert 'from <code class="number">KB' in bobs_page


def test_it_shows_staff_the_account_as_of_a_moment_in_the_admin(users: dict[str, User]) -> None:
    account = account_of(users["alice"], "Alice's current")
    rows = known_history(account, 30)
    at = T0 + timedelta(hours=20, minutes=5)
    url = f"/admin/projections/account/{account.id}/as-of/"
    body = logged_in(users["carol"]).get(url, {"at": at.strftime("%Y-%m-%dT%H:%M")}).content.decode()
    assert 'id="past-banner"' in body
    assert f'data-cents="{fold(rows, at)}"' in body.split('id="past-balance"')[1][:60]
    assert "#21<" in body and "#22<" not in body
    bad = logged_in(users["carol"]).get(url, {"at": "31/12/2026"})
    assert bad.status_code == 400 and "Enter a date and time" in bad.content.decode()
    customer = logged_in(users["alice"]).get(url, {"at": at.strftime("%Y-%m-%dT%H:%M")})
    assert customer.status_code == 302 and "/admin/login/" in customer["Location"]
