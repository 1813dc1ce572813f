"""The start-up check of the Kafka settings: does the broker accept our credentials and our trust in it?

librdkafka treats a refused password or an untrusted certificate like a broker that is down: it
retries forever and logs. A process would then look alive and do nothing. This check makes the
two configuration mistakes a one-line error naming the setting, while a broker that is merely
unreachable (restarting, quorum lost) only logs a warning: the process starts and catches up.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from django.core.exceptions import ImproperlyConfigured

from bank.config import KafkaSettings

log = logging.getLogger(__name__)


def check_connection(kafka: KafkaSettings, timeout: float = 5.0) -> bool:
    """Fetch metadata once. True when the brokers answered; False (logged) when none could be reached in
    `timeout`; ImproperlyConfigured when a broker refused the SASL credentials or TLS failed.

    PLAINTEXT has nothing a broker could refuse, so it is not checked (no start-up delay).
    """
    if kafka.security_protocol == "PLAINTEXT":
        return True
    errors: list[KafkaError] = []
    config: dict[str, Any] = kafka.client_config() | {
        "error_cb": errors.append,
        "log_level": 0,  # the error callback reports what matters; no repeated FAIL lines on stderr
    }
    admin = AdminClient(config)
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
            return True
        except KafkaException:
            pass
        admin.poll(0)  # serves the error callback
        for error in errors:
            _raise_for(kafka, error)
        if time.monotonic() >= deadline:
            log.warning(
                "kafka: no broker of %s answered within %.0fs; starting anyway, clients retry (%s)",
                kafka.bootstrap_servers,
                timeout,
                errors[-1].str() if errors else "no error reported",
            )
            return False


def _raise_for(kafka: KafkaSettings, error: KafkaError) -> None:
    code, text = error.code(), error.str()
    if code == KafkaError._AUTHENTICATION:
        raise ImproperlyConfigured(
            f"KAFKA_SASL_USERNAME/KAFKA_SASL_PASSWORD rejected by the broker "
            f"(user {kafka.sasl_username!r}, {kafka.sasl_mechanism}): {_brief(text)}"
        )
    if code == KafkaError._SSL:
        if "certificate verify failed" in text:
            where = kafka.ssl_ca_location or "the system's CA store (KAFKA_SSL_CA_LOCATION is empty)"
            raise ImproperlyConfigured(
                f"KAFKA_SSL_CA_LOCATION does not trust the broker's certificate ({where}): {_brief(text)}"
            )
        raise ImproperlyConfigured(
            f"TLS with the broker failed (KAFKA_SECURITY_PROTOCOL={kafka.security_protocol}, "
            f"KAFKA_SSL_CA_LOCATION={kafka.ssl_ca_location!r}): {_brief(text)}"
        )


def _brief(text: str) -> str:
    """librdkafka's message without its long install hints."""
    return text.split(": broker certificate could not be verified")[0]
