"""The admin's Release action needs its own permission: viewing parked accounts is not enough to release them."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from projections.models import Account, ParkedAccount

pytestmark = pytest.mark.django_db


def staff(name: str, *codenames: str) -> Client:
    user = User.objects.create_user(name, password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def test_it_offers_release_only_with_the_release_permission() -> None:
    parked = ParkedAccount.objects.create(
        account_id=uuid.uuid4(), topic="bank.events", partition=0, offset=7, reason="sequence gap", since=timezone.now()
    )
    Account.objects.create(  # a changelist shows its actions only when it lists something
        id=parked.account_id,
        owner="1",
        name="Held",
        currency="EUR",
        balance=0,
        status="open",
        opened_at=timezone.now(),
        last_sequence=1,
        updated_at=timezone.now(),
    )
    changelist = reverse("admin:projections_parkedaccount_changelist")

    viewer = staff("dave", "view_parkedaccount", "view_account")
    page = viewer.get(changelist).content.decode()
    assert str(parked.account_id) in page and "sequence gap" in page
    assert 'value="release"' not in page
    assert 'value="release"' not in viewer.get(reverse("admin:projections_account_changelist")).content.decode()
    refused = viewer.post(changelist, {"action": "release", "_selected_action": [str(parked.pk)]}, follow=True)
    assert "Sent 1 ReleaseAccount" not in refused.content.decode()

    operator = staff("erin", "view_parkedaccount", "view_account", "release_account")
    assert 'value="release"' in operator.get(changelist).content.decode()
    assert 'value="release"' in operator.get(reverse("admin:projections_account_changelist")).content.decode()
    assert ParkedAccount.objects.count() == 1  # only the projector removes it, on AccountReleased
