"""Least-privilege ACLs: one Kafka principal per service, allowed exactly what that service does.

| principal | allowed |
|---|---|
| web | WRITE `<prefix>commands` (the command bus; idempotence needs no cluster ACL since Kafka 3.0, KIP-679) |
| processor | READ `<prefix>commands`, group `<group>-processor`; READ+WRITE `<prefix>events` and `<prefix>account-state`; WRITE `<prefix>commands` (transfer steps) and `<prefix>deadletters`; transactional ids `<group>-processor-*` |
| projector | READ `<prefix>events`, group `<group>-projector`; WRITE `<prefix>deadletters` |
| operator | READ, DESCRIBE, DESCRIBE_CONFIGS, CREATE on topics `<prefix>*`; DESCRIBE the worker groups (lag); WRITE `<prefix>commands` (re-queue) |

Every reader also gets READ on group `bank-reader`, the group id of the group-less readers
(`bank.kafka.reader`) that rebuild state and replay. Nobody but the processor may write
`<prefix>events`: a foreign record cannot enter the event log.

`python -m devservices acls` applies them to the configured cluster with an admin principal
(the brokers' super user locally; on Amazon MSK, a SCRAM user that may alter ACLs).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from bank.config import KafkaSettings

T = TypeVar("T")
READER_GROUP = "bank-reader"  # bank.kafka.reader's group id, never used to commit


def service_acls(kafka: KafkaSettings) -> dict[str, list[AclBinding]]:
    """The bindings of each service's principal (User:<service>), for the topic prefix of `kafka`."""
    literal, prefixed = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED

    def allow(
        user: str, kind: ResourceType, name: str, op: AclOperation, pattern: ResourcePatternType = literal
    ) -> AclBinding:
        return AclBinding(kind, name, pattern, f"User:{user}", "*", op, AclPermissionType.ALLOW)

    topic, group, txn = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID
    R, W, D = AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE
    commands, events, deadletters = kafka.commands_topic, kafka.events_topic, kafka.deadletters_topic
    state = kafka.topic("account-state")
    processor_group, projector_group = kafka.group("processor"), kafka.group("projector")
    return {
        "web": [allow("web", topic, commands, W)],
        "processor": [
            allow("processor", topic, commands, R),
            allow("processor", topic, commands, W),
            allow("processor", topic, events, R),
            allow("processor", topic, events, W),
            allow("processor", topic, state, R),
            allow("processor", topic, state, W),
            allow("processor", topic, deadletters, W),
            allow("processor", group, processor_group, R),
            allow("processor", group, READER_GROUP, R),
            # transactional.id = <group>-<instance>: any instance, no other producer's.
            allow("processor", txn, f"{processor_group}-", W, prefixed),
            allow("processor", txn, f"{processor_group}-", D, prefixed),
        ],
        "projector": [
            allow("projector", topic, events, R),
            allow("projector", topic, deadletters, W),
            allow("projector", group, projector_group, R),
            allow("projector", group, READER_GROUP, R),
        ],
        "operator": [
            allow("operator", topic, kafka.topic_prefix, R, prefixed),
            allow("operator", topic, kafka.topic_prefix, D, prefixed),
            allow("operator", topic, kafka.topic_prefix, AclOperation.DESCRIBE_CONFIGS, prefixed),
            allow("operator", topic, kafka.topic_prefix, AclOperation.CREATE, prefixed),
            allow("operator", topic, commands, W),
            allow("operator", group, processor_group, D),
            allow("operator", group, projector_group, D),
            allow("operator", group, READER_GROUP, R),
        ],
    }


def apply(admin: AdminClient, kafka: KafkaSettings, timeout: float = 30.0) -> int:
    """Create the bindings (idempotent: the broker keeps one of each). Returns how many were asked for."""
    bindings = [binding for group in service_acls(kafka).values() for binding in group]
    for binding, future in admin.create_acls(bindings, request_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as error:
            raise KafkaException(error.args[0]) from RuntimeError(f"creating {binding}")
    return len(bindings)


def retry_until_enforced(call: Callable[[], T], timeout: float = 30.0) -> T:
    """`call()` again while it is refused for authorization: the controller confirms new ACLs before every
    broker has read them from the metadata log, so an action right after `apply` can still be refused."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except KafkaException as error:
            refused = error.args[0].code() in (
                KafkaError.TOPIC_AUTHORIZATION_FAILED,
                KafkaError.GROUP_AUTHORIZATION_FAILED,
            )
            if not refused or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
