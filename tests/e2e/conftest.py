"""Headless Chromium (Debian's package) driven by Playwright: never a downloaded browser."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, sync_playwright

from tests.helpers import PASSWORD

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # The network here is closed: without these Chromium keeps trying outside hosts.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    from devservices.process import apt_install

    apt_install("chromium")
    # Playwright's sync API runs an event loop in this thread, which Django would take for async code.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            yield browser
            browser.close()
    finally:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@dataclass
class ConsoleErrors:
    """Errors the pages logged in the browser console; a test fails on any it did not say it expects."""

    seen: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)  # substrings of errors a test provokes on purpose
    contexts: list[BrowserContext] = field(default_factory=list)

    def expect(self, text: str) -> None:
        self.expected.append(text)

    def unexpected(self) -> list[str]:
        return [e for e in self.seen if not any(x in e for x in self.expected)]


_console = ConsoleErrors()


@pytest.fixture(autouse=True)
def console_errors(bank_server: str) -> Iterator[ConsoleErrors]:
    """Fails the test on any console error of any page opened through `new_page` (htmx logs its own there).

    Its pages are closed before the bank stops (this fixture depends on `bank_server`), so that their
    attempts to reconnect are not counted.
    """
    _console.seen.clear()
    _console.expected.clear()
    yield _console
    for context in _console.contexts:
        context.close()
    _console.contexts.clear()
    assert not _console.unexpected(), "errors in the browser console:\n" + "\n".join(_console.unexpected())


def new_page(browser: Browser, **context: Any) -> Page:
    """A page in a fresh browser context (its own cookies) whose console errors fail the test."""
    browser_context = browser.new_context(**({"viewport": {"width": 1100, "height": 900}} | context))
    _console.contexts.append(browser_context)
    page = browser_context.new_page()
    page.set_default_timeout(15_000)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            _console.seen.append(f"{page.url}: {message.text} {message.location.get('url', '')}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: _console.seen.append(f"{page.url}: uncaught {error}"))
    return page


def write_docs() -> bool:
    """Screenshots (docs/*.png) and bench/results/*.json are rewritten only on request: BANK_WRITE_DOCS=1."""
    return os.environ.get("BANK_WRITE_DOCS") == "1"


def log_in(browser: Browser, server: str, username: str, **context: Any) -> Page:
    """A fresh browser context (its own cookies) logged in as `username`, on the dashboard, live."""
    page = new_page(browser, **context)
    page.goto(f"{server}/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server}/")
    page.wait_for_selector("#live-status.on")
    return page
