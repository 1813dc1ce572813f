"""End to end in headless Chromium: the whole bank (daphne, processor, projector) on the real services."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Browser, Page, expect

from bank import messages
from bank.config import KafkaSettings
from projections.models import Account
from tests.e2e.conftest import ConsoleErrors, log_in, write_docs
from tests.helpers import read_raw

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"


def open_account(page: Page, name: str) -> str:
    page.fill("#id_name", name)
    page.click("#open-form button")
    row = page.locator("#accounts-body tr", has_text=name)
    expect(row).to_be_visible()
    expect(page.locator("#pending-list li.ok").first).to_contain_text("accepted")
    href = row.locator("a").get_attribute("href")
    assert href is not None
    return href


def move(page: Page, kind: str, amount: str) -> None:
    page.fill(f"#id_{kind}-amount", amount)
    page.click(f"#{kind}-form button")


def test_it_runs_the_whole_story_in_a_browser(
    browser: Browser, bank_server: str, users: dict[str, User], console_errors: ConsoleErrors
) -> None:
    alice = log_in(browser, bank_server, "alice")
    account_url = open_account(alice, "Household")
    account_id = account_url.strip("/").split("/")[-1]

    # A second tab of alice, on the dashboard, and bob.
    alice_dashboard = log_in(browser, bank_server, "alice")
    bob = log_in(browser, bank_server, "bob")
    bob_pushes: list[str] = []
    bob.on("websocket", lambda ws: ws.on("framereceived", lambda frame: bob_pushes.append(str(frame))))
    bob.reload()
    bob.wait_for_selector("#live-status.on")

    alice.goto(f"{bank_server}{account_url}")
    alice.wait_for_selector("#live-status.on")
    move(alice, "deposit", "100.00")
    pending = alice.locator("#pending-list li").first
    # Pending first ("Deposit 100.00 pending…"), often only for milliseconds, then the outcome.
    expect(pending).to_contain_text("100.00")
    expect(pending).to_contain_text("accepted")
    expect(alice.locator(f"#balance-{account_id}")).to_have_text("€100.00")
    expect(alice.locator("table.history tbody tr").first).to_contain_text("Deposit")
    expect(alice_dashboard.locator(f"#account-{account_id}")).to_contain_text("€100.00")
    expect(alice_dashboard.locator("#total")).to_contain_text("€100.00")

    move(alice, "withdraw", "150.00")
    rejected = alice.locator("#pending-list li").first
    expect(rejected).to_contain_text("Withdraw €150.00 — rejected: insufficient funds")
    expect(alice.locator("table.history tbody tr").first).to_contain_text("Rejected: insufficient funds")
    expect(alice.locator(f"#balance-{account_id}")).to_have_text("€100.00")
    if write_docs():
        alice.screenshot(path=str(SCREENSHOT.with_name("account.png")), full_page=True)

    # bob: the account page is a 404, and nothing about it reached his websocket.
    console_errors.expect("the server responded with a status of 404")
    response = bob.goto(f"{bank_server}{account_url}")
    assert response is not None and response.status == 404
    assert not any(account_id in push for push in bob_pushes)
    assert not any("Household" in push for push in bob_pushes)

    alice.goto(f"{bank_server}/")
    alice.wait_for_selector("#live-status.on")
    if write_docs():
        alice.screenshot(path=str(SCREENSHOT), full_page=True)


def test_it_sends_one_command_for_a_double_click(
    browser: Browser, bank_server: str, users: dict[str, User], kafka: KafkaSettings
) -> None:
    page = log_in(browser, bank_server, "alice")
    account_url = open_account(page, "Double")
    page.goto(f"{bank_server}{account_url}")
    page.wait_for_selector("#live-status.on")
    page.fill("#id_deposit-amount", "5")
    page.dblclick("#deposit-form button")
    expect(page.locator("#pending-list li").first).to_contain_text("accepted")
    deposits = [
        m for m in read_raw(kafka, kafka.commands_topic) if messages.decode_command(m.value()).type == "Deposit"
    ]
    assert len({messages.decode_command(m.value()).command_id for m in deposits}) == 1
    account = Account.objects.get(id=account_url.strip("/").split("/")[-1])
    assert account.balance == 5_00


def test_it_keeps_typed_values_and_says_so_on_bad_input(
    browser: Browser, bank_server: str, users: dict[str, User], console_errors: ConsoleErrors
) -> None:
    console_errors.expect("the server responded with a status of 422")  # the browser logs the answers asked for
    page = log_in(browser, bank_server, "alice")
    account_url = open_account(page, "Typos")
    page.goto(f"{bank_server}{account_url}")
    for amount, message in [("-5", "greater than zero"), ("1.234", "at most two decimals"), ("abc", "Enter a number")]:
        move(page, "withdraw", amount)
        expect(page.locator("#withdraw-form .errorlist")).to_contain_text(message)
        expect(page.locator("#id_withdraw-amount")).to_have_value(amount)
    expect(page.locator("#pending-list li")).to_have_count(0)


def test_it_reconnects_after_a_server_restart_and_catches_up(
    browser: Browser,
    bank_server: str,
    users: dict[str, User],
    workers,
    kafka: KafkaSettings,
    console_errors: ConsoleErrors,
) -> None:
    # While the server is down, the browser and htmx's websocket extension log each failed reconnect.
    console_errors.expect("WebSocket connection to")
    console_errors.expect("[object Event]")
    page = log_in(browser, bank_server, "alice")
    account_url = open_account(page, "Restart")
    account_id = account_url.strip("/").split("/")[-1]
    page.goto(f"{bank_server}{account_url}")
    page.wait_for_selector("#live-status.on")
    web = next(w for w in workers.started if w.name == "daphne")  # type: ignore[attr-defined]
    port = bank_server.rsplit(":", 1)[1]
    web.stop()
    expect(page.locator("#live-status")).to_have_text("reconnecting…")
    # While the web server is down, a deposit arrives by another way (the admin, say).
    from bank import domain
    from bank.command_bus import CommandBus

    bus = CommandBus(kafka)
    bus.send(messages.CommandEnvelope.new(domain.Deposit(Account.objects.get(id=account_id).id, 7_00), "admin:carol"))
    bus.close()
    restarted = workers(
        "daphne-2", ["-b", "127.0.0.1", "-p", port, "server.asgi:application"], kafka, program=web.process.args[:3]
    )
    restarted.wait_for_log("Listening on TCP address")
    expect(page.locator("#live-status")).to_have_text("live", timeout=30_000)
    expect(page.locator(f"#balance-{account_id}")).to_have_text("€7.00")
    expect(page.locator("table.history tbody tr").first).to_contain_text("carol (admin)")


def test_it_measures_click_to_balance_latency(browser: Browser, bank_server: str, users: dict[str, User]) -> None:
    page = log_in(browser, bank_server, "alice")
    account_url = open_account(page, "Latency")
    account_id = account_url.strip("/").split("/")[-1]
    page.goto(f"{bank_server}{account_url}")
    page.wait_for_selector("#live-status.on")
    samples = []
    for i in range(1, 21):
        page.fill("#id_deposit-amount", "1")
        # Measured in the page: from the click to the balance element showing the new amount.
        elapsed = page.evaluate(
            """([id, expected]) => new Promise((resolve) => {
                const target = document.getElementById("balance-" + id).parentElement;
                const started = performance.now();
                const observer = new MutationObserver(() => {
                    const el = document.getElementById("balance-" + id);
                    if (el && el.dataset.cents === String(expected)) { observer.disconnect(); resolve(performance.now() - started); }
                });
                observer.observe(target, { subtree: true, childList: true, characterData: true, attributes: true });
                document.querySelector("#deposit-form button").click();
            })""",
            [account_id, i * 100],
        )
        samples.append(elapsed)
        expect(page.locator(f"#balance-{account_id}")).to_have_text(f"€{i}.00")
        # The update can beat the 202 answer now: let htmx swap in and wire up the fresh form before the next click.
        expect(page.locator("#pending-list li")).to_have_count(i)
        page.wait_for_timeout(50)
    median = statistics.median(samples)
    print(f"\nclick → balance on screen: median {median:.0f} ms, min {min(samples):.0f}, max {max(samples):.0f} (n=20)")
    if write_docs():
        results = Path(__file__).resolve().parents[2] / "bench" / "results"
        results.mkdir(parents=True, exist_ok=True)
        (results / "browser_latency.json").write_text(
            messages.orjson.dumps({"median_ms": median, "samples_ms": samples, "when": time.time()}).decode() + "\n"
        )
    assert len(samples) == 20


def test_it_shows_times_in_the_users_zone_and_fits_a_phone(
    browser: Browser, bank_server: str, users: dict[str, User]
) -> None:
    page = log_in(browser, bank_server, "alice", viewport={"width": 390, "height": 800}, timezone_id="Asia/Tokyo")
    account_url = open_account(page, "Tokyo")
    page.goto(f"{bank_server}{account_url}")
    opened = Account.objects.get(id=account_url.strip("/").split("/")[-1]).opened_at
    from zoneinfo import ZoneInfo

    shown = page.locator("table.history tbody tr").first.locator("time").inner_text()
    assert shown == opened.astimezone(ZoneInfo("Asia/Tokyo")).strftime("%Y-%m-%d %H:%M:%S")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), (
        "the page scrolls sideways on a phone"
    )
    if write_docs():
        page.screenshot(path=str(SCREENSHOT.with_name("phone.png")), full_page=True)
