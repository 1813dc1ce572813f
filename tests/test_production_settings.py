"""Settings as deployed: debug off by default, the development key refused, no credential printed."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

from tests.helpers import ROOT

SECRETS = {
    "DATABASE_URL": "postgres://bank:db-pass-4711@127.0.0.1:5432/bank",
    "REDIS_URL": "redis://:redis-pass-4712@127.0.0.1:6379/0",
    "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "KAFKA_SASL_USERNAME": "web",
    "KAFKA_SASL_PASSWORD": "kafka-pass-4713",
}
PASSWORDS = ("db-pass-4711", "redis-pass-4712", "kafka-pass-4713")


def django(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("DJANGO_DEBUG", "DJANGO_SECRET_KEY")}
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "server.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_refuses_to_start_with_debug_off_by_default_and_the_development_key() -> None:
    refused = django("print('started')")
    assert refused.returncode != 0 and "started" not in refused.stdout
    assert "DJANGO_SECRET_KEY must be set" in refused.stderr.strip().splitlines()[-1]
    started = django("from django.conf import settings; print(settings.DEBUG)", DJANGO_SECRET_KEY=secrets.token_hex(32))
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == "False"  # off unless asked for


def test_it_prints_no_credential_on_error_pages() -> None:
    code = (
        "from django.views.debug import get_default_exception_reporter_filter as f; "
        "from django.conf import settings; "
        "print(f().get_safe_settings()); print(repr(settings.KAFKA))"
    )
    shown = django(code, DJANGO_SECRET_KEY=secrets.token_hex(32), **SECRETS)
    assert shown.returncode == 0, shown.stderr
    assert "127.0.0.1:5432" in shown.stdout and "sasl_username='web'" in shown.stdout  # the settings are there
    for password in PASSWORDS:
        assert password not in shown.stdout, password


def test_it_masks_passwords_in_urls_anywhere() -> None:
    from web.debug import mask_urls

    text = "connect postgres://bank:s3cret@db:5432/bank and rediss://:p@ss@r:6379/0, not http://host/a:b@c"
    masked = mask_urls(text)
    assert "s3cret" not in masked and ":p@ss@" not in masked
    assert "postgres://bank:********************@db:5432/bank" in masked


def test_it_refuses_an_oversized_anonymous_post_before_parsing_it(db: None) -> None:
    from django.test import Client

    response = Client(raise_request_exception=False).post(
        "/login/", "username=a&password=" + "x" * 200_000, content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 400  # RequestDataTooBig: refused from its length, before the CSRF check reads it


def deploy_check(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("DJANGO_DEBUG", "DJANGO_SECRET_KEY")}
    production = {
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "bank.example",
    }
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "server.settings", **production, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_it_passes_the_deploy_checks_with_the_documented_production_settings() -> None:
    clean = deploy_check(DJANGO_HTTPS="true")
    assert "System check identified no issues" in clean.stdout + clean.stderr, clean.stdout + clean.stderr
    # Without TLS, Django's checks do see our middleware (subclasses of its own) and say what is missing.
    plain = deploy_check(DJANGO_HTTPS="false")
    for warning in ("security.W004", "security.W012", "security.W016"):
        assert warning in plain.stdout + plain.stderr, warning
    assert "web.W00" not in plain.stdout + plain.stderr


def test_it_shows_debug_pages_to_this_machine_only() -> None:
    shown = django(
        "from django.test import Client; "
        "print('far', 'URLconf' in Client(REMOTE_ADDR='203.0.113.9').get('/no-such-page').content.decode()); "
        "print('near', 'URLconf' in Client(REMOTE_ADDR='127.0.0.1').get('/no-such-page').content.decode())",
        DJANGO_DEBUG="true",
        ALLOWED_HOSTS="testserver",
    )
    assert shown.returncode == 0, shown.stderr
    assert "far False" in shown.stdout and "near True" in shown.stdout, shown.stdout
