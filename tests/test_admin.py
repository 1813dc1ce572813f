"""The admin's command-issuing actions: each needs its own permission, beyond viewing."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User

from bank.config import KafkaSettings
from projections.models import DeadLetter
from tests.helpers import PASSWORD, account_of, logged_in, read_raw
from tests.test_views import commands_sent

pytestmark = pytest.mark.django_db(transaction=True)

ACCOUNTS = "/admin/projections/account/"
DEAD_LETTERS = "/admin/projections/deadletter/"


def staff(username: str, *codenames: str) -> User:
    """A staff user (not a superuser) holding exactly these permissions of the projections app."""
    user = User.objects.create_user(username, password=PASSWORD, is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="projections", codename__in=codenames))
    return user


def dead_letter(kafka: KafkaSettings) -> DeadLetter:
    return DeadLetter.objects.create(
        topic=kafka.commands_topic, partition=0, offset=7, key=b"k", value=b"not json", error="undecodable"
    )


def test_it_gives_a_view_only_staff_user_no_command_actions(users: dict[str, User], kafka: KafkaSettings) -> None:
    account = account_of(users["alice"])
    letter = dead_letter(kafka)
    viewer = logged_in(staff("viewer", "view_account", "view_deadletter"))
    page = viewer.get(ACCOUNTS)
    assert page.status_code == 200 and "Current" in page.content.decode()
    assert 'value="deposit_correction"' not in page.content.decode()
    assert 'value="close_accounts"' not in page.content.decode()
    assert 'value="requeue"' not in viewer.get(DEAD_LETTERS).content.decode()

    selected = {"_selected_action": [str(account.id)], "index": "0"}
    viewer.post(ACCOUNTS, {"action": "deposit_correction", "apply": "1", "amount": "5.00", **selected})
    viewer.post(ACCOUNTS, {"action": "close_accounts", **selected})
    viewer.post(DEAD_LETTERS, {"action": "requeue", "_selected_action": [str(letter.pk)], "index": "0"})
    assert commands_sent(kafka) == []
    letter.refresh_from_db()
    assert letter.requeued_at is None


def test_it_lets_each_permission_issue_its_own_action_only(users: dict[str, User], kafka: KafkaSettings) -> None:
    account = account_of(users["alice"])
    selected = {"_selected_action": [str(account.id)]}
    corrector = logged_in(staff("corrector", "view_account", "deposit_correction"))
    page = corrector.get(ACCOUNTS).content.decode()
    assert 'value="deposit_correction"' in page and 'value="close_accounts"' not in page
    response = corrector.post(ACCOUNTS, {"action": "deposit_correction", "apply": "1", "amount": "5.00", **selected})
    assert response.status_code == 302
    corrector.post(ACCOUNTS, {"action": "close_accounts", **selected})
    sent = commands_sent(kafka)
    assert len(sent) == 1
    assert b'"type":"Deposit"' in sent[0] and b'"amount":500' in sent[0] and b'"actor":"admin:corrector"' in sent[0]

    closer = logged_in(staff("closer", "view_account", "close_account"))
    closer.post(ACCOUNTS, {"action": "close_accounts", **selected})
    sent = commands_sent(kafka)
    assert len(sent) == 2 and b'"type":"CloseAccount"' in sent[1] and b'"actor":"admin:closer"' in sent[1]


def test_it_requeues_a_dead_letter_with_the_permission(users: dict[str, User], kafka: KafkaSettings) -> None:
    letter = dead_letter(kafka)
    requeuer = logged_in(staff("requeuer", "view_deadletter", "requeue_deadletter"))
    response = requeuer.post(DEAD_LETTERS, {"action": "requeue", "_selected_action": [str(letter.pk)], "index": "0"})
    assert response.status_code == 302
    letter.refresh_from_db()
    assert letter.requeued_at is not None
    assert [m.value() for m in read_raw(kafka, kafka.commands_topic)] == [b"not json"]


@pytest.mark.parametrize("amount", ["١٢٣", "\uff15", "1 2", "++5", "+5"])
def test_it_refuses_a_correction_not_written_in_ascii_digits(
    users: dict[str, User], kafka: KafkaSettings, amount: str
) -> None:
    account = account_of(users["alice"])
    admin = logged_in(users["carol"])
    response = admin.post(
        ACCOUNTS,
        {"action": "deposit_correction", "_selected_action": [str(account.id)], "apply": "1", "amount": amount},
    )
    assert response.status_code == 200
    assert "Enter a number, like 25 or 25.50." in response.content.decode()
    assert commands_sent(kafka) == []
