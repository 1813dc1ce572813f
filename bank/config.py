"""The one place that reads the environment. Every variable, its type and default.

A bad value stops start-up with a one-line error that names the variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

# Every variable the app reads, with its default as text: .env.example and docker-compose.yml are checked against it.
ENV_VARS: dict[str, str] = {}


def _register(name: str, default: object) -> None:
    ENV_VARS[name] = ",".join(default) if isinstance(default, list) else str(default)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str) -> str:
    _register(name, default)
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    _register(name, default)
    raw = os.environ.get(name)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use true/false, 1/0, yes/no)")


def env_int(name: str, default: int, minimum: int | None = None) -> int:
    _register(name, default)
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}")
    return value


def env_float(name: str, default: float, minimum: float | None = None) -> float:
    _register(name, default)
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None
    if minimum is None and value <= 0:
        raise ImproperlyConfigured(f"{name}={value} must be positive")
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    _register(name, default)
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_url(name: str, default: str, schemes: tuple[str, ...]) -> str:
    _register(name, default)
    raw = os.environ.get(name, default)
    url = urlsplit(raw)
    if url.scheme not in schemes or not url.hostname:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a URL of the form {schemes[0]}://host:port/...")
    try:
        url.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} has a bad port") from None
    return raw


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    _register(name, default)
    raw = os.environ.get(name, default)
    if raw not in choices:
        raise ImproperlyConfigured(f"{name}={raw!r} must be one of {', '.join(choices)}")
    return raw


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)  # never printed (error pages, logs)
    ssl_ca_location: str = ""
    topic_prefix: str = "bank."
    partitions: int = 6
    replication_factor: int = 1
    # How long a view waits for the broker to confirm a command before answering 503.
    command_timeout: float = 5.0
    # How soon a dead worker's partitions move to another (processor and projector groups).
    session_timeout_ms: int = 10_000
    extra: tuple[tuple[str, str], ...] = ()  # further librdkafka settings

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def group(self, name: str) -> str:
        """Consumer group names follow the topic prefix: bank-processor for bank.*, and a
        benchmark's or a test's topics never share a group with the live workers."""
        return f"{self.topic_prefix.rstrip('.')}-{name}"

    @property
    def commands_topic(self) -> str:
        return self.topic("commands")

    @property
    def events_topic(self) -> str:
        return self.topic("events")

    @property
    def deadletters_topic(self) -> str:
        return self.topic("deadletters")

    @property
    def state_topic(self) -> str:
        """The processor's compacted state per account (the changelog of its in-memory state)."""
        return self.topic("account-state")

    def client_config(self) -> dict[str, str | int | float | bool]:
        """librdkafka settings shared by every producer, consumer and admin client."""
        config: dict[str, str | int | float | bool] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL"):
            config |= {
                "sasl.mechanisms": self.sasl_mechanism,
                "sasl.username": self.sasl_username,
                "sasl.password": self.sasl_password,
            }
        if self.ssl_ca_location:
            config["ssl.ca.location"] = self.ssl_ca_location
        return config | dict(self.extra)


def kafka_from_env() -> KafkaSettings:
    protocol = env_choice("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", SECURITY_PROTOCOLS)
    settings = KafkaSettings(
        bootstrap_servers=env_str("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        security_protocol=protocol,
        sasl_mechanism=env_choice("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512", SASL_MECHANISMS),
        sasl_username=env_str("KAFKA_SASL_USERNAME", ""),
        sasl_password=env_str("KAFKA_SASL_PASSWORD", ""),
        ssl_ca_location=env_str("KAFKA_SSL_CA_LOCATION", ""),
        topic_prefix=env_str("KAFKA_TOPIC_PREFIX", "bank."),
        partitions=env_int("KAFKA_PARTITIONS", 6, minimum=1),
        replication_factor=env_int("KAFKA_REPLICATION_FACTOR", 1, minimum=1),
        command_timeout=env_float("KAFKA_COMMAND_TIMEOUT", 5.0),
        session_timeout_ms=env_int("KAFKA_SESSION_TIMEOUT_MS", 10_000, minimum=1000),
    )
    if not settings.bootstrap_servers:
        raise ImproperlyConfigured("KAFKA_BOOTSTRAP_SERVERS is empty: give host:port[,host:port]")
    if protocol.startswith("SASL") and not (settings.sasl_username and settings.sasl_password):
        raise ImproperlyConfigured(
            f"KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD are required with KAFKA_SECURITY_PROTOCOL={protocol}"
        )
    if settings.ssl_ca_location:
        _check_ca_file(settings.ssl_ca_location, protocol)
    return settings


def _check_ca_file(path: str, protocol: str) -> None:
    """A CA that is not used, or not a PEM certificate, would only show up as a handshake failure later."""
    if not protocol.endswith("SSL"):
        raise ImproperlyConfigured(
            f"KAFKA_SSL_CA_LOCATION is set but KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS (SSL or SASL_SSL)"
        )
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError:
        raise ImproperlyConfigured(f"KAFKA_SSL_CA_LOCATION={path!r} is not a readable file") from None
    if b"-----BEGIN CERTIFICATE-----" not in text:
        raise ImproperlyConfigured(
            f"KAFKA_SSL_CA_LOCATION={path!r} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        )
