"""Metrics: the counters move by exactly what happened, a real Prometheus scrapes them, staff only on the web."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from bank import metrics
from bank.config import KafkaSettings
from devservices.process import free_port
from devservices.prometheus import PrometheusServer, Target
from projections.models import Account, AuditEntry
from tests.helpers import Worker, wait_until

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str, token: str = "") -> Samples:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name` over every sample whose labels include `labels`."""
    return sum(
        value for (n, got), value in samples.items() if n == name and set(labels.items()) <= set(dict(got).items())
    )


def local_total(name: str, **labels: str) -> float:
    """The same over this process's own registry (the web's command bus runs in the test process here)."""
    from prometheus_client import REGISTRY

    return sum(
        sample.value
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name == name and set(labels.items()) <= set(sample.labels.items())
    )


@pytest.fixture
def metered(kafka: KafkaSettings, workers: Callable[..., Worker]) -> Iterator[dict[str, str]]:
    """The processor and the projector, each serving /metrics on a free port."""
    ports = {"processor": free_port(), "projector": free_port()}
    processor = workers(
        "processor", ["run_processor", "--instance", "m1"], kafka, PROCESSOR_METRICS_PORT=str(ports["processor"])
    )
    projector = workers("projector", ["run_projector"], kafka, PROJECTOR_METRICS_PORT=str(ports["projector"]))
    processor.wait_for_log("assigned partitions")
    projector.wait_for_log("projector assigned")
    yield {name: f"127.0.0.1:{port}" for name, port in ports.items()}


def form_command_id(client: Client, url: str, field: str) -> str:
    """The fresh command id a page's form carries (its hidden idempotency key)."""
    page = client.get(url).content.decode()
    return page.split(f'name="{field}" value="')[1].split('"')[0]


