"""The transfer form and the account number, with Django's test client against the real broker."""

from __future__ import annotations

import io
import re
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from bank.account_number import account_number, display
from bank.config import KafkaSettings
from projections.apply import transfer_key
from projections.models import Account, AuditEntry, Transfer
from tests.helpers import account_of, logged_in
from tests.test_views import commands_sent

pytestmark = pytest.mark.django_db(transaction=True)
HTMX = {"HX-Request": "true"}


def post_transfer(client, account, **fields):
    data = {"transfer-command_id": str(uuid.uuid4()), "transfer-amount": "12.50", **fields}
    return client.post(
        f"/accounts/{account.id}/transfer", {k: v for k, v in data.items() if v is not None}, headers=HTMX
    )


def test_it_shows_the_account_number_to_copy(users: dict[str, User], kafka: KafkaSettings) -> None:
    account = account_of(users["alice"])
    page = logged_in(users["alice"]).get(f"/accounts/{account.id}/").content.decode()
    assert display(account_number(account.id)) in page
    assert f'data-copy="{account_number(account.id)}"' in page


def test_it_sends_a_transfer_to_an_account_number(users: dict[str, User], kafka: KafkaSettings) -> None:
    source = account_of(users["alice"], balance=100_00)
    payee = account_of(users["bob"])
    command_id = uuid.uuid4()
    typed = display(account_number(payee.id)).lower()  # as someone might paste it
    response = post_transfer(
        logged_in(users["alice"]), source, **{"transfer-command_id": str(command_id), "transfer-to_number": typed}
    )
    assert response.status_code == 202
    assert f'id="cmd-{source.id}-{command_id}"' in response.content.decode()
    [sent] = [orjson.loads(v) for v in commands_sent(kafka)]
    assert sent["type"] == "TransferMoney"
    assert sent["command_id"] == str(command_id)
    assert sent["account_id"] == str(source.id)
    assert sent["data"] == {"transfer_id": str(command_id), "to_account": str(payee.id), "amount": 12_50}


def test_it_sends_a_transfer_to_one_of_the_users_accounts(users: dict[str, User], kafka: KafkaSettings) -> None:
    source = account_of(users["alice"], balance=100_00)
    savings = account_of(users["alice"], name="Savings")
    page = logged_in(users["alice"]).get(f"/accounts/{source.id}/").content.decode()
    assert f'value="{savings.id}"' in page and f'value="{source.id}"' not in page
    response = post_transfer(logged_in(users["alice"]), source, **{"transfer-to_own": str(savings.id)})
    assert response.status_code == 202
    [sent] = [orjson.loads(v) for v in commands_sent(kafka)]
    assert sent["data"]["to_account"] == str(savings.id)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"transfer-to_number": "KB12 3456"}, "starts with KB and has 30 characters"),
        ({"transfer-to_number": "hello"}, "starts with KB"),
        ({"transfer-to_number": ""}, "Choose one of your accounts or type the account number"),
        ({"transfer-amount": "0"}, "greater than zero"),
        ({"transfer-amount": "1.234"}, "two decimals"),
        ({"transfer-amount": ""}, "Enter an amount"),
    ],
)
def test_it_refuses_bad_input_and_sends_nothing(
    users: dict[str, User], kafka: KafkaSettings, fields: dict[str, str], message: str
) -> None:
    source = account_of(users["alice"], balance=100_00)
    payee = account_of(users["bob"])
    fields = {"transfer-to_number": account_number(payee.id), **fields}
    response = post_transfer(logged_in(users["alice"]), source, **fields)
    assert response.status_code == 422
    assert message in response.content.decode()
    assert commands_sent(kafka) == []


def test_it_refuses_a_typo_in_the_account_number(users: dict[str, User], kafka: KafkaSettings) -> None:
    source = account_of(users["alice"], balance=100_00)
    number = account_number(account_of(users["bob"]).id)
    typo = number[:10] + ("X" if number[10] != "X" else "Y") + number[11:]
    response = post_transfer(logged_in(users["alice"]), source, **{"transfer-to_number": typo})
    assert response.status_code == 422
    assert "typo" in response.content.decode()
    assert commands_sent(kafka) == []


