"""The wire format: versioned JSON envelopes for commands and events.

Every (type, version) has a JSON schema. Messages are validated when produced and
when consumed; an older event version is upcast on read, so the domain only ever
sees the newest. Anything that cannot be decoded raises `PoisonMessage`: it is
permanent, and the consumer dead-letters it and moves on.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import fastjsonschema
import orjson

from bank import domain

CONTENT_TYPE = "application/json"

Headers = list[tuple[str, str | bytes | None]]


class PoisonMessage(ValueError):
    """A message that can never be decoded or applied (bad JSON, unknown type, schema failure)."""


# --- schemas ---

_UUID = {"type": "string", "format": "uuid"}
_AMOUNT = {"type": "integer", "minimum": 1, "maximum": 2**53}
_BALANCE = {"type": "integer", "minimum": 0, "maximum": 2**53}
_CURRENCY = {"type": "string", "pattern": "^[A-Z]{3}$"}
_REASON = {"enum": [r.value for r in domain.Reason]}
_OWNER_NAME_CURRENCY = {
    "owner": {"type": "string", "minLength": 1},
    "name": {"type": "string", "minLength": 1, "maxLength": domain.MAX_NAME_LENGTH},
    "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
}


def _object(properties: dict[str, Any], required: Iterable[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties if required is None else required),
        "additionalProperties": False,
    }


COMMAND_DATA_SCHEMAS: dict[tuple[str, int], dict[str, Any]] = {
    # Only types here: a blank name, a foreign currency or a zero amount is a business
    # rejection (an event in the history), not a poison message.
    ("OpenAccount", 1): _object(
        {"owner": {"type": "string", "minLength": 1}, "name": {"type": "string"}, "currency": {"type": "string"}}
    ),
    ("Deposit", 1): _object({"amount": {"type": "integer", "maximum": 2**53}}),
    ("Withdraw", 1): _object({"amount": {"type": "integer", "maximum": 2**53}}),
    ("CloseAccount", 1): _object({}),
    ("TransferMoney", 1): _object(
        {"transfer_id": _UUID, "to_account": _UUID, "amount": {"type": "integer", "maximum": 2**53}}
    ),
    ("CreditTransfer", 1): _object(
        {
            "transfer_id": _UUID,
            "from_account": _UUID,
            "amount": {"type": "integer", "maximum": 2**53},
            "currency": {"type": "string"},
        }
    ),
    ("CompleteTransfer", 1): _object({"transfer_id": _UUID}),
    ("RefundTransfer", 1): _object({"transfer_id": _UUID, "reason": {"enum": [r.value for r in domain.Reason]}}),
}

EVENT_DATA_SCHEMAS: dict[tuple[str, int], dict[str, Any]] = {
    # v1 had no currency: every account was in euros. v2 names it.
    ("AccountOpened", 1): _object({k: v for k, v in _OWNER_NAME_CURRENCY.items() if k != "currency"}),
    ("AccountOpened", 2): _object(_OWNER_NAME_CURRENCY),
    ("MoneyDeposited", 1): _object({"amount": _AMOUNT, "balance": _BALANCE}),
    ("MoneyWithdrawn", 1): _object({"amount": _AMOUNT, "balance": _BALANCE}),
    ("AccountClosed", 1): _object({}),
    ("CommandRejected", 1): _object(
        {
            "command": {"enum": [name for name, _ in COMMAND_DATA_SCHEMAS]},
            "reason": {"enum": [r.value for r in domain.Reason]},
            "amount": {"type": ["integer", "null"]},
        },
        required=["command", "reason"],
    ),
    ("TransferDebited", 1): _object(
        {"transfer_id": _UUID, "to_account": _UUID, "amount": _AMOUNT, "currency": _CURRENCY, "balance": _BALANCE}
    ),
    ("TransferCredited", 1): _object(
        {"transfer_id": _UUID, "from_account": _UUID, "amount": _AMOUNT, "currency": _CURRENCY, "balance": _BALANCE}
    ),
    ("TransferRefused", 1): _object(
        {"transfer_id": _UUID, "from_account": _UUID, "amount": _AMOUNT, "currency": _CURRENCY, "reason": _REASON}
    ),
    ("TransferCompleted", 1): _object(
        {"transfer_id": _UUID, "to_account": _UUID, "amount": _AMOUNT, "currency": _CURRENCY}
    ),
    ("TransferRefunded", 1): _object(
        {
            "transfer_id": _UUID,
            "to_account": _UUID,
            "amount": _AMOUNT,
            "currency": _CURRENCY,
            "reason": _REASON,
            "balance": _BALANCE,
        }
    ),
}

_ENVELOPE_COMMON = {
    "type": {"type": "string"},
    "version": {"type": "integer", "minimum": 1},
    "account_id": _UUID,
    "actor": {"type": "string", "minLength": 1},
    "command_id": _UUID,
    "data": {"type": "object"},
}
COMMAND_ENVELOPE_SCHEMA = _object(_ENVELOPE_COMMON | {"issued_at": {"type": "string", "format": "date-time"}})
EVENT_ENVELOPE_SCHEMA = _object(
    _ENVELOPE_COMMON
    | {
        "event_id": _UUID,
        "sequence": {"type": "integer", "minimum": 1},
        "occurred_at": {"type": "string", "format": "date-time"},
    }
)

Validator = Callable[[Any], Any]


def _compile(schemas: dict[tuple[str, int], dict[str, Any]]) -> dict[tuple[str, int], Validator]:
    return {key: fastjsonschema.compile(schema) for key, schema in schemas.items()}


_command_data = _compile(COMMAND_DATA_SCHEMAS)
_event_data = _compile(EVENT_DATA_SCHEMAS)
_command_envelope = fastjsonschema.compile(COMMAND_ENVELOPE_SCHEMA)
_event_envelope = fastjsonschema.compile(EVENT_ENVELOPE_SCHEMA)

COMMAND_VERSIONS = {
    "OpenAccount": 1,
    "Deposit": 1,
    "Withdraw": 1,
    "CloseAccount": 1,
    "TransferMoney": 1,
    "CreditTransfer": 1,
    "CompleteTransfer": 1,
    "RefundTransfer": 1,
}
EVENT_VERSIONS = {
    "AccountOpened": 2,
    "MoneyDeposited": 1,
    "MoneyWithdrawn": 1,
    "AccountClosed": 1,
    "CommandRejected": 1,
    "TransferDebited": 1,
    "TransferCredited": 1,
    "TransferRefused": 1,
    "TransferCompleted": 1,
    "TransferRefunded": 1,
}

# (type, version) -> function from that version's data to the next version's data.
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("AccountOpened", 1): lambda data: {**data, "currency": "EUR"},
}

COMMAND_TYPES: dict[str, type[domain.Command]] = {
    "OpenAccount": domain.OpenAccount,
    "Deposit": domain.Deposit,
    "Withdraw": domain.Withdraw,
    "CloseAccount": domain.CloseAccount,
    "TransferMoney": domain.TransferMoney,
    "CreditTransfer": domain.CreditTransfer,
    "CompleteTransfer": domain.CompleteTransfer,
    "RefundTransfer": domain.RefundTransfer,
}
EVENT_TYPES: dict[str, type[domain.Event]] = {
    "AccountOpened": domain.AccountOpened,
    "MoneyDeposited": domain.MoneyDeposited,
    "MoneyWithdrawn": domain.MoneyWithdrawn,
    "AccountClosed": domain.AccountClosed,
    "CommandRejected": domain.CommandRejected,
    "TransferDebited": domain.TransferDebited,
    "TransferCredited": domain.TransferCredited,
    "TransferRefused": domain.TransferRefused,
    "TransferCompleted": domain.TransferCompleted,
    "TransferRefunded": domain.TransferRefunded,
}

# Fields that travel as text and are typed in the domain: ids of transfers and counterparties, reasons.
_TYPED_FIELDS: dict[str, type] = {
    "transfer_id": UUID,
    "to_account": UUID,
    "from_account": UUID,
    "reason": domain.Reason,
}


def _typed(data: dict[str, Any]) -> dict[str, Any]:
    if not _TYPED_FIELDS.keys() & data.keys():
        return data  # deposits and withdrawals: the hot path stays as it was
    return {k: _TYPED_FIELDS[k](v) if k in _TYPED_FIELDS else v for k, v in data.items()}


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    # The schemas see what goes on the wire: UUIDs as text.
    return {k: str(v) if isinstance(v, UUID) else v for k, v in values.items()}


def now() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    # The schema's date-time is looser than fromisoformat (leap seconds, lowercase t/z).
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise PoisonMessage(f"unreadable time {text!r}") from None


# --- envelopes ---


@dataclass(frozen=True)
class CommandEnvelope:
    command: domain.Command
    command_id: UUID
    actor: str
    issued_at: datetime

    @classmethod
    def new(cls, command: domain.Command, actor: str, command_id: UUID | None = None) -> CommandEnvelope:
        return cls(command, command_id or uuid.uuid4(), actor, now())

    @property
    def type(self) -> str:
        return type(self.command).__name__

    @property
    def account_id(self) -> UUID:
        return self.command.account_id

    def to_dict(self) -> dict[str, Any]:
        # vars(), not dataclasses.asdict: the fields are flat, and asdict's deep copy is the slow part of encoding.
        data = _plain({k: v for k, v in vars(self.command).items() if k != "account_id"})
        return {
            "command_id": str(self.command_id),
            "type": self.type,
            "version": COMMAND_VERSIONS[self.type],
            "account_id": str(self.account_id),
            "actor": self.actor,
            "issued_at": format_time(self.issued_at),
            "data": data,
        }


@dataclass(frozen=True)
class EventEnvelope:
    event: domain.Event
    event_id: UUID
    account_id: UUID
    sequence: int
    occurred_at: datetime
    command_id: UUID
    actor: str

    @property
    def type(self) -> str:
        return type(self.event).__name__

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": str(self.event_id),
            "type": self.type,
            "version": EVENT_VERSIONS[self.type],
            "account_id": str(self.account_id),
            "sequence": self.sequence,
            "occurred_at": format_time(self.occurred_at),
            "command_id": str(self.command_id),
            "actor": self.actor,
            "data": _plain(vars(self.event)),
        }


def headers_for(message_type: str, version: int) -> Headers:
    return [
        ("type", message_type.encode()),
        ("version", str(version).encode()),
        ("content-type", CONTENT_TYPE.encode()),
    ]


def encode(envelope: CommandEnvelope | EventEnvelope) -> tuple[bytes, bytes, Headers]:
    """(key, value, headers) for Kafka, validated against the schema on the way out."""
    body = envelope.to_dict()
    is_command = isinstance(envelope, CommandEnvelope)
    try:
        (_command_envelope if is_command else _event_envelope)(body)
        (_command_data if is_command else _event_data)[(body["type"], body["version"])](body["data"])
    except fastjsonschema.JsonSchemaException as error:
        # Producing an invalid message is a programming error, not poison: fail loudly here.
        raise ValueError(f"refusing to produce an invalid {body['type']}: {error}") from error
    return str(envelope.account_id).encode(), orjson.dumps(body), headers_for(body["type"], body["version"])


def _load(value: bytes | None, envelope_validator: Validator) -> dict[str, Any]:
    if value is None:
        raise PoisonMessage("empty message (tombstone)")
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError as error:
        raise PoisonMessage(f"not JSON: {error}") from None
    try:
        envelope_validator(body)
    except fastjsonschema.JsonSchemaException as error:
        raise PoisonMessage(f"bad envelope: {error}") from None
    return body  # type: ignore[no-any-return]


def _data(body: dict[str, Any], validators: dict[tuple[str, int], Validator]) -> dict[str, Any]:
    key = (body["type"], body["version"])
    validator = validators.get(key)
    if validator is None:
        raise PoisonMessage(f"unknown message type {body['type']} v{body['version']}")
    try:
        validator(body["data"])
    except fastjsonschema.JsonSchemaException as error:
        raise PoisonMessage(f"{body['type']} v{body['version']}: {error}") from None
    return body["data"]  # type: ignore[no-any-return]


def decode_command(value: bytes | None) -> CommandEnvelope:
    body = _load(value, _command_envelope)
    data = _data(body, _command_data)
    if body["version"] != COMMAND_VERSIONS[body["type"]]:
        raise PoisonMessage(f"{body['type']} v{body['version']} is not the current command version")
    account_id = UUID(body["account_id"])
    command = COMMAND_TYPES[body["type"]](account_id=account_id, **_typed(data))
    return CommandEnvelope(command, UUID(body["command_id"]), body["actor"], parse_time(body["issued_at"]))


def upcast(message_type: str, version: int, data: dict[str, Any]) -> dict[str, Any]:
    """Bring `data` of an older event version up to the current one, step by step."""
    while version < EVENT_VERSIONS[message_type]:
        data = UPCASTERS[(message_type, version)](data)
        version += 1
    return data


def decode_event_body(value: bytes | None) -> dict[str, Any]:
    """The validated, upcast event envelope as a dict (the projector's fast path)."""
    body = _load(value, _event_envelope)
    data = _data(body, _event_data)
    current = EVENT_VERSIONS[body["type"]]
    if body["version"] > current:
        raise PoisonMessage(f"{body['type']} v{body['version']} is newer than this code (v{current})")
    if body["version"] < current:
        body["data"] = upcast(body["type"], body["version"], data)
        body["version"] = current
    return body


def event_from_body(body: dict[str, Any]) -> EventEnvelope:
    return EventEnvelope(
        event=EVENT_TYPES[body["type"]](**_typed(body["data"])),
        event_id=UUID(body["event_id"]),
        account_id=UUID(body["account_id"]),
        sequence=body["sequence"],
        occurred_at=parse_time(body["occurred_at"]),
        command_id=UUID(body["command_id"]),
        actor=body["actor"],
    )


def decode_event(value: bytes | None) -> EventEnvelope:
    return event_from_body(decode_event_body(value))