def open_account_through_the_web(client: Client, owner: User) -> Account:
    command_id = form_command_id(client, "/", "command_id")
    response = client.post(
        "/accounts/open",
        {"name": "Metered", "currency": "EUR", "command_id": command_id},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 202, response.content
    return wait_until(lambda: Account.objects.filter(owner=str(owner.pk)).first(), 30, what="the account opened")


def move(client: Client, account: Account, kind: str, amount: str) -> None:
    command_id = form_command_id(client, f"/accounts/{account.id}/", f"{kind}-command_id")
    response = client.post(
        f"/accounts/{account.id}/{kind}",
        {f"{kind}-amount": amount, f"{kind}-command_id": command_id},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 202, response.content


def test_it_counts_each_outcome_exactly(metered: dict[str, str], users: dict[str, User]) -> None:
    deposits, rejected = 4, 3
    alice = Client()
    alice.force_login(users["alice"])
    account = open_account_through_the_web(alice, users["alice"])
    processor_url, projector_url = (f"http://{metered[w]}/metrics" for w in ("processor", "projector"))
    wait_until(lambda: total(scrape(projector_url), "bank_projector_events_applied_total") >= 1, 30, what="opening")
    before = {"processor": scrape(processor_url), "projector": scrape(projector_url)}
    sent_before = local_total("bank_commands_sent_total", result="confirmed")

    for _ in range(deposits):
        move(alice, account, "deposit", "1.00")
    for _ in range(rejected):
        move(alice, account, "withdraw", "1000.00")  # more than the balance: rejected

    expected_rows = 1 + deposits + rejected
    wait_until(lambda: AuditEntry.objects.filter(account_id=account.id).count() == expected_rows, 60, what="rows")
    wait_until(
        lambda: (
            total(scrape(projector_url), "bank_projector_events_applied_total")
            - total(before["projector"], "bank_projector_events_applied_total")
            == deposits + rejected
        ),
        30,
        what="the projector's counter",
    )
    after = scrape(processor_url)

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before["processor"], name, **labels)

    assert moved("bank_processor_commands_total", type="Deposit", outcome="accepted") == deposits
    assert moved("bank_processor_commands_total", type="Withdraw", outcome="rejected") == rejected
    assert moved("bank_processor_commands_total", outcome="accepted") == deposits
    assert moved("bank_processor_rejections_total", reason="insufficient_funds") == rejected
    assert moved("bank_processor_transactions_total", result="aborted") == 0
    # The web side, counted by the command bus of this process.
    assert local_total("bank_commands_sent_total", result="confirmed") - sent_before == deposits + rejected
    # Lag comes back to zero once everything is applied.
    wait_until(lambda: total(scrape(projector_url), "bank_consumer_lag", worker="projector") == 0, 30, what="lag 0")


def test_it_shows_no_lag_on_an_idle_bank_after_transfers(kafka: KafkaSettings, metered: dict[str, str]) -> None:
    # The transfers' steps end bank.commands' partitions with transaction markers, as every event does
    # bank.events': lag counts work, so it is 0 once everything is decided and applied.
    from bank import domain
    from bank.command_bus import CommandBus
    from tests.helpers import send

    bus = CommandBus(kafka)
    accounts = [uuid.uuid4() for _ in range(6)]
    for account_id in accounts:
        send(bus, domain.OpenAccount(account_id, "alice", "Idle", "EUR"))
        send(bus, domain.Deposit(account_id, 10_00))
    for i, source in enumerate(accounts):
        send(bus, domain.TransferMoney(source, uuid.uuid4(), accounts[(i + 1) % len(accounts)], 1_00))
    bus.close()
    processor_url, projector_url = (f"http://{metered[w]}/metrics" for w in ("processor", "projector"))
    completed = ("bank_processor_commands_total", {"type": "CompleteTransfer", "outcome": "accepted"})
    wait_until(lambda: total(scrape(processor_url), completed[0], **completed[1]) == len(accounts), 60)
    applied = 2 * len(accounts) + 3 * len(accounts)  # opened, deposited; debited, credited, completed
    wait_until(lambda: total(scrape(projector_url), "bank_projector_events_applied_total") == applied, 60)

    seen: dict[str, dict[str, float]] = {}

    def idle() -> bool:
        for url in (processor_url, projector_url):
            seen[url] = {
                dict(labels)["partition"]: v for (n, labels), v in scrape(url).items() if n == "bank_consumer_lag"
            }
        return all(len(lags) == kafka.partitions and not any(lags.values()) for lags in seen.values())

    try:
        wait_until(idle, 60, 0.5, "lag 0 on an idle bank")
    except AssertionError as error:
        raise AssertionError(f"{error}; last lags per partition: {seen}") from None


def test_it_answers_health_checks(metered: dict[str, str]) -> None:
    for address in metered.values():
        for path in ("/livez", "/readyz"):
            with urllib.request.urlopen(f"http://{address}{path}", timeout=10) as response:
                assert response.status == 200 and response.read() == b"ok\n"


def test_it_is_scraped_by_a_real_prometheus(
    kafka: KafkaSettings, metered: dict[str, str], users: dict[str, User], tmp_path: Path
) -> None:
    deposits, rejected = 3, 2
    alice = Client()
    alice.force_login(users["alice"])
    account = open_account_through_the_web(alice, users["alice"])
    for _ in range(deposits):
        move(alice, account, "deposit", "2.00")
    for _ in range(rejected):
        move(alice, account, "withdraw", "999.00")
    wait_until(lambda: AuditEntry.objects.filter(account_id=account.id).count() == 1 + deposits + rejected, 60)

    prometheus = PrometheusServer(
        tmp_path / "prometheus",
        free_port(),
        [Target("processor", metered["processor"]), Target("projector", metered["projector"])],
    )
    prometheus.start()
    try:

        def value(promql: str) -> float | None:
            result = prometheus.query(promql)
            return float(result[0]["value"][1]) if result else None

        wait_until(lambda: value('sum(up{job=~"processor|projector"})') == 2, 60, what="both targets up")
        wait_until(
            lambda: value('sum(bank_processor_commands_total{type="Deposit",outcome="accepted"})') == deposits,
            60,
            what="the deposits in Prometheus",
        )
        assert value('sum(bank_processor_commands_total{type="Withdraw",outcome="rejected"})') == rejected
        assert value('sum(bank_processor_rejections_total{reason="insufficient_funds"})') == rejected
        assert value("sum(bank_projector_events_applied_total)") == 1 + deposits + rejected
        wait_until(lambda: value('sum(bank_consumer_lag{worker="projector"})') == 0, 60, what="projector lag 0")
        wait_until(lambda: value('sum(bank_consumer_lag{worker="processor"})') == 0, 60, what="processor lag 0")
        assert value('min(bank_worker_ready{worker=~"processor|projector"})') == 1
    finally:
        prometheus.stop()


def test_it_shows_the_web_metrics_to_staff_or_the_scraper_only(users: dict[str, User], settings: object) -> None:
    anonymous = Client()
    assert anonymous.get("/metrics").status_code == 403
    customer = Client()
    customer.force_login(users["alice"])
    assert customer.get("/metrics").status_code == 403
    assert customer.get("/admin/operations/").status_code == 302  # to the admin's login: staff only
    staff = Client()
    staff.force_login(users["carol"])
    response = staff.get("/metrics")
    assert response.status_code == 200 and b"bank_commands_sent_total" in response.content
    settings.METRICS_TOKEN = "s3cret-scraper-token"  # type: ignore[attr-defined]
    assert anonymous.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert anonymous.get("/metrics", headers={"Authorization": "Bearer s3cret-scraper-token"}).status_code == 200


def test_it_names_metrics_by_the_conventions() -> None:
    from prometheus_client import REGISTRY

    assert metrics.ENABLED
    names = {family.name for family in REGISTRY.collect() if family.name.startswith("bank_")}
    assert names, "no bank_ metrics registered"
    for family in REGISTRY.collect():
        if not family.name.startswith("bank_"):
            continue
        if family.type == "counter":
            assert family.name + "_total" in {s.name for s in family.samples} or not family.samples
        if family.type == "histogram" and "seconds" not in family.name:
            assert family.name.endswith("_size"), family.name  # counts, not durations
        for sample in family.samples:
            assert not {"account", "account_id", "user", "owner", "username"} & set(sample.labels)


def test_it_ships_rules_and_a_dashboard_that_parse() -> None:
    rules = ROOT / "monitoring" / "alerts.yml"
    checked = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    dashboard = json.loads((ROOT / "monitoring" / "grafana" / "dashboards" / "bank.json").read_text())
    source = (ROOT / "bank" / "metrics.py").read_text() + (ROOT / "consumers" / "health.py").read_text()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used = {word for word in _words(target["expr"]) if word.startswith("bank_")}
            for name in used:
                base = name.removesuffix("_bucket")
                assert f'"{base}"' in source or f'"{base.removesuffix("_total")}' in source, (panel["title"], name)


def _words(expr: str) -> list[str]:
    import re

    return re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)