def test_it_refuses_a_transfer_to_the_same_account(users: dict[str, User], kafka: KafkaSettings) -> None:
    source = account_of(users["alice"], balance=100_00)
    response = post_transfer(logged_in(users["alice"]), source, **{"transfer-to_number": account_number(source.id)})
    assert response.status_code == 422
    assert "That is this account" in response.content.decode()
    assert commands_sent(kafka) == []


def test_it_refuses_both_an_own_account_and_a_number(users: dict[str, User], kafka: KafkaSettings) -> None:
    source = account_of(users["alice"], balance=100_00)
    savings = account_of(users["alice"], name="Savings")
    response = post_transfer(
        logged_in(users["alice"]),
        source,
        **{"transfer-to_own": str(savings.id), "transfer-to_number": account_number(savings.id)},
    )
    assert response.status_code == 422
    assert "not both" in response.content.decode()
    assert commands_sent(kafka) == []


def test_it_refuses_another_users_account_from_the_own_list(users: dict[str, User], kafka: KafkaSettings) -> None:
    source = account_of(users["alice"], balance=100_00)
    bobs = account_of(users["bob"])
    response = post_transfer(logged_in(users["alice"]), source, **{"transfer-to_own": str(bobs.id)})
    assert response.status_code == 422
    assert commands_sent(kafka) == []


def test_it_refuses_to_send_from_someone_elses_account(users: dict[str, User], kafka: KafkaSettings) -> None:
    bobs = account_of(users["bob"], balance=100_00)
    response = post_transfer(
        logged_in(users["alice"]), bobs, **{"transfer-to_number": account_number(account_of(users["alice"]).id)}
    )
    assert response.status_code == 404
    assert commands_sent(kafka) == []


def transfer_row(status: str, minutes_ago: float, **fields: object) -> Transfer:
    at = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    source, transfer_id = uuid.uuid4(), uuid.uuid4()
    return Transfer.objects.create(
        id=transfer_key(source, transfer_id),
        transfer_id=transfer_id,
        from_account=source,
        to_account=uuid.uuid4(),
        amount=5_00,
        currency="EUR",
        status=status,
        debited_at=at,
        completed_at=at if status == "completed" else None,
        **fields,
    )


def test_it_lists_transfers_in_the_admin_and_flags_the_slow_ones(users: dict[str, User]) -> None:
    stuck = transfer_row("sent", minutes_ago=10)
    fresh = transfer_row("sent", minutes_ago=0)
    done = transfer_row("completed", minutes_ago=20)
    staff = logged_in(users["carol"])
    flagged = staff.get("/admin/projections/transfer/?in_flight=flagged").content.decode()
    assert str(stuck.transfer_id) in flagged and str(fresh.transfer_id) not in flagged
    assert str(done.transfer_id) not in flagged
    assert "in flight over 60s" in flagged
    assert display(account_number(stuck.from_account)) in flagged
    everything = staff.get("/admin/projections/transfer/").content.decode()
    assert all(str(t.id) in everything for t in (stuck, fresh, done))
    assert staff.get("/admin/projections/transfer/add/").status_code == 403
    assert staff.post(f"/admin/projections/transfer/{stuck.id}/delete/", {"post": "yes"}).status_code == 403
    assert logged_in(users["alice"]).get("/admin/projections/transfer/").status_code == 302


def test_it_reports_transfers_in_flight_in_bank_status(users: dict[str, User], kafka: KafkaSettings) -> None:
    transfer_row("sent", minutes_ago=10)
    transfer_row("refused", minutes_ago=0, reason="account_closed")
    transfer_row("completed", minutes_ago=20)
    out = io.StringIO()
    call_command("bank_status", stdout=out)
    line = next(x for x in out.getvalue().splitlines() if x.startswith("transfers in flight"))
    assert line.startswith("transfers in flight: 2 (1 sent, 0 credited, 1 refused); oldest debited 60")
    assert line.endswith("; 1 flagged (in flight over 60s)")


