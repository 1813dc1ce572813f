"""The admin's daily balances list (web/daily_balances.py): permissions, filters, keyset pages, CSV, not deployed.

The rows are written here as the projector would have written them; no worker runs.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Permission, User
from django.test import AsyncClient, Client
from django.urls import reverse

from bank.account_number import account_number, display
from projections.models import Account, DailyBalance, Generation
from web import daily_balances

pytestmark = pytest.mark.django_db

LIST = "/admin/projections/dailybalance/"
CSV = "/admin/projections/dailybalance/csv/"
DAY0 = date(2026, 1, 1)


def client_of(name: str, *codenames: str, staff: bool = True) -> Client:
    user = User.objects.create_user(name, password="x", is_staff=staff)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="projections", codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def account(name: str) -> Account:
    now = datetime.now(UTC)
    return Account.objects.create(
        id=uuid.uuid4(),
        owner="1",
        name=name,
        currency="EUR",
        balance=0,
        status="open",
        opened_at=now,
        last_sequence=1,
        updated_at=now,
    )


def days(of: Account, count: int, first: date = DAY0) -> list[DailyBalance]:
    """A row a day from `first`: 10.00 in and 3.00 out each day, so day i closes at 7.00 times (i + 1)."""
    rows = [
        DailyBalance(
            account_id=of.id,
            day=first + timedelta(days=i),
            closing_balance=700 * (i + 1),
            money_in=1000,
            money_out=300,
            entries=2,
            last_sequence=2 * i + 3,
        )
        for i in range(count)
    ]
    DailyBalance.objects.bulk_create(rows)
    return rows


def shown(body: str) -> list[tuple[str, str]]:
    """(day, account id) of each listed row, in order."""
    return [(d, a) for a, d in re.findall(r'<tr data-account="([0-9a-f-]+)" data-day="([0-9-]+)">', body)]


def link(body: str, which: str) -> str | None:
    found = re.search(rf'<a href="([^"]*)" id="{which}">', body)
    return found.group(1).replace("&amp;", "&") if found else None


def test_it_lists_rows_newest_day_first_in_keyset_pages_with_filters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daily_balances, "PAGE_ROWS", 4)
    current, savings = account("Current"), account("Savings")
    days(current, 6)
    days(savings, 3, first=DAY0 + timedelta(days=2))
    viewer = client_of("viewer", "view_dailybalance", "view_account")

    index = viewer.get("/admin/").content.decode()
    assert f'<a href="{LIST}">Daily balances</a>' in index, "listed under Projections on the index"

    every = sorted(
        [(str(r.day), str(r.account_id)) for r in DailyBalance.objects.all()], key=lambda k: (k[0], k[1]), reverse=True
    )
    assert len(every) == 9
    page = viewer.get(LIST)
    body = page.content.decode()
    assert page.status_code == 200 and 'href="/admin/projections/">Projections</a> \u203a Daily balances' in body
    assert shown(body) == every[:4] and link(body, "newer") is None
    assert reverse("admin:projections_account_change", args=[current.id]) in body
    assert display(account_number(current.id)) in body and "€42.00" in body  # day 6 of Current closes at 6 times 7.00

    older = link(body, "older")
    assert older is not None
    second = viewer.get(LIST + older).content.decode()
    assert shown(second) == every[4:8]
    third = viewer.get(LIST + str(link(second, "older"))).content.decode()
    assert shown(third) == every[8:] and link(third, "older") is None
    back = viewer.get(LIST + str(link(third, "newer"))).content.decode()
    assert shown(back) == every[4:8], "the newer link returns the page before"
    first_again = viewer.get(LIST + str(link(back, "newer"))).content.decode()
    assert shown(first_again) == every[:4] and link(first_again, "newer") is None

    by_number = viewer.get(LIST, {"account": display(account_number(savings.id)).lower()}).content.decode()
    assert shown(by_number) == [(str(DAY0 + timedelta(days=d)), str(savings.id)) for d in (4, 3, 2)]
    by_id = viewer.get(LIST, {"account": str(current.id), "since": "2026-01-02", "until": "2026-01-04"})
    assert shown(by_id.content.decode()) == [(str(DAY0 + timedelta(days=d)), str(current.id)) for d in (3, 2, 1)]
    one_day = viewer.get(LIST, {"since": "2026-01-03", "until": "2026-01-03"}).content.decode()
    assert sorted(shown(one_day)) == sorted([("2026-01-03", str(current.id)), ("2026-01-03", str(savings.id))])
    csv_link = re.search(r'<a href="([^"]*)" id="csv-download">', one_day)
    assert csv_link and csv_link.group(1).replace("&amp;", "&") == CSV + "?since=2026-01-03&until=2026-01-03"
    nothing = viewer.get(LIST, {"account": str(uuid.uuid4())}).content.decode()
    assert shown(nothing) == [] and "No daily balances match these filters" in nothing


def test_it_refuses_staff_without_the_view_permission_and_customers() -> None:
    current = account("Current")
    days(current, 2)
    other_staff = client_of("clerk", "view_account", "view_auditentry")
    assert other_staff.get(LIST).status_code == 403
    assert other_staff.get(CSV).status_code == 403
    assert "Daily balances" not in other_staff.get("/admin/").content.decode()

    customer = client_of("alice", "view_dailybalance", staff=False)  # a permission alone does not open the admin
    for client in (customer, Client()):
        for url in (LIST, CSV):
            response = client.get(url)
            assert (
                response.status_code == 302 and "login/?next=/admin/projections/dailybalance/" in response["Location"]
            )


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"account": "KB00 0000"}, "Account: Not an account id or number"),
        ({"account": "not-a-uuid-at-all"}, "Account: Not an account id or number"),
        ({"account": "x" * 500}, "Account: Ensure this value has at most 80 characters"),
        ({"account": "a\x00b"}, "Account: Null characters are not allowed."),
        ({"since": "2026-02-30"}, "From: Enter a date, like 2026-11-01."),
        ({"until": "0001-01-01"}, "Enter dates between 2000 and 2100."),
        ({"since": "2026-02-01", "until": "2026-01-01"}, "The first day comes after the last"),
        ({"after": "garbage"}, "Page link: That page link is broken"),
        ({"before": "2026-01-01.zz"}, "Page link: That page link is broken"),
        ({"after": "2026-01-01'; DROP TABLE x;--.00"}, "Page link: That page link is broken"),
        ({"after": f"2026-01-01.{'0' * 32}", "before": f"2026-01-01.{'0' * 32}"}, "That page link is broken"),
    ],
)
def test_it_answers_hostile_filters_with_a_message(query: dict[str, str], message: str) -> None:
    days(account("Current"), 2)
    viewer = client_of("viewer", "view_dailybalance")
    page = viewer.get(LIST, query)
    body = page.content.decode()
    assert page.status_code == 400 and message in body
    assert shown(body) == [], "no rows for filters that mean nothing"
    exported = viewer.get(CSV, query)
    assert exported.status_code == 400 and message.split(": ")[-1] in exported.content.decode()


def test_the_csv_has_the_filtered_rows_with_formulas_neutralised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daily_balances, "CSV_CHUNK", 2)  # several keyset chunks
    evil = account('=HYPERLINK("http://evil","x")')
    plain = account("Plain")
    days(evil, 5)
    days(plain, 5)
    user = User.objects.create_user("viewer", password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename="view_dailybalance"))
    client = AsyncClient()
    client.force_login(user)  # type: ignore[attr-defined]

    async def get() -> tuple[int, str, str, list[bytes]]:
        response = await client.get(CSV, {"account": str(evil.id), "since": "2026-01-02", "until": "2026-01-04"})
        parts = [part async for part in response.streaming_content]  # type: ignore[union-attr]
        return response.status_code, response["Content-Type"], response["Content-Disposition"], parts

    status, kind, disposition, parts = async_to_sync(get)()
    assert status == 200 and kind.startswith("text/csv")
    assert f"daily-balances-{account_number(evil.id)}-from-2026-01-02-to-2026-01-04.csv" in disposition
    assert len(parts) >= 3, "streamed a keyset chunk at a time"
    rows = list(csv.reader(io.StringIO(b"".join(parts).decode())))
    assert rows[0] == daily_balances.CSV_HEADER
    assert [r[0] for r in rows[1:]] == ["2026-01-04", "2026-01-03", "2026-01-02"]
    assert rows[1] == [
        "2026-01-04",
        account_number(evil.id),
        str(evil.id),
        '\'=HYPERLINK("http://evil","x")',
        "EUR",
        "28.00",
        "10.00",
        "3.00",
        "2",
    ]
    assert all(not cell.startswith(("=", "+", "@", "\t", "\r")) for row in rows for cell in row)


def test_it_says_the_projection_is_not_deployed_yet() -> None:
    days(account("Current"), 2)  # whatever the table holds, it is not the projection yet
    Generation.objects.create(projection="daily_balances", live=0)
    viewer = client_of("viewer", "view_dailybalance")
    page = viewer.get(LIST)
    body = page.content.decode()
    assert page.status_code == 200 and 'id="not-deployed"' in body
    assert "rebuild --projection daily_balances" in body and shown(body) == []
    assert 'id="csv-download"' not in body and 'id="result_list"' not in body, "no list, not an empty one"
    exported = viewer.get(CSV)
    assert exported.status_code == 409 and "not deployed yet" in exported.content.decode()
    Generation.objects.filter(projection="daily_balances").update(live=2)
    assert len(shown(viewer.get(LIST).content.decode())) == 2, "listed once a rebuild has swapped it in"
