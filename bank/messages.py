"""The wire format: one spec per message type, and versioned JSON envelopes that are validated as they are decoded.

A `Spec` names a domain dataclass and says everything the wire needs about it: its current
version, the constraints of its fields on the wire, its older versions with their upcasters,
and its human label. `COMMANDS` and `EVENTS` are the registries; everything else here (the
decoders, the rejected-command enum, the JSON schemas for the docs, the labels the web shows)
is derived from them. Adding an event type is one `Spec` line in `EVENTS`.

Decoding is msgspec's: one pass over the bytes checks the envelope (a Struct that forbids
unknown fields, with UUIDs, times and bounds) and keeps `data` as raw JSON; the decoder of
that (type, version) then checks `data` into a Struct and the domain's dataclass is built from
it. An older event version is checked against its own fields and upcast, so the domain only ever
sees the newest. Anything that cannot be decoded raises `PoisonMessage`: it is permanent, and
the consumer dead-letters it and moves on. Encoding writes the same JSON as before (orjson,
fixed key order, times as ...Z with microseconds) and decodes it once more before it is
produced, so nothing is written that a consumer would refuse.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar, get_type_hints
from uuid import UUID

import msgspec
import orjson
from msgspec import Meta

from bank import domain

CONTENT_TYPE = "application/json"

Headers = list[tuple[str, str | bytes | None]]


class PoisonMessage(ValueError):
    """A message that can never be decoded or applied (bad JSON, unknown type, invalid field)."""


# --- wire types: what a field must be on the wire, whatever the domain's plain annotation allows ---

# Integers a PostgreSQL bigint holds: the default for every `int` the domain declares.
Int64 = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
Positive = Annotated[int, Meta(ge=1, le=2**63 - 1)]
Amount = Annotated[int, Meta(ge=1, le=2**53)]
Balance = Annotated[int, Meta(ge=0, le=2**53)]
# A command's amount is only bounded here: zero or negative is the domain's rejection, not poison.
CommandAmount = Annotated[int, Meta(ge=-(2**53), le=2**53)]
NonEmpty = Annotated[str, Meta(min_length=1)]
Name = Annotated[str, Meta(min_length=1, max_length=domain.MAX_NAME_LENGTH)]
Currency = Annotated[str, Meta(pattern="^[A-Z]{3}$")]
Time = Annotated[datetime, Meta(tz=True)]  # RFC 3339 with an offset; a time without one is poison

_DEFAULT_WIRE_TYPES: dict[Any, Any] = {int: Int64, int | None: Int64 | None}


# --- specs ---


@dataclass(frozen=True)
class Older:
    """An older version of a message: its fields on the wire, and how its data becomes the next version's."""

    version: int
    fields: Mapping[str, Any]
    upcast: Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Spec:
    """One message type: the domain dataclass, its current version, wire constraints, older versions, label.

    `fields` tightens the dataclass's annotations for the wire (bounds, lengths, patterns); a field
    not named there keeps its annotation, with `int` bounded to a bigint.
    """

    cls: type
    label: str
    version: int = 1
    fields: Mapping[str, Any] = field(default_factory=dict)
    older: tuple[Older, ...] = ()

    @property
    def name(self) -> str:
        return self.cls.__name__


def _registry(*specs: Spec) -> dict[str, Spec]:
    registry = {spec.name: spec for spec in specs}
    if len(registry) != len(specs):
        raise TypeError("two specs for one message type")
    return registry


COMMANDS = _registry(
    # Only types and sizes here: a blank name, a foreign currency or a zero amount is a business
    # rejection (an event in the history), not a poison message.
    Spec(domain.OpenAccount, "Open account", fields={"owner": NonEmpty}),
    Spec(domain.Deposit, "Deposit", fields={"amount": CommandAmount}),
    Spec(domain.Withdraw, "Withdraw", fields={"amount": CommandAmount}),
    Spec(domain.CloseAccount, "Close account"),
    Spec(domain.ReleaseAccount, "Release account"),
    Spec(domain.TransferMoney, "Transfer", fields={"amount": CommandAmount}),
    # The saga's steps, produced by the processor: the destination checks the currency (a refusal, not poison).
    Spec(domain.CreditTransfer, "Credit transfer", fields={"amount": CommandAmount}),
    Spec(domain.CompleteTransfer, "Complete transfer"),
    Spec(domain.RefundTransfer, "Refund transfer"),
)

