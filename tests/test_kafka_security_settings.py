"""The Kafka security settings are checked when the settings load: a bad one is a one-line error naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from bank.config import kafka_from_env
from devservices import tls


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    _, cert = tls.make_ca()
    path = tmp_path / "ca.pem"
    path.write_bytes(tls.pem_cert(cert))
    return path


SCRAM = {
    "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "KAFKA_SASL_USERNAME": "web",
    "KAFKA_SASL_PASSWORD": "secret",
}


def test_it_builds_the_client_config_for_sasl_ssl(monkeypatch: pytest.MonkeyPatch, ca_file: Path) -> None:
    for key, value in (SCRAM | {"KAFKA_SSL_CA_LOCATION": str(ca_file)}).items():
        monkeypatch.setenv(key, value)
    config = kafka_from_env().client_config()
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.mechanisms"] == "SCRAM-SHA-512"
    assert (config["sasl.username"], config["sasl.password"]) == ("web", "secret")
    assert config["ssl.ca.location"] == str(ca_file)


def test_it_requires_the_sasl_user_and_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "web")
    monkeypatch.delenv("KAFKA_SASL_PASSWORD", raising=False)
    with pytest.raises(ImproperlyConfigured, match="KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD are required"):
        kafka_from_env()


def test_it_refuses_an_unknown_mechanism(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in (SCRAM | {"KAFKA_SASL_MECHANISM": "GSSAPI"}).items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ImproperlyConfigured, match=r"^KAFKA_SASL_MECHANISM='GSSAPI' must be one of"):
        kafka_from_env()


def test_it_refuses_a_ca_file_that_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key, value in (SCRAM | {"KAFKA_SSL_CA_LOCATION": str(tmp_path / "nope.pem")}).items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ImproperlyConfigured, match=r"^KAFKA_SSL_CA_LOCATION=.* is not a readable file"):
        kafka_from_env()


def test_it_refuses_a_ca_file_without_a_certificate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\n...\n")
    for key, value in (SCRAM | {"KAFKA_SSL_CA_LOCATION": str(tmp_path / "key.pem")}).items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ImproperlyConfigured, match=r"^KAFKA_SSL_CA_LOCATION=.* holds no PEM certificate"):
        kafka_from_env()


def test_it_refuses_a_ca_without_tls(monkeypatch: pytest.MonkeyPatch, ca_file: Path) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "web")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "secret")
    monkeypatch.setenv("KAFKA_SSL_CA_LOCATION", str(ca_file))
    with pytest.raises(ImproperlyConfigured, match=r"^KAFKA_SSL_CA_LOCATION is set but KAFKA_SECURITY_PROTOCOL"):
        kafka_from_env()
