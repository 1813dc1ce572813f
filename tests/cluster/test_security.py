"""SASL_SSL with SCRAM and per-service ACLs: who may write where, and what a bad setting does at start-up."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from django.core.exceptions import ImproperlyConfigured

from bank.config import KafkaSettings
from bank.connection import check_connection
from devservices import tls
from devservices.cluster import KafkaCluster
from tests.cluster.conftest import Secure
from tests.helpers import Worker

pytestmark = pytest.mark.cluster


def produce_as(kafka: KafkaSettings, topic: str) -> KafkaError | None:
    """Produce one record as `kafka`'s principal (idempotent, acks=all, like the bank) and return the broker's verdict."""
    verdicts: list[KafkaError | None] = []
    producer = Producer(
        kafka.client_config() | {"enable.idempotence": True, "acks": "all", "message.timeout.ms": 10_000}
    )
    producer.produce(topic, key=b"k", value=b"{}", on_delivery=lambda error, _: verdicts.append(error))
    producer.flush(15)
    assert verdicts, "no delivery report within 15 s"
    return verdicts[0]


def test_it_lets_the_web_write_commands(secure: Secure) -> None:
    web = secure.settings("web")
    assert produce_as(web, web.commands_topic) is None


def test_it_refuses_the_web_principal_on_the_event_log(secure: Secure) -> None:
    web = secure.settings("web")
    error = produce_as(web, web.events_topic)
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_it_refuses_the_projector_principal_on_the_command_topic(secure: Secure) -> None:
    projector = secure.settings("projector")
    error = produce_as(projector, projector.commands_topic)
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_it_refuses_an_anonymous_client_on_the_secured_listener(cluster: KafkaCluster) -> None:
    for config in (
        {"security.protocol": "PLAINTEXT"},
        {"security.protocol": "SSL", "ssl.ca.location": str(cluster.tls.ca)},  # TLS, but no SASL user
    ):
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap, "log_level": 0, **config})
        with pytest.raises(KafkaException):
            admin.list_topics(timeout=3)


def test_it_names_the_password_when_the_broker_rejects_it(secure: Secure) -> None:
    with pytest.raises(ImproperlyConfigured, match=r"^KAFKA_SASL_USERNAME/KAFKA_SASL_PASSWORD rejected by the broker"):
        check_connection(secure.settings("web", password="not-the-password"), timeout=10)


def test_it_names_the_ca_when_it_does_not_trust_the_broker(secure: Secure, tmp_path: Path) -> None:
    _, other_ca = tls.make_ca("someone else's CA")
    (tmp_path / "other-ca.pem").write_bytes(tls.pem_cert(other_ca))
    kafka = secure.settings("web", ssl_ca_location=str(tmp_path / "other-ca.pem"))
    with pytest.raises(ImproperlyConfigured, match=r"^KAFKA_SSL_CA_LOCATION does not trust the broker's certificate"):
        check_connection(kafka, timeout=10)


def test_it_passes_the_check_with_the_right_settings(secure: Secure) -> None:
    assert check_connection(secure.settings("processor"), timeout=10) is True


def test_it_stops_a_worker_at_start_with_one_line_naming_the_setting(
    secure: Secure, workers: Callable[..., Worker]
) -> None:
    kafka = secure.settings("processor")
    worker = workers(
        "processor-bad-password",
        ["run_processor", "--instance", "bad"],
        kafka,
        **(secure.env("processor") | {"KAFKA_SASL_PASSWORD": "wrong"}),
    )
    assert worker.process.wait(60) == 1
    lines = [line for line in worker.log().splitlines() if "KAFKA_SASL_PASSWORD" in line]
    assert lines and "rejected by the broker" in lines[0], worker.log()[-2000:]
    assert "Traceback" not in worker.log()


def test_it_keeps_least_privilege_in_the_granted_acls(secure: Secure) -> None:
    """The event log has exactly one writer principal (besides the brokers' super user)."""
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    kafka = secure.settings("operator")
    admin = secure.cluster.admin()  # held: the future fails if its client is destroyed first
    found = admin.describe_acls(
        AclBindingFilter(
            ResourceType.TOPIC,
            kafka.events_topic,
            ResourcePatternType.LITERAL,
            None,
            None,
            AclOperation.WRITE,
            AclPermissionType.ALLOW,
        ),
        request_timeout=10,
    ).result()
    assert {binding.principal for binding in found} == {"User:processor"}
