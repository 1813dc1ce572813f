"""docker-compose.yml and .env.example agree with each other and with the variables the app reads (no services)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
KAFKA_NODES = ("kafka-1", "kafka-2", "kafka-3")
APP_SERVICES = ("migrate", "web", "processor", "projector")
ONE_SHOT = ("certs", "kafka-users", "kafka-acls", "migrate")  # set-up jobs the others wait for
PRINCIPALS = {"migrate": "operator", "web": "web", "processor": "processor", "projector": "projector"}
LONG_RUNNING = (*KAFKA_NODES, "postgres", "redis", "web", "processor", "projector")
REQUIRED_APP_ENV = ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "DJANGO_SECRET_KEY")
# Read by the workers' metrics server (the address /metrics binds), not through bank.config's registry.
WORKER_ONLY_ENV = {"WORKER_METRICS_HOST"}
OFFICIAL_IMAGES = {
    "KAFKA_IMAGE": "apache/kafka:4.1.1",
    "POSTGRES_IMAGE": "postgres:15",
    "REDIS_IMAGE": "redis:7",
    "PROMETHEUS_IMAGE": "prom/prometheus:v2.53.0",
    "GRAFANA_IMAGE": "grafana/grafana:11.1.0",
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def env_vars() -> dict[str, str]:
    settings.KAFKA  # noqa: B018 - importing the settings fills the registry
    from bank.config import ENV_VARS

    assert ENV_VARS, "bank.config.ENV_VARS is empty after loading the settings"
    return ENV_VARS


def with_defaults(text: str) -> str:
    """`text` as compose reads it when no variable is set: `${NAME:-default}` is the default."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", text)


def env(service: dict) -> dict[str, str]:
    """A service's environment as a dict of strings, whichever of the two compose forms it uses."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {key: str(value) for key, value in raw.items()}


def listener_ports(service: dict) -> dict[str, int]:
    """KAFKA_LISTENERS as {listener name: port}."""
    return {
        name: int(address.rsplit(":", 1)[1])
        for name, address in (item.split("://", 1) for item in env(service)["KAFKA_LISTENERS"].split(","))
    }


def exposed_ports(service: dict) -> set[int]:
    return {int(str(port).split("/")[0]) for port in service.get("expose", [])}


MONITORING = ("prometheus", "grafana")


def test_it_monitors_the_workers_and_the_web(services: dict) -> None:
    """Prometheus mounts the scrape config and alert rules of monitoring/, Grafana its provisioned dashboard,
    and the workers' health checks ask their /readyz."""
    volumes = " ".join(services["prometheus"]["volumes"])
    assert "./monitoring/prometheus.yml" in volumes and "./monitoring/alerts.yml" in volumes
    assert "./monitoring/grafana/dashboards" in " ".join(services["grafana"]["volumes"])
    for worker, port in (("processor", 9101), ("projector", 9102)):
        assert f"127.0.0.1:{port}/readyz" in " ".join(services[worker]["healthcheck"]["test"])
    scrape = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in scrape["scrape_configs"]}
    assert jobs == {"web": ["web:8000"], "processor": ["processor:9101"], "projector": ["projector:9102"]}


def test_it_parses_the_compose_file(compose: dict) -> None:
    assert isinstance(compose["services"], dict)
    assert set(compose.get("volumes") or {}) >= {"postgres-data", *(f"{node}-data" for node in KAFKA_NODES)}


def test_it_has_exactly_the_expected_services(services: dict) -> None:
    assert set(services) == {
        *KAFKA_NODES,
        "postgres",
        "redis",
        *APP_SERVICES,
        *MONITORING,
        "certs",
        "kafka-users",
        "kafka-acls",
    }


