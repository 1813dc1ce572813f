"""Django's deploy checks, run against the middleware we actually use.

Django's security checks look for its middleware by dotted path (`"django.middleware.csrf.CsrfViewMiddleware"
in settings.MIDDLEWARE`); ours are subclasses of them (web/async_middleware.py), so `check --deploy` warned that
CSRF, clickjacking and security middleware were missing, and skipped the checks that depend on them (HSTS,
SSL redirect, Secure cookies). Here they run again with each of ours named as the Django class it extends; the
three "missing" warnings of the plain run are silenced in settings and come back from here (as web.W001-3)
only if the middleware is really missing.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register
from django.core.checks.registry import registry
from django.test.utils import override_settings
from django.utils.module_loading import import_string

DJANGO_MIDDLEWARE = (
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
)
MISSING = ("security.W001", "security.W002", "security.W003")  # silenced in settings: reported from here


def as_django(path: str) -> str:
    """The Django middleware `path` extends (its dotted path), else `path` itself."""
    try:
        cls = import_string(path)
    except ImportError:
        return path
    return next((name for name in DJANGO_MIDDLEWARE if issubclass(cls, import_string(name))), path)


@register(Tags.security, deploy=True)
def security_checks_on_our_middleware(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    django_checks = [
        check
        for check in registry.get_checks(include_deployment_checks=True)
        if getattr(check, "__module__", "").startswith("django.core.checks.security")
    ]
    plain = {(m.id, m.msg) for check in django_checks for m in check(app_configs=app_configs, databases=None)}
    found: list[CheckMessage] = []
    with override_settings(MIDDLEWARE=[as_django(path) for path in settings.MIDDLEWARE]):
        for check in django_checks:
            for message in check(app_configs=app_configs, databases=None):
                if message.id in MISSING:
                    found.append(Warning(message.msg, id=f"web.{message.id.split('.')[1]}"))
                elif (message.id, message.msg) not in plain:
                    found.append(message)
    return found