EVENTS = _registry(
    Spec(
        domain.AccountOpened,
        "Opened",
        version=2,
        fields={"owner": NonEmpty, "name": Name, "currency": Currency},
        # v1 had no currency: every account was in euros.
        older=(Older(1, {"owner": NonEmpty, "name": Name}, lambda data: {**data, "currency": "EUR"}),),
    ),
    Spec(domain.MoneyDeposited, "Deposit", fields={"amount": Amount, "balance": Balance}),
    Spec(domain.MoneyWithdrawn, "Withdrawal", fields={"amount": Amount, "balance": Balance}),
    Spec(domain.AccountClosed, "Closed"),
    Spec(domain.AccountReleased, "Released"),
    Spec(
        domain.CommandRejected,
        "Rejected",
        # The rejected command is one the code knows: the enum follows COMMANDS.
        fields={"command": Literal[tuple(COMMANDS)]},
    ),
    Spec(
        domain.TransferDebited,
        "Transfer sent",
        fields={"amount": Amount, "currency": Currency, "balance": Balance},
    ),
    Spec(
        domain.TransferCredited,
        "Transfer received",
        fields={"amount": Amount, "currency": Currency, "balance": Balance},
    ),
    Spec(domain.TransferRefused, "Transfer refused", fields={"amount": Amount, "currency": Currency}),
    Spec(domain.TransferCompleted, "Transfer completed", fields={"amount": Amount, "currency": Currency}),
    Spec(
        domain.TransferRefunded,
        "Transfer refunded",
        fields={"amount": Amount, "currency": Currency, "balance": Balance},
    ),
)


# --- envelopes ---
# Structs rather than dataclasses: a decoder builds one per message, and a frozen dataclass's
# __init__ (object.__setattr__ per field) was a third of the old decoder's time.


class CommandEnvelope(msgspec.Struct, frozen=True):
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
        data = {k: v for k, v in vars(self.command).items() if k != "account_id"}
        return {
            "command_id": str(self.command_id),
            "type": self.type,
            "version": _spec(COMMANDS, self.type).version,
            "account_id": str(self.account_id),
            "actor": self.actor,
            "issued_at": format_time(self.issued_at),
            "data": data,
        }


class EventEnvelope(msgspec.Struct, frozen=True):
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
            "version": _spec(EVENTS, self.type).version,
            "account_id": str(self.account_id),
            "sequence": self.sequence,
            "occurred_at": format_time(self.occurred_at),
            "command_id": str(self.command_id),
            "actor": self.actor,
            "data": dict(vars(self.event)),
        }


def _spec(registry: dict[str, Spec], name: str) -> Spec:
    try:
        return registry[name]
    except KeyError:
        raise ValueError(f"refusing to produce an invalid {name}: no spec for this message type") from None


# The envelopes as they are on the wire; `data` stays raw JSON for the decoder of its (type, version).


class _CommandWire(msgspec.Struct, forbid_unknown_fields=True):
    command_id: UUID
    type: str
    version: Positive
    account_id: UUID
    actor: NonEmpty
    issued_at: Time
    data: msgspec.Raw


class _EventWire(msgspec.Struct, forbid_unknown_fields=True):
    event_id: UUID
    type: str
    version: Positive
    account_id: UUID
    sequence: Positive
    occurred_at: Time
    command_id: UUID
    actor: NonEmpty
    data: msgspec.Raw


_command_wire = msgspec.json.Decoder(_CommandWire)
_event_wire = msgspec.json.Decoder(_EventWire)


# --- the decoders, derived from the specs ---


def data_struct(spec: Spec, version: int | None = None) -> type[msgspec.Struct]:
    """The Struct that `data` of this spec's `version` (default: the current one) must decode into."""
    version = spec.version if version is None else version
    name = f"{spec.name}V{version}"
    if version != spec.version:
        [older] = [o for o in spec.older if o.version == version]
        return msgspec.defstruct(name, list(older.fields.items()), forbid_unknown_fields=True, frozen=True)
    hints = get_type_hints(spec.cls)
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for f in dataclasses.fields(spec.cls):
        if f.name == "account_id" and spec.name in COMMANDS:
            continue  # in the envelope, not in data
        wire = spec.fields.get(f.name, _DEFAULT_WIRE_TYPES.get(hints[f.name], hints[f.name]))
        fields.append((f.name, wire) if f.default is dataclasses.MISSING else (f.name, wire, f.default))
    return msgspec.defstruct(name, fields, forbid_unknown_fields=True, frozen=True)


def upcast(message_type: str, version: int, data: dict[str, Any]) -> dict[str, Any]:
    """Bring `data` of an older event version up to the current one, step by step."""
    upcasters = {older.version: older.upcast for older in EVENTS[message_type].older}
    while version < EVENTS[message_type].version:
        data = upcasters[version](data)
        version += 1
    return data


Reader = Callable[[msgspec.Raw], Any]


def _event_reader(spec: Spec, version: int) -> Reader:
    """raw `data` of (spec, version) → the domain event, checked (and upcast) on the way."""
    current = data_struct(spec)
    cls, astuple = spec.cls, msgspec.structs.astuple
    if version == spec.version:
        decode = msgspec.json.Decoder(current).decode
        return lambda raw: cls(*astuple(decode(raw)))
    decode_older = msgspec.json.Decoder(data_struct(spec, version)).decode
    asdict, convert, name = msgspec.structs.asdict, msgspec.convert, spec.name
    return lambda raw: cls(*astuple(convert(upcast(name, version, asdict(decode_older(raw))), current)))


