"""The admin's operations page in Chromium: lag rises while the projector is stopped and falls after it restarts."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Browser, expect

from bank import domain, messages
from bank.command_bus import CommandBus
from bank.config import KafkaSettings
from tests.e2e.conftest import log_in, write_docs
from tests.helpers import Worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "operations.png"


def test_it_shows_lag_rising_and_falling_live(
    browser: Browser,
    bank_server: str,
    users: dict[str, User],
    kafka: KafkaSettings,
    bus: CommandBus,
    workers: Callable[..., Worker],
) -> None:
    page = log_in(browser, bank_server, "carol")  # console errors fail the test (tests/e2e/conftest.py)
    page.goto(f"{bank_server}/admin/operations/")
    expect(page.locator("#projector-lag")).to_have_text("0")
    expect(page.locator("#held-back")).to_contain_text("parked by the projector: 0")
    expect(page.locator("#held-back")).to_contain_text("transfers in flight: 0")

    projector = next(w for w in workers.started if w.name == "projector")  # type: ignore[attr-defined]
    projector.stop()
    account = uuid.uuid4()
    bus.send(messages.CommandEnvelope.new(domain.OpenAccount(account, str(users["alice"].pk), "Ops", "EUR"), "user:t"))
    for _ in range(5):
        bus.send(messages.CommandEnvelope.new(domain.Deposit(account, 100), "user:t"))
    # Six events (and their transaction markers) wait for the stopped projector: the page shows them, live.
    expect(page.locator("#projector-lag")).not_to_have_text("0", timeout=20_000)
    assert int(page.locator("#projector-lag").inner_text()) >= 6
    expect(page.locator("#processor-lag")).to_have_text("0", timeout=20_000)
    if write_docs():
        page.screenshot(path=str(SCREENSHOT), full_page=True)

    workers("projector-again", ["run_projector"], kafka).wait_for_log("projector assigned")
    expect(page.locator("#projector-lag")).to_have_text("0", timeout=30_000)


def test_it_keeps_customers_out_of_the_operations_page(
    browser: Browser, bank_server: str, users: dict[str, User]
) -> None:
    page = log_in(browser, bank_server, "alice")
    page.goto(f"{bank_server}/admin/operations/")
    assert "/admin/login/" in page.url
    response = page.request.get(f"{bank_server}/metrics")
    assert response.status == 403