def test_it_runs_kafka_as_three_kraft_nodes_with_rf3_and_min_isr2(services: dict) -> None:
    nodes = {name: env(services[name]) for name in KAFKA_NODES}
    assert {services[name]["image"] for name in (*KAFKA_NODES, "kafka-users")} == {"${KAFKA_IMAGE:-apache/kafka:4.1.1}"}
    assert len({e["CLUSTER_ID"] for e in nodes.values()}) == 1
    assert sorted(e["KAFKA_NODE_ID"] for e in nodes.values()) == ["1", "2", "3"]
    for name, e in nodes.items():
        assert e["KAFKA_PROCESS_ROLES"] == "broker,controller", name
        for key in ("OFFSETS_TOPIC_REPLICATION_FACTOR", "TRANSACTION_STATE_LOG_REPLICATION_FACTOR"):
            assert e[f"KAFKA_{key}"] == "3", (name, key)
        assert e["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3", name
        assert e["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2", name
        assert e["KAFKA_MIN_INSYNC_REPLICAS"] == "2", name
        assert e["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", name
        voters = dict(voter.split("@") for voter in e["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(","))
        controller_port = listener_ports(services[name])[e["KAFKA_CONTROLLER_LISTENER_NAMES"]]
        assert voters == {nodes[n]["KAFKA_NODE_ID"]: f"{n}:{controller_port}" for n in KAFKA_NODES}, name


def test_it_only_sets_variables_the_app_knows(services: dict, env_vars: dict[str, str]) -> None:
    for name in APP_SERVICES:
        keys = set(env(services[name]))
        known = set(env_vars) | WORKER_ONLY_ENV
        assert keys <= known, f"{name}: unknown variables {sorted(keys - known)}"
        assert keys >= set(REQUIRED_APP_ENV), f"{name}: missing {sorted(set(REQUIRED_APP_ENV) - keys)}"
        assert env(services[name])["DJANGO_DEBUG"] == "false", name


def test_it_points_the_app_at_services_that_exist(services: dict) -> None:
    for name in APP_SERVICES:
        e = env(services[name])
        for key, host in (("DATABASE_URL", "postgres"), ("REDIS_URL", "redis")):
            url = urlsplit(e[key])
            assert url.hostname == host, (name, key)
            assert url.port in exposed_ports(services[url.hostname]), (name, key)
        brokers = [server.rsplit(":", 1) for server in e["KAFKA_BOOTSTRAP_SERVERS"].split(",")]
        assert sorted(host for host, _ in brokers) == sorted(KAFKA_NODES), name
        for host, port in brokers:
            broker = env(services[host])
            listener = next(n for n, p in listener_ports(services[host]).items() if p == int(port))
            protocols = dict(item.split(":") for item in broker["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
            assert protocols[listener] == "SASL_SSL", (name, host)
            assert f"{listener}://{host}:{port}" in broker["KAFKA_ADVERTISED_LISTENERS"].split(","), (name, host)
        assert e["KAFKA_REPLICATION_FACTOR"] == "3", name


def test_it_publishes_web_on_port_8000(services: dict) -> None:
    assert [with_defaults(port) for port in services["web"]["ports"]] == ["127.0.0.1:8000:8000"]


def test_every_image_is_the_official_one_unless_a_variable_says_otherwise(services: dict) -> None:
    images = {s["image"] for s in services.values() if "build" not in s}
    assert images == {f"${{{name}:-{image}}}" for name, image in OFFICIAL_IMAGES.items()}
    build = services["web"]["build"]
    assert build["args"]["PYTHON_IMAGE"] == "${PYTHON_IMAGE:-python:3.11-slim}"
    assert "ARG PYTHON_IMAGE=python:3.11-slim\nFROM ${PYTHON_IMAGE}\n" in (ROOT / "Dockerfile").read_text()


def test_it_gives_every_sasl_listener_a_login_module(services: dict) -> None:
    """Without a JAAS entry per SASL_SSL listener the brokers stop at start-up ("Could not find a 'KafkaServer' or
    'client.KafkaServer' entry in the JAAS configuration"). The image maps KAFKA_A_B to a.b, _ to __, - to ___."""
    for name in KAFKA_NODES:
        e = env(services[name])
        protocols = dict(item.split(":") for item in e["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
        for listener in (n for n, protocol in protocols.items() if protocol == "SASL_SSL"):
            for mechanism in e["KAFKA_SASL_ENABLED_MECHANISMS"].split(","):
                key = f"KAFKA_LISTENER_NAME_{listener}_{mechanism.replace('-', '___')}_SASL_JAAS_CONFIG"
                assert e.get(key, "").startswith("org.apache.kafka.common.security.scram.ScramLoginModule required"), (
                    name,
                    key,
                )


def test_it_advertises_the_external_listener_on_the_published_port(services: dict) -> None:
    for name in KAFKA_NODES:
        (published,) = services[name]["ports"]
        host_port, container_port = re.fullmatch(
            r"\$\{BIND_ADDRESS:-127.0.0.1\}:(\$\{\w+:-\d+\}):(\d+)", published
        ).groups()
        external = dict(item.split("://") for item in env(services[name])["KAFKA_ADVERTISED_LISTENERS"].split(","))[
            "EXTERNAL"
        ]
        assert external == f"localhost:{host_port}", name  # the same variable on both sides
        assert int(container_port) == listener_ports(services[name])["EXTERNAL"], name


def test_it_starts_the_app_after_healthy_services_and_migrations(services: dict) -> None:
    for name in APP_SERVICES:
        depends = services[name]["depends_on"]
        for dependency, spec in depends.items():
            if dependency in ONE_SHOT:
                assert spec["condition"] == "service_completed_successfully", name
            else:
                assert spec["condition"] == "service_healthy", (name, dependency)
                assert "healthcheck" in services[dependency], dependency
        assert set(depends) >= {*KAFKA_NODES, "postgres", "redis"}, name
        assert ("migrate" in depends) == (name != "migrate"), name


def test_it_checks_health_of_every_long_running_service(services: dict) -> None:
    for name in LONG_RUNNING:
        service = services[name]
        healthy_deps = [
            d for d, spec in (service.get("depends_on") or {}).items() if spec["condition"] != "service_started"
        ]
        assert "healthcheck" in service or healthy_deps, name
        assert service.get("restart") == "unless-stopped", name


def test_it_lists_every_variable_in_env_example(env_vars: dict[str, str]) -> None:
    lines = (ROOT / ".env.example").read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    keys = [key.strip() for key, _ in pairs]
    assert len(keys) == len(set(keys)), "duplicate keys in .env.example"
    assert set(keys) == set(env_vars)
    assert {key.strip(): value.strip() for key, value in pairs} == env_vars, ".env.example shows a stale default"


def test_it_runs_each_service_as_its_own_principal_over_sasl_ssl(services: dict) -> None:
    for name, principal in PRINCIPALS.items():
        e = env(services[name])
        assert e["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL", name
        assert e["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512", name
        assert e["KAFKA_SASL_USERNAME"] == principal, name
        # The secret comes from the environment, never from the file.
        assert e["KAFKA_SASL_PASSWORD"].startswith(f"${{KAFKA_{principal.upper()}_PASSWORD:?"), name
        assert e["KAFKA_SSL_CA_LOCATION"] == "/certs/ca.pem", name


def test_it_secures_every_kafka_listener(services: dict) -> None:
    for name in KAFKA_NODES:
        e = env(services[name])
        protocols = dict(item.split(":") for item in e["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
        assert set(protocols.values()) <= {"SSL", "SASL_SSL"}, name
        assert set(listener_ports(services[name])) == set(protocols), name
        assert e["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer"), name
        assert e["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false", name
