"""`manage.py seed_demo`: the demo user (and a staff user for the admin), idempotently."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

DEMO_USERS = [
    # (username, password, staff)
    ("demo", "demo-bank-2026", False),
    ("admin", "admin-bank-2026", True),
]


class Command(BaseCommand):
    help = "Create the demo user and the admin user if they do not exist."

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        for username, password, staff in DEMO_USERS:
            user, created = User.objects.get_or_create(
                username=username, defaults={"is_staff": staff, "is_superuser": staff}
            )
            if created:
                user.set_password(password)
                user.save()
            self.stdout.write(
                f"{'created' if created else 'exists '} {'admin' if staff else 'user '} {username} / {password}"
            )
