"""A transfer between two users in two browser contexts: both sides live, and the payee never learns the payer's name."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Browser, Page, expect

from bank.account_number import account_number, display
from tests.e2e.conftest import ConsoleErrors, log_in
from tests.e2e.test_dashboard import move, open_account

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]


def frames_of(page: Page) -> list[str]:
    """The websocket frames a page receives from now on."""
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda frame: frames.append(str(frame))))
    return frames


def test_it_sends_money_to_another_users_account_number_live_on_both_sides(
    browser: Browser, bank_server: str, users: dict[str, User], console_errors: ConsoleErrors
) -> None:
    console_errors.expect("status of 422")  # the answer to the typo below: the form with its error
    alice = log_in(browser, bank_server, "alice")
    alice_url = open_account(alice, "Alice Household")
    alice.goto(f"{bank_server}{alice_url}")
    alice.wait_for_selector("#live-status.on")
    move(alice, "deposit", "100.00")
    expect(alice.locator("#pending-list li").first).to_contain_text("accepted")
    alice_number = alice.locator("#account-number").get_attribute("data-number")

    bob = log_in(browser, bank_server, "bob")
    bob_frames = frames_of(bob)
    bob_url = open_account(bob, "Bob Savings")
    bob.goto(f"{bank_server}{bob_url}")
    bob.wait_for_selector("#live-status.on")
    bob_id = bob_url.strip("/").split("/")[-1]
    bob_number = bob.locator("#account-number").inner_text()  # as shown: in groups of four

    alice.fill("#id_transfer-to_number", bob_number)
    alice.fill("#id_transfer-amount", "30.00")
    alice.click("#transfer-form button")
    row = alice.locator("#pending-list li").first
    expect(row).to_contain_text("30.00")
    expect(row).to_contain_text("completed")
    alice_id = alice_url.strip("/").split("/")[-1]
    expect(alice.locator(f"#balance-{alice_id}")).to_have_text("€70.00")
    expect(alice.locator("table.history tbody tr").first).to_contain_text("Transfer completed to")

    # bob's page changes without a reload: balance and history, the payer shown by account number only.
    expect(bob.locator(f"#balance-{bob_id}")).to_have_text("€30.00")
    received = bob.locator("table.history tbody tr").first
    expect(received).to_contain_text("Transfer received from")
    assert alice_number is not None
    expect(received).to_contain_text(" ".join(alice_number[i : i + 4] for i in range(0, len(alice_number), 4)))
    seen_by_bob = bob.content() + "".join(bob_frames)
    for secret in ("alice", "Alice Household", alice_id):
        assert secret not in seen_by_bob, f"bob saw {secret!r}"

    # A well-formed number of an account that does not exist: sent, then refunded with the reason.
    nobody = display(account_number(uuid.uuid4()))
    alice.fill("#id_transfer-to_number", nobody)
    alice.fill("#id_transfer-amount", "20")
    alice.click("#transfer-form button")
    refunded = alice.locator("#pending-list li").first
    expect(refunded).to_contain_text(nobody)
    expect(refunded).to_contain_text("refunded: no such account")
    expect(alice.locator(f"#balance-{alice_id}")).to_have_text("€70.00")
    expect(alice.locator("table.history tbody tr").first).to_contain_text("Transfer refunded to")

    # A typo in the number is answered in the form, and nothing is sent.
    alice.fill("#id_transfer-to_number", bob_number[:-1] + ("0" if bob_number[-1] != "0" else "1"))
    alice.fill("#id_transfer-amount", "5")
    alice.click("#transfer-form button")
    expect(alice.locator("#transfer-form .errorlist")).to_contain_text("typo")
    expect(alice.locator(f"#balance-{alice_id}")).to_have_text("€70.00")
