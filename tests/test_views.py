"""The web views with Django's test client, against the real broker: who may do what, and bad input."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.test import AsyncClient, Client

from bank.config import KafkaSettings
from devservices.process import free_port
from projections.models import Account, AuditEntry
from tests.helpers import account_of, logged_in, read_raw

pytestmark = pytest.mark.django_db(transaction=True)


def commands_sent(kafka: KafkaSettings) -> list[bytes]:
    return [m.value() for m in read_raw(kafka, kafka.commands_topic)]


def test_it_requires_login_everywhere(users: dict[str, User], kafka: KafkaSettings) -> None:
    account = account_of(users["alice"])
    anonymous = Client()
    for method, url in [
        ("get", "/"),
        ("get", f"/accounts/{account.id}/"),
        ("post", "/accounts/open"),
        ("post", f"/accounts/{account.id}/deposit"),
        ("post", f"/accounts/{account.id}/withdraw"),
        ("get", f"/commands/{account.id}/{uuid.uuid4()}"),
    ]:
        response = getattr(anonymous, method)(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/login/"), url
    assert commands_sent(kafka) == []


def test_it_refuses_a_post_without_csrf_token(users: dict[str, User], kafka: KafkaSettings) -> None:
    account = account_of(users["alice"])
    client = logged_in(users["alice"], enforce_csrf_checks=True)
    response = client.post(
        f"/accounts/{account.id}/deposit", {"deposit-amount": "10", "deposit-command_id": str(uuid.uuid4())}
    )
    assert response.status_code == 403
    assert commands_sent(kafka) == []


def test_it_hides_other_users_accounts(users: dict[str, User], kafka: KafkaSettings) -> None:
    alices = account_of(users["alice"], "Alice's savings", 50_00)
    bob = logged_in(users["bob"])
    assert bob.get(f"/accounts/{alices.id}/").status_code == 404
    for kind in ("deposit", "withdraw"):
        response = bob.post(
            f"/accounts/{alices.id}/{kind}", {f"{kind}-amount": "10", f"{kind}-command_id": str(uuid.uuid4())}
        )
        assert response.status_code == 404
    assert "Alice&#x27;s savings" not in bob.get("/").content.decode()
    assert "Alice" not in bob.get("/").content.decode()
    assert commands_sent(kafka) == []


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("", "Enter an amount."),
        ("-5", "Enter an amount greater than zero."),
        ("0", "Enter an amount greater than zero."),
        ("0.00", "Enter an amount greater than zero."),
        ("1.234", "Use at most two decimals (cents)."),
        ("1000000.01", "The most one transaction can move is €1,000,000.00."),
        ("ten", "Enter a number, like 25 or 25.50."),
        ("1e5", "Enter a number, like 25 or 25.50."),
        ("NaN", "Enter a number, like 25 or 25.50."),
        # ASCII digits only, no sign, no inner spaces: each of these was once taken as an amount.
        ("١٢٣", "Enter a number, like 25 or 25.50."),
        ("\uff15", "Enter a number, like 25 or 25.50."),  # a full-width 5
        ("1 2", "Enter a number, like 25 or 25.50."),
        ("++5", "Enter a number, like 25 or 25.50."),
        ("+5", "Enter a number, like 25 or 25.50."),
    ],
)
def test_it_answers_bad_amounts_in_the_form(
    users: dict[str, User], kafka: KafkaSettings, amount: str, message: str
) -> None:
    account = account_of(users["alice"])
    client = logged_in(users["alice"])
    response = client.post(
        f"/accounts/{account.id}/withdraw",
        {"withdraw-amount": amount, "withdraw-command_id": str(uuid.uuid4())},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 422
    assert message in response.content.decode()
    assert f'value="{amount}"' in response.content.decode() or amount == ""
    assert commands_sent(kafka) == []


def test_it_sends_one_command_and_answers_pending(users: dict[str, User], kafka: KafkaSettings) -> None:
    account = account_of(users["alice"])
    client = logged_in(users["alice"])
    command_id = str(uuid.uuid4())
    response = client.post(
        f"/accounts/{account.id}/deposit",
        {"deposit-amount": "100.00", "deposit-command_id": command_id},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 202
    body = response.content.decode()
    assert f'id="cmd-{account.id}-{command_id}"' in body
    assert "Deposit €100.00" in body
    assert "pending" in body
    assert command_id not in body.split('name="deposit-command_id"')[1][:120], "the fresh form needs a new command id"
    sent = commands_sent(kafka)
    assert len(sent) == 1
    assert b'"amount":10000' in sent[0]
    assert b'"actor":"user:alice"' in sent[0]


def test_it_says_when_the_broker_cannot_confirm_and_keeps_the_values(
    users: dict[str, User], kafka: KafkaSettings, settings
) -> None:
    account = account_of(users["alice"])
    settings.KAFKA = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", command_timeout=1.0)
    client = logged_in(users["alice"])
    response = client.post(
        f"/accounts/{account.id}/deposit",
        {"deposit-amount": "42.50", "deposit-command_id": str(uuid.uuid4())},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 503
    body = response.content.decode()
    assert "cannot take orders right now" in body
    assert 'value="42.50"' in body


def test_it_refuses_admin_pages_to_customers(users: dict[str, User]) -> None:
    alice = logged_in(users["alice"])
    for url in ["/admin/", "/admin/projections/account/", "/admin/projections/deadletter/"]:
        response = alice.get(url)
        assert response.status_code == 302
        assert "/admin/login/" in response["Location"]
    staff = logged_in(users["carol"])
    assert staff.get("/admin/projections/account/").status_code == 200


def test_it_shows_projections_read_only_in_the_admin(users: dict[str, User]) -> None:
    account = account_of(users["alice"])
    staff = logged_in(users["carol"])
    assert staff.get("/admin/projections/account/add/").status_code == 403
    response = staff.post(f"/admin/projections/account/{account.id}/change/", {"balance": "999"})
    assert response.status_code == 403
    assert staff.post(f"/admin/projections/account/{account.id}/delete/", {"post": "yes"}).status_code == 403
    assert Account.objects.get(id=account.id).balance == 0


def test_it_issues_admin_commands_through_the_bus(users: dict[str, User], kafka: KafkaSettings) -> None:
    account = account_of(users["alice"])
    staff = logged_in(users["carol"])
    response = staff.post(
        "/admin/projections/account/",
        {"action": "deposit_correction", "_selected_action": [str(account.id)], "apply": "1", "amount": "12.50"},
    )
    assert response.status_code == 302
    staff.post("/admin/projections/account/", {"action": "close_accounts", "_selected_action": [str(account.id)]})
    sent = commands_sent(kafka)
    assert len(sent) == 2
    assert b'"type":"Deposit"' in sent[0] and b'"amount":1250' in sent[0] and b'"actor":"admin:carol"' in sent[0]
    assert b'"type":"CloseAccount"' in sent[1]


def test_it_paginates_the_history_newest_first(users: dict[str, User]) -> None:
    account = account_of(users["alice"])
    now = datetime.now(UTC)
    AuditEntry.objects.bulk_create(
        AuditEntry(
            event_id=uuid.uuid4(),
            account_id=account.id,
            sequence=n,
            type="MoneyDeposited",
            amount=100,
            balance_after=100 * n,
            occurred_at=now,
            actor="user:alice",
            command_id=uuid.uuid4(),
        )
        for n in range(1, 26)
    )
    client = logged_in(users["alice"])
    first = client.get(f"/accounts/{account.id}/").content.decode()
    assert first.count('class="entry') == 20
    assert first.index("#25") < first.index("#24")
    assert "?before=6" in first, "older entries by sequence (keyset), not by page number"
    second = client.get(f"/accounts/{account.id}/?before=6").content.decode()
    assert second.count('class="entry') == 5
    assert "#1<" in second.replace("</td>", "<")
    assert f'id="audit-live-{account.id}"' not in second, "only page one receives live rows"


def test_it_works_without_javascript(users: dict[str, User], kafka: KafkaSettings) -> None:
    """Plain form posts (no htmx): a redirect after a sent command, the whole page with the errors otherwise."""
    account = account_of(users["alice"])
    client = logged_in(users["alice"])
    page = client.get(f"/accounts/{account.id}/").content.decode()
    assert f'action="/accounts/{account.id}/deposit"' in page and "csrfmiddlewaretoken" in page
    response = client.post(
        f"/accounts/{account.id}/deposit", {"deposit-amount": "3", "deposit-command_id": str(uuid.uuid4())}
    )
    assert response.status_code == 303
    assert response["Location"] == f"/accounts/{account.id}/"
    assert len(commands_sent(kafka)) == 1
    response = client.post(
        f"/accounts/{account.id}/withdraw", {"withdraw-amount": "1.234", "withdraw-command_id": str(uuid.uuid4())}
    )
    assert response.status_code == 422
    body = response.content.decode()
    assert "<html" in body and "History" in body
    assert "Use at most two decimals" in body and 'value="1.234"' in body
    response = client.post("/accounts/open", {"name": "", "currency": "EUR", "command_id": str(uuid.uuid4())})
    assert response.status_code == 422 and "Your accounts" in response.content.decode()
    assert len(commands_sent(kafka)) == 1


def hidden_command_id(body: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', body)
    assert match, f"no {name} in the form"
    return match.group(1)


@pytest.mark.parametrize("sent", [None, "", "not-a-uuid", "1234"])
def test_it_renews_a_missing_or_tampered_command_id(
    users: dict[str, User], kafka: KafkaSettings, sent: str | None
) -> None:
    account = account_of(users["alice"])
    client = logged_in(users["alice"])
    data = {"deposit-amount": "5"} | ({} if sent is None else {"deposit-command_id": sent})
    response = client.post(f"/accounts/{account.id}/deposit", data, headers={"HX-Request": "true"})
    assert response.status_code == 422
    body = response.content.decode()
    assert "incomplete or altered, so nothing was sent" in body
    fresh = hidden_command_id(body, "deposit-command_id")
    assert uuid.UUID(fresh) and fresh != sent
    assert 'value="5"' in body, "the amount as typed"
    assert commands_sent(kafka) == []
    # Sending the renewed form again works: no loop on the same bad value.
    again = client.post(
        f"/accounts/{account.id}/deposit",
        {"deposit-amount": "5", "deposit-command_id": fresh},
        headers={"HX-Request": "true"},
    )
    assert again.status_code == 202
    assert len(commands_sent(kafka)) == 1


def test_it_says_so_when_a_form_was_sent_before(users: dict[str, User], kafka: KafkaSettings) -> None:
    """A stale form (the back button after a sent command) would be dropped as a duplicate, silently."""
    account = account_of(users["alice"])
    used = uuid.uuid4()
    audit_entry(account, 2, "MoneyDeposited", 5_00, used)
    client = logged_in(users["alice"])
    for headers in ({"HX-Request": "true"}, {}):
        response = client.post(
            f"/accounts/{account.id}/deposit",
            {"deposit-amount": "7", "deposit-command_id": str(used)},
            headers=headers,
        )
        assert response.status_code == 422
        body = response.content.decode()
        assert "sent before" in body
        assert hidden_command_id(body, "deposit-command_id") != str(used)
    # Opening an account: its id derives from the command id, so an existing account means a used form.
    opened = uuid.uuid4()
    Account.objects.filter(id=account.id).update(id=uuid.uuid5(uuid.NAMESPACE_URL, f"bank:open:{opened}"))
    response = client.post(
        "/accounts/open",
        {"name": "Again", "currency": "EUR", "command_id": str(opened)},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 422
    body = response.content.decode()
    assert "sent before" in body and hidden_command_id(body, "command_id") != str(opened)
    assert commands_sent(kafka) == []


def audit_entry(
    account: Account, sequence: int, type: str, amount: int, command_id: uuid.UUID, reason: str = "", command: str = ""
) -> AuditEntry:
    return AuditEntry.objects.create(
        event_id=uuid.uuid4(),
        account_id=account.id,
        sequence=sequence,
        type=type,
        amount=amount,
        balance_after=amount,
        occurred_at=datetime.now(UTC),
        actor="user:alice",
        command_id=command_id,
        reason=reason,
        command=command,
    )


def test_it_looks_a_command_up_by_account_and_command_id(users: dict[str, User]) -> None:
    """The same command id sent to two accounts is two commands: each has its own outcome."""
    first, second = account_of(users["alice"], "First"), account_of(users["alice"], "Second")
    shared = uuid.uuid4()
    audit_entry(first, 9, "MoneyDeposited", 5_00, shared)
    audit_entry(second, 2, "CommandRejected", 1000_00, shared, "insufficient_funds", "Withdraw")
    client = logged_in(users["alice"])
    body = client.get(f"/commands/{second.id}/{shared}").content.decode()
    assert "Withdraw €1,000.00" in body and "rejected: insufficient funds" in body
    assert "€5.00" not in body
    body = client.get(f"/commands/{first.id}/{shared}").content.decode()
    assert "Deposit €5.00" in body and "accepted" in body


def test_it_answers_another_users_account_like_an_unknown_command(
    users: dict[str, User], monkeypatch: pytest.MonkeyPatch
) -> None:
    from web import views

    monkeypatch.setattr(views, "LONG_POLL_SECONDS", 1.0)
    alices, bobs = account_of(users["alice"]), account_of(users["bob"])
    command = uuid.uuid4()
    audit_entry(bobs, 2, "MoneyDeposited", 5_00, command)
    alice = logged_in(users["alice"])
    answers = [
        alice.get(f"/commands/{bobs.id}/{command}"),  # bob's account has this command
        alice.get(f"/commands/{uuid.uuid4()}/{command}"),  # no such account
        alice.get(f"/commands/{alices.id}/{command}"),  # her account, not this command
    ]
    for response in answers:
        assert response.status_code == 200
        body = response.content.decode()
        assert "pending" in body and "€5.00" not in body and "accepted" not in body


def test_it_bounds_the_long_polls_one_user_holds_open(
    users: dict[str, User], kafka: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from web import views

    monkeypatch.setattr(views, "LONG_POLL_SECONDS", 3.0)
    alices, bobs = account_of(users["alice"]), account_of(users["bob"])
    cookies = {name: logged_in(users[name]).cookies for name in ("alice", "bob")}

    async def run() -> tuple[list[int], int, int, int]:
        alice, bob = AsyncClient(), AsyncClient()
        alice.cookies, bob.cookies = cookies["alice"], cookies["bob"]
        held = [
            asyncio.ensure_future(alice.get(f"/commands/{alices.id}/{uuid.uuid4()}"))
            for _ in range(views.LONG_POLLS_PER_USER)
        ]
        for _ in range(200):  # until all are waiting, at most 10 s
            if views._long_polls[str(users["alice"].pk)] == views.LONG_POLLS_PER_USER:
                break
            await asyncio.sleep(0.05)
        one_more = await alice.get(f"/commands/{alices.id}/{uuid.uuid4()}")
        others = asyncio.ensure_future(bob.get(f"/commands/{bobs.id}/{uuid.uuid4()}"))
        statuses = [r.status_code for r in await asyncio.gather(*held)]
        after = await alice.get(f"/commands/{alices.id}/{uuid.uuid4()}")
        return statuses, one_more.status_code, (await others).status_code, after.status_code

    statuses, one_more, bobs_status, after = async_to_sync(run)()
    assert statuses == [200] * views.LONG_POLLS_PER_USER  # each answered "still pending"
    assert one_more == 429
    assert bobs_status == 200, "another user's bound is their own"
    assert after == 200, "freed once the others ended"
