"""End to end in headless Chromium: the balance chart, the as-of view, statements, history paging, sign-up
and password change, at a desktop and a phone-width viewport, with no error in any page's console."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Browser, Page, expect

from tests.e2e.conftest import ConsoleErrors, log_in, new_page, write_docs
from tests.e2e.test_dashboard import move, open_account
from tests.helpers import PASSWORD, account_of
from tests.test_account_past import T0, fold, known_history

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

DOCS = Path(__file__).resolve().parents[2] / "docs"
PHONE = {"viewport": {"width": 390, "height": 844}}


def shot(page: Page, name: str) -> None:
    if write_docs():
        page.screenshot(path=str(DOCS / name), full_page=True)


@pytest.mark.parametrize("viewport", [{}, PHONE], ids=["desktop", "phone"])
def test_it_draws_the_chart_and_moves_it_on_a_live_deposit(
    browser: Browser, bank_server: str, users: dict[str, User], viewport: dict[str, object]
) -> None:
    page = log_in(browser, bank_server, "alice", **viewport)
    url = open_account(page, "Household")
    account_id = url.strip("/").split("/")[-1]
    page.goto(f"{bank_server}{url}")
    page.wait_for_selector("#live-status.on")
    chart = page.locator(f"#chart-{account_id}")
    expect(chart.locator("svg")).to_be_visible()
    expect(chart.locator("svg polyline.balance-line")).to_have_count(1)  # flat at zero: no height to be "visible"
    expect(chart).to_have_attribute("data-today-cents", "0")
    move(page, "deposit", "120.00")
    expect(chart).to_have_attribute("data-today-cents", "12000")  # pushed, no reload
    expect(chart.locator("rect.bar-in")).to_have_count(1)
    move(page, "withdraw", "20.00")
    expect(chart).to_have_attribute("data-today-cents", "10000")
    expect(chart.locator("rect.bar-out")).to_have_count(1)
    assert "10,000" not in (chart.locator("table").text_content() or "")
    expect(chart.locator("table tbody tr").first).to_contain_text("€100.00")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "scrolls sideways"
    page.click("nav.ranges >> text=90 days")
    expect(page.locator(f"#chart-{account_id}")).to_have_attribute("data-days", "90")
    if not viewport:
        shot(page, "account-chart.png")


def test_it_shows_the_account_at_three_moments_of_a_known_history(
    browser: Browser, bank_server: str, users: dict[str, User]
) -> None:
    account = account_of(users["alice"], "Known history")
    rows = known_history(account, 40)  # one entry an hour from 2026-11-01 08:00 UTC
    for viewport in ({}, PHONE):
        page = log_in(browser, bank_server, "alice", timezone_id="UTC", **viewport)
        page.goto(f"{bank_server}/accounts/{account.id}/")
        for hours in (0.5, 9.5, 30.25):
            moment = T0 + timedelta(hours=hours)
            page.fill("#id_at", moment.strftime("%Y-%m-%dT%H:%M:%S"))
            page.click("#as-of-form button")
            expect(page.locator("#past-banner")).to_contain_text("You are looking at the past")
            expect(page.locator("#past-balance")).to_have_attribute("data-cents", str(fold(rows, moment)))
            last = int(hours) + 1  # entries at T0, T0+1h, ...
            expect(page.locator("table.history tbody tr").first).to_contain_text(f"#{last}")
            expect(page.locator("#deposit-form")).to_have_count(0)
        if not viewport:
            shot(page, "as-of.png")
        page.click("#back-to-live")
        expect(page.locator("#past-banner")).to_have_count(0)
        expect(page.locator(f"#balance-{account.id}")).to_have_attribute("data-cents", str(account.balance))


def test_it_shows_a_statement_and_downloads_it_as_csv(
    browser: Browser, bank_server: str, users: dict[str, User]
) -> None:
    account = account_of(users["alice"], "Statement account")
    rows = known_history(account, 80)  # to 2026-11-04 15:00 UTC
    start, end = T0 + timedelta(hours=16), T0 + timedelta(days=2, hours=16)  # 2026-11-02 and -03 in UTC
    page = log_in(browser, bank_server, "alice", timezone_id="UTC")
    page.goto(f"{bank_server}/accounts/{account.id}/")
    page.click("#statement-link")
    page.fill("#id_start", "2026-11-02")
    page.fill("#id_end", "2026-11-03")
    page.click("#statement-form button[type=submit]")
    opening, closing = fold(rows, start - timedelta(microseconds=1)), fold(rows, end - timedelta(microseconds=1))
    inside = [r for r in rows if start <= r.occurred_at < end]
    money_in = sum(r.amount or 0 for r in inside if r.type == "MoneyDeposited")
    money_out = sum(r.amount or 0 for r in inside if r.type == "MoneyWithdrawn")
    expect(page.locator("#opening")).to_have_attribute("data-cents", str(opening))
    expect(page.locator("#money-in")).to_have_attribute("data-cents", str(money_in))
    expect(page.locator("#money-out")).to_have_attribute("data-cents", str(money_out))
    expect(page.locator("#closing")).to_have_attribute("data-cents", str(closing))
    expect(page.locator("#statement-entries tbody tr")).to_have_count(len(inside))
    shot(page, "statement.png")
    with page.expect_download() as download:
        page.click("#csv-link")
    text = Path(download.value.path()).read_text(encoding="utf-8")
    table = list(csv.reader(io.StringIO(text)))
    assert table[0][0] == "time" and table[1][1] == "Opening balance" and table[-1][1] == "Closing balance"
    assert table[1][5] == f"{opening / 100:.2f}" and table[-1][5] == f"{closing / 100:.2f}"
    assert len(table) == 3 + len(inside)
    assert sum(round(float(r[3]) * 100) for r in table[2:-1]) == closing - opening
    assert table[2][0].endswith("+00:00")


def test_it_filters_and_pages_through_a_long_history(
    browser: Browser, bank_server: str, users: dict[str, User]
) -> None:
    account = account_of(users["alice"], "Long history")
    known_history(account, 200)
    page = log_in(browser, bank_server, "alice", **PHONE)
    page.goto(f"{bank_server}/accounts/{account.id}/")
    rows = page.locator("table.history tbody tr")
    expect(rows).to_have_count(20)
    for _ in range(3):
        page.click("#older")
    expect(rows.first).to_contain_text("#140")
    page.click("#newer")
    expect(rows.first).to_contain_text("#160")
    page.select_option("#id_kind", "withdrawals")
    page.click("#history-filters button")
    expect(rows.first).to_contain_text("Withdrawal")
    expect(rows.first).to_contain_text("#198")
    page.click("#older")
    expect(rows.first).to_contain_text("#138")
    expect(page.locator("#id_kind")).to_have_value("withdrawals")
    page.fill("#id_since", "2026-11-20")
    page.click("#history-filters button")
    expect(page.locator("#history-empty")).to_contain_text("No entries match")


def test_it_signs_up_logs_in_opens_an_account_and_deposits(
    browser: Browser, bank_server: str, users: dict[str, User], console_errors: ConsoleErrors
) -> None:
    page = new_page(browser, **PHONE)
    page.goto(f"{bank_server}/")
    page.click("#signup-link")
    shot(page, "signup.png")
    page.fill("#id_username", "newcomer")
    page.fill("#id_password1", "short")
    page.fill("#id_password2", "short")
    console_errors.expect("422")  # the form's answer to bad input
    page.click("#signup-form button")
    expect(page.locator("#signup-form")).to_contain_text("This password is too short.")
    page.fill("#id_password1", "river-lantern-77")
    page.fill("#id_password2", "river-lantern-77")
    page.click("#signup-form button")
    page.wait_for_url(f"{bank_server}/")
    page.wait_for_selector("#live-status.on")
    url = open_account(page, "First account")
    account_id = url.strip("/").split("/")[-1]
    page.goto(f"{bank_server}{url}")
    page.wait_for_selector("#live-status.on")
    move(page, "deposit", "42.00")
    expect(page.locator(f"#balance-{account_id}")).to_have_text("€42.00")
    page.click("text=Log out")
    page.fill("#id_username", "newcomer")
    page.fill("#id_password", "river-lantern-77")
    page.click("button[type=submit]")
    page.wait_for_url(f"{bank_server}/")
    expect(page.locator(f"#account-{account_id}")).to_contain_text("€42.00")


def test_it_changes_the_password(browser: Browser, bank_server: str, users: dict[str, User]) -> None:
    page = log_in(browser, bank_server, "bob")
    page.click("a.who")
    page.fill("#id_old_password", PASSWORD)
    page.fill("#id_new_password1", "meadow-copper-93")
    page.fill("#id_new_password2", "meadow-copper-93")
    page.click("#password-form button")
    expect(page.locator("#password-changed")).to_be_visible()
    fresh = new_page(browser)
    fresh.goto(f"{bank_server}/")
    fresh.fill("#id_username", "bob")
    fresh.fill("#id_password", "meadow-copper-93")
    fresh.click("button[type=submit]")
    fresh.wait_for_url(f"{bank_server}/")