@pytest.mark.parametrize("python", [sys.executable])
def test_it_runs_without_metrics_when_switched_off(python: str) -> None:
    code = (
        "from bank import metrics; metrics.commands_sent.labels('Deposit', 'confirmed').inc(); print(metrics.ENABLED)"
    )
    result = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, cwd=ROOT, env={"BANK_METRICS": "false", "PATH": ""}
    )
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr


def non_loopback_address() -> str | None:
    """An address of this machine that is not 127.x (the one its default route leaves by), if it has one."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


def test_it_serves_worker_endpoints_on_localhost_with_the_token() -> None:
    from bank.config import ENV_VARS
    from consumers import health

    assert ENV_VARS["WORKER_METRICS_HOST"] == "127.0.0.1"
    port = free_port()
    stop = health.serve(port, health.Health({}), token="s3cret")  # the default host, as the workers use it
    assert stop is not None
    try:

        def get(path: str, auth: str = "") -> int:
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": auth})
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return int(response.status)
            except urllib.error.HTTPError as error:
                return int(error.code)

        assert get("/metrics") == 403
        assert get("/metrics", "Bearer wrong") == 403
        assert get("/metrics", "Bearer s3cret") == 200
        assert get("/livez") == 200  # health checks need no token
        if (address := non_loopback_address()) is not None:
            with pytest.raises(OSError):
                urllib.request.urlopen(f"http://{address}:{port}/livez", timeout=3)
    finally:
        stop()