@pytest.mark.parametrize("sent_by", ["own other account", "another customer", "rejected on own other account"])
def test_it_refuses_a_transfer_id_used_from_another_account(
    users: dict[str, User], kafka: KafkaSettings, sent_by: str
) -> None:
    """One id, one transfer: the form says so and sends nothing, whichever account the id was sent from."""
    x, y = account_of(users["alice"], balance=100_00), account_of(users["alice"], "Savings", balance=100_00)
    payee = account_of(users["bob"])
    t = uuid.uuid4()
    if sent_by == "rejected on own other account":  # only a rejection in x's history: no transfer row
        AuditEntry.objects.create(
            event_id=uuid.uuid4(), account_id=x.id, sequence=2, type="CommandRejected", amount=5_00,
            balance_after=None, occurred_at=datetime.now(UTC), actor="user:alice", command_id=t,
            reason="insufficient_funds", command="TransferMoney",
        )  # fmt: skip
    else:
        source = x.id if sent_by == "own other account" else account_of(users["bob"], "Bob's").id
        at = datetime.now(UTC)
        Transfer.objects.create(
            id=transfer_key(source, t), transfer_id=t, from_account=source, to_account=payee.id, amount=5_00,
            currency="EUR", status="completed", debited_at=at, completed_at=at,
        )  # fmt: skip
    response = post_transfer(
        logged_in(users["alice"]), y, **{"transfer-command_id": str(t), "transfer-to_number": account_number(payee.id)}
    )
    assert response.status_code == 422
    assert "This transfer was sent before (from this account or another one)" in response.content.decode()
    assert str(t) not in response.content.decode(), "the form comes back with a fresh id"
    assert commands_sent(kafka) == []
    fresh = post_transfer(logged_in(users["alice"]), y, **{"transfer-to_number": account_number(payee.id)})
    assert fresh.status_code == 202


def entry(account: uuid.UUID, sequence: int, kind: str, t: uuid.UUID, other: uuid.UUID, minutes_ago: float) -> None:
    AuditEntry.objects.create(
        event_id=uuid.uuid4(), account_id=account, sequence=sequence, type=kind, amount=5_00, balance_after=0,
        occurred_at=datetime.now(UTC) - timedelta(minutes=minutes_ago), actor="bank:transfer",
        command_id=uuid.uuid4(), reason="", transfer_id=t, counterparty=other,
    )  # fmt: skip


def test_it_shows_transfers_stuck_at_each_step_from_the_accounts_own_histories(
    users: dict[str, User], kafka: KafkaSettings
) -> None:
    """No transfers rows at all (as when one id from two sources mixed them): the accounts' own projections
    still show what is in flight, per step, with the oldest's age, in bank_status and in /metrics."""
    x, y = account_of(users["alice"]), account_of(users["alice"], "Savings")
    payee = account_of(users["bob"])
    Account.objects.filter(id__in=[x.id, y.id]).update(in_flight=10_00)
    t, u, v = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    entry(x.id, 2, "TransferDebited", t, payee.id, minutes_ago=30)  # credited, the completion never came
    entry(payee.id, 2, "TransferCredited", t, x.id, minutes_ago=29)
    entry(y.id, 2, "TransferDebited", t, payee.id, minutes_ago=10)  # the same id from y: its credit never came
    entry(x.id, 3, "TransferDebited", u, y.id, minutes_ago=5)  # refused, the refund never came
    entry(y.id, 3, "TransferRefused", u, x.id, minutes_ago=5)
    entry(y.id, 4, "TransferDebited", v, payee.id, minutes_ago=1)  # ended: not in flight
    entry(y.id, 5, "TransferCompleted", v, payee.id, minutes_ago=1)
    assert not Transfer.objects.exists()
    out = io.StringIO()
    call_command("bank_status", stdout=out)
    shown = out.getvalue()
    assert "in flight by the accounts' histories: 3" in shown
    for step, minutes in (("debited awaiting credit", 10), ("credited awaiting completion", 30), ("refused", 5)):
        found = re.search(rf"  {step}[a-z ]*: 1, oldest (\d+)s", shown)
        assert found and minutes * 60 <= int(found[1]) < minutes * 60 + 60, (step, shown)
    scraped = logged_in(users["carol"]).get("/metrics").content.decode()
    assert 'bank_transfers_in_flight{step="credited_awaiting_completion"} 1.0' in scraped
    oldest = next(x for x in scraped.splitlines() if x.startswith('bank_transfers_in_flight_oldest_seconds{step="cred'))
    assert 1795 < float(oldest.split()[-1]) < 1900
    operations = logged_in(users["carol"]).get("/admin/operations/").content.decode()
    assert re.search(r"credited awaiting completion: 1, oldest 18\d\ds", operations)