def _command_reader(spec: Spec) -> Callable[[UUID, msgspec.Raw], Any]:
    names = [f.name for f in dataclasses.fields(spec.cls)]
    if names[:1] != ["account_id"]:
        raise TypeError(f"{spec.name}: a command's first field is its account_id")
    decode, cls, astuple = msgspec.json.Decoder(data_struct(spec)).decode, spec.cls, msgspec.structs.astuple
    return lambda account_id, raw: cls(account_id, *astuple(decode(raw)))


_event_readers: dict[tuple[str, int], Reader] = {
    (spec.name, version): _event_reader(spec, version)
    for spec in EVENTS.values()
    for version in (spec.version, *(older.version for older in spec.older))
}
_command_readers = {spec.name: _command_reader(spec) for spec in COMMANDS.values()}


def now() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def headers_for(message_type: str, version: int) -> Headers:
    return [
        ("type", message_type.encode()),
        ("version", str(version).encode()),
        ("content-type", CONTENT_TYPE.encode()),
    ]


def encode(envelope: CommandEnvelope | EventEnvelope) -> tuple[bytes, bytes, Headers]:
    """(key, value, headers) for Kafka, checked by the consumers' own decoder on the way out."""
    body = envelope.to_dict()
    value = orjson.dumps(body)
    decode: Callable[[bytes], Any] = decode_command if isinstance(envelope, CommandEnvelope) else decode_event
    try:
        decode(value)
    except PoisonMessage as error:
        # Producing an invalid message is a programming error, not poison: fail loudly here.
        raise ValueError(f"refusing to produce an invalid {body['type']}: {error}") from error
    return str(envelope.account_id).encode(), value, headers_for(body["type"], body["version"])


W = TypeVar("W")


def _envelope(value: bytes | None, decoder: msgspec.json.Decoder[W]) -> W:
    if value is None:
        raise PoisonMessage("empty message (tombstone)")
    try:
        return decoder.decode(value)
    except msgspec.ValidationError as error:
        raise PoisonMessage(f"bad envelope: {error}") from None
    except ValueError as error:  # msgspec.DecodeError, or UnicodeDecodeError for bytes that are not UTF-8
        raise PoisonMessage(f"not JSON: {error}") from None


def decode_command(value: bytes | None) -> CommandEnvelope:
    wire = _envelope(value, _command_wire)
    read = _command_readers.get(wire.type)
    if read is None:
        raise PoisonMessage(f"unknown message type {wire.type} v{wire.version}")
    if wire.version != COMMANDS[wire.type].version:
        raise PoisonMessage(f"{wire.type} v{wire.version} is not the current command version")
    try:
        command = read(wire.account_id, wire.data)
    except ValueError as error:
        raise PoisonMessage(f"{wire.type} v{wire.version}: {error}") from None
    return CommandEnvelope(command, wire.command_id, wire.actor, wire.issued_at)


def decode_event(value: bytes | None) -> EventEnvelope:
    wire = _envelope(value, _event_wire)
    read = _event_readers.get((wire.type, wire.version))
    if read is None:
        spec = EVENTS.get(wire.type)
        if spec is not None and wire.version > spec.version:
            raise PoisonMessage(f"{wire.type} v{wire.version} is newer than this code (v{spec.version})")
        raise PoisonMessage(f"unknown message type {wire.type} v{wire.version}")
    try:
        event = read(wire.data)
    except ValueError as error:
        raise PoisonMessage(f"{wire.type} v{wire.version}: {error}") from None
    return EventEnvelope(
        event, wire.event_id, wire.account_id, wire.sequence, wire.occurred_at, wire.command_id, wire.actor
    )


# --- JSON schemas, for the docs ---


def json_schemas() -> dict[str, dict[str, Any]]:
    """A JSON schema per message type and version ("events/AccountOpened.v1"), derived from the specs."""
    schemas = {}
    for kind, registry, wire in (("commands", COMMANDS, _CommandWire), ("events", EVENTS, _EventWire)):
        for spec in registry.values():
            for version in sorted((spec.version, *(o.version for o in spec.older))):
                envelope = msgspec.defstruct(
                    f"{spec.name}V{version}Envelope",
                    [
                        (f.name, {"type": Literal[spec.name], "version": Literal[version]}.get(f.name, f.type))
                        for f in msgspec.structs.fields(wire)
                        if f.name != "data"
                    ]
                    + [("data", data_struct(spec, version))],
                    forbid_unknown_fields=True,
                )
                schemas[f"{kind}/{spec.name}.v{version}"] = msgspec.json.schema(envelope)
    return schemas


def named_account(key: bytes | None, value: bytes | None) -> UUID | None:
    """The account a record names, even a record that decodes to nothing: its key, else the `account_id` of its
    JSON body, else None. The processor's quarantine and the projector's parking both ask this one function, so
    they always hold the same account responsible for the same bad record."""
    candidates: list[object] = [(key or b"").decode("utf-8", "replace")]
    try:
        body = orjson.loads(value or b"")
        if isinstance(body, dict):
            candidates.append(body.get("account_id"))
    except orjson.JSONDecodeError:
        pass
    for candidate in candidates:
        if isinstance(candidate, str):
            try:
                return UUID(candidate)
            except ValueError:
                continue
    return None
