"""docker-compose.yml brought up for real and used as a customer would (marker `compose`; `scripts/compose-test`).

Log in on the web, open an account, deposit, see the balance on the account page, Prometheus scraping every target,
then one Kafka broker killed and the bank still taking a deposit. The stack (tests/compose/stack.py) is taken down
with its volumes at the end, whatever happened.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from tests.compose import stack as compose

pytestmark = [pytest.mark.compose, pytest.mark.timeout(2400)]

DEMO_USER, DEMO_PASSWORD = "demo", "demo-bank-2026"  # what migrate's seed_demo creates, as the README says


class Browser:
    """A customer without JavaScript: plain form posts with the session and CSRF cookies."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def get(self, path: str) -> tuple[int, str]:
        try:
            with self.opener.open(self.base + path, timeout=60) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")

    def post(self, path: str, form: dict[str, str]) -> tuple[int, str]:
        token = next((c.value for c in self.cookies if c.name == "csrftoken"), "")
        data = urllib.parse.urlencode({**form, "csrfmiddlewaretoken": token or ""}).encode()
        request = urllib.request.Request(self.base + path, data=data, headers={"Referer": self.base + path})
        try:
            with self.opener.open(request, timeout=60) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")

    def log_in(self, username: str, password: str) -> None:
        compose.wait_until(lambda: self.get("/login/")[0] == 200, 120, "the login page")
        status, page = self.post("/login/", {"username": username, "password": password})
        assert status == 200 and "Your accounts" in page, (status, page[-2000:])

    def balance(self, account: str) -> int | None:
        status, page = self.get(f"/accounts/{account}/")
        found = re.search(rf'id="balance-{account}" class="balance" data-cents="(-?\d+)"', page)
        return int(found.group(1)) if status == 200 and found else None

    def deposit(self, account: str, amount: str, patience: float) -> None:
        """One deposit, sent again with the same command id while the bank answers 503 (a broker away): the
        processor applies a command id once, so a resend can never deposit twice."""
        form = {"deposit-amount": amount, "deposit-command_id": str(uuid.uuid4())}
        deadline, unanswered = time.monotonic() + patience, False
        while True:
            status, page = self.post(f"/accounts/{account}/deposit", form)
            if status == 200 or (unanswered and status == 422 and "sent before" in page):
                return  # a 422 on a resend: the first send went through after all (the balance tells)
            assert status == 503 and time.monotonic() < deadline, (status, page[-2000:])
            unanswered = True
            compose.say(f"deposit answered {status}; sending it again")
            time.sleep(2)


@pytest.fixture(scope="module")
def running() -> Iterator[compose.Stack]:
    with compose.stack() as stack:
        yield stack


def test_a_customer_banks_through_docker_compose(running: compose.Stack) -> None:
    try:
        _bank_as_a_customer(running)
    except BaseException:
        running.diagnose()  # a fixture's teardown does not see the test's failure: the logs are printed here
        raise


def _bank_as_a_customer(running: compose.Stack) -> None:
    browser = Browser(running.web)
    compose.say(f"logging in as {DEMO_USER} on {running.web}")
    browser.log_in(DEMO_USER, DEMO_PASSWORD)

    name = f"Compose {uuid.uuid4().hex[:6]}"
    compose.say(f"opening the account {name!r}")
    status, page = browser.post("/accounts/open", {"name": name, "currency": "EUR", "command_id": str(uuid.uuid4())})
    assert status == 200, (status, page[-2000:])

    def account_listed() -> str | None:
        found = re.search(rf'href="/accounts/([0-9a-f-]{{36}})/">{re.escape(name)}</a>', browser.get("/")[1])
        return found.group(1) if found else None

    account = compose.wait_until(account_listed, 60, "the new account on the dashboard")
    compose.say("depositing 12.34")
    browser.deposit(account, "12.34", patience=30)
    compose.wait_until(lambda: browser.balance(account) == 1234, 60, "the balance 12.34 on the account page")

    compose.wait_until(lambda: _targets_up(running.prometheus), 90, "Prometheus to see web, processor, projector up")

    running.kill("kafka-2")
    compose.say("depositing 5.00 with one broker down")
    browser.deposit(account, "5.00", patience=60)
    compose.wait_until(lambda: browser.balance(account) == 1734, 60, "the balance 17.34 with one broker down")
    assert browser.balance(account) == 1734  # and no deposit applied twice


def _targets_up(prometheus: str) -> bool:
    with urllib.request.urlopen(f"{prometheus}/api/v1/targets", timeout=10) as answer:
        targets = json.load(answer)["data"]["activeTargets"]
    health = {target["labels"]["job"]: target["health"] for target in targets}
    compose.say(f"Prometheus targets: {health}")
    return health == {"web": "up", "processor": "up", "projector": "up"}
