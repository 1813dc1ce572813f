"""The wire format, checked without a broker: specs, envelopes, headers, schemas, upcasting, poison."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bank import domain, messages
from bank.domain import (
    AccountClosed,
    AccountOpened,
    AccountReleased,
    CloseAccount,
    CommandRejected,
    Deposit,
    MoneyDeposited,
    MoneyWithdrawn,
    OpenAccount,
    Reason,
    ReleaseAccount,
    Withdraw,
)
from bank.messages import (
    CommandEnvelope,
    EventEnvelope,
    PoisonMessage,
    decode_command,
    decode_event,
    encode,
    upcast,
)

ACCOUNT_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
COMMAND_ID = uuid.UUID("00000000-0000-4000-8000-000000000002")
EVENT_ID = uuid.UUID("00000000-0000-4000-8000-000000000003")
MOMENT = datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
SCHEMAS = Path(__file__).resolve().parent.parent / "docs" / "schemas"

COMMANDS = [
    OpenAccount(ACCOUNT_ID, "alice", "Main", "EUR"),
    Deposit(ACCOUNT_ID, 1_000),
    Withdraw(ACCOUNT_ID, 250),
    CloseAccount(ACCOUNT_ID),
    ReleaseAccount(ACCOUNT_ID),
    domain.TransferMoney(ACCOUNT_ID, COMMAND_ID, EVENT_ID, 300),
    domain.CreditTransfer(ACCOUNT_ID, COMMAND_ID, EVENT_ID, 300, "EUR"),
    domain.CompleteTransfer(ACCOUNT_ID, COMMAND_ID),
    domain.RefundTransfer(ACCOUNT_ID, COMMAND_ID, Reason.ACCOUNT_CLOSED),
]
EVENTS = [
    AccountOpened("alice", "Main", "CHF"),
    MoneyDeposited(1_000, 1_000),
    MoneyWithdrawn(250, 750),
    AccountClosed(),
    AccountReleased(),
    CommandRejected("Withdraw", Reason.INSUFFICIENT_FUNDS, 5_000),
    CommandRejected("CloseAccount", Reason.BALANCE_NOT_ZERO, None),
    CommandRejected("Deposit", Reason.ACCOUNT_QUARANTINED, 100),
    domain.TransferDebited(COMMAND_ID, EVENT_ID, 300, "EUR", 700),
    domain.TransferCredited(COMMAND_ID, EVENT_ID, 300, "EUR", 1_300),
    domain.TransferRefused(COMMAND_ID, EVENT_ID, 300, "EUR", Reason.CURRENCY_MISMATCH),
    domain.TransferCompleted(COMMAND_ID, EVENT_ID, 300, "EUR"),
    domain.TransferRefunded(COMMAND_ID, EVENT_ID, 300, "EUR", Reason.ACCOUNT_NOT_FOUND, 1_000),
]


def name_of(value):
    return type(value).__name__


def command_envelope(command=None, **changes):
    fields = {"command": command or Deposit(ACCOUNT_ID, 1_000), "command_id": COMMAND_ID, "actor": "alice"}
    return CommandEnvelope(**(fields | {"issued_at": MOMENT} | changes))


def event_envelope(event=None, **changes):
    fields = {
        "event": event or MoneyDeposited(1_000, 1_000),
        "event_id": EVENT_ID,
        "account_id": ACCOUNT_ID,
        "sequence": 2,
        "occurred_at": MOMENT,
        "command_id": COMMAND_ID,
        "actor": "alice",
    }
    return EventEnvelope(**(fields | changes))


def command_body(**changes):
    """A valid command message as a dict, to be broken in one place."""
    return command_envelope().to_dict() | changes


def event_body(**changes):
    return event_envelope().to_dict() | changes


def dumps(body) -> bytes:
    return orjson.dumps(body)


# --- round trips ---


@pytest.mark.parametrize("command", COMMANDS, ids=name_of)
def test_it_round_trips_every_command(command):
    envelope = command_envelope(command)
    _, value, _ = encode(envelope)
    assert decode_command(value) == envelope


@pytest.mark.parametrize("event", EVENTS, ids=name_of)
def test_it_round_trips_every_event(event):
    envelope = event_envelope(event)
    _, value, _ = encode(envelope)
    decoded = decode_event(value)
    assert decoded == envelope
    if isinstance(event, CommandRejected):
        assert type(decoded.event.reason) is Reason


def test_it_covers_every_message_type():
    assert {name_of(c) for c in COMMANDS} == set(messages.COMMANDS)
    assert {name_of(e) for e in EVENTS} == set(messages.EVENTS)
    assert all(spec.name == name and spec.label for name, spec in (messages.COMMANDS | messages.EVENTS).items())


def test_it_round_trips_a_freshly_issued_command():
    envelope = CommandEnvelope.new(Withdraw(ACCOUNT_ID, 1), actor="bob")
    _, value, _ = encode(envelope)
    assert decode_command(value) == envelope


def test_it_writes_times_in_utc_with_a_z():
    paris = timezone(timedelta(hours=1))
    envelope = command_envelope(issued_at=datetime(2025, 3, 4, 6, 6, 7, tzinfo=paris))
    _, value, _ = encode(envelope)
    assert orjson.loads(value)["issued_at"] == "2025-03-04T05:06:07.000000Z"
    assert decode_command(value).issued_at == envelope.issued_at


def test_it_writes_the_same_json_as_before():
    """Byte for byte what the code before msgspec wrote, so old and new writers share one log."""
    _, value, _ = encode(event_envelope(CommandRejected("Withdraw", Reason.INSUFFICIENT_FUNDS, 5_000)))
    assert value == (
        b'{"event_id":"00000000-0000-4000-8000-000000000003","type":"CommandRejected","version":1,'
        b'"account_id":"00000000-0000-4000-8000-000000000001","sequence":2,'
        b'"occurred_at":"2025-03-04T05:06:07.891011Z","command_id":"00000000-0000-4000-8000-000000000002",'
        b'"actor":"alice","data":{"command":"Withdraw","reason":"insufficient_funds","amount":5000}}'
    )
    _, value, _ = encode(command_envelope(OpenAccount(ACCOUNT_ID, "alice", "Main", "EUR")))
    assert value == (
        b'{"command_id":"00000000-0000-4000-8000-000000000002","type":"OpenAccount","version":1,'
        b'"account_id":"00000000-0000-4000-8000-000000000001","actor":"alice",'
        b'"issued_at":"2025-03-04T05:06:07.891011Z","data":{"owner":"alice","name":"Main","currency":"EUR"}}'
    )


# --- kafka key and headers ---


@pytest.mark.parametrize("command", COMMANDS, ids=name_of)
def test_it_keys_commands_by_account_and_labels_them_in_headers(command):
    key, _, headers = encode(command_envelope(command))
    assert key == str(ACCOUNT_ID).encode()
    assert dict(headers) == {"type": name_of(command).encode(), "version": b"1", "content-type": b"application/json"}


@pytest.mark.parametrize("event", EVENTS, ids=name_of)
def test_it_keys_events_by_account_and_labels_them_in_headers(event):
    key, _, headers = encode(event_envelope(event))
    assert key == str(ACCOUNT_ID).encode()
    version = messages.EVENTS[name_of(event)].version
    assert dict(headers) == {
        "type": name_of(event).encode(),
        "version": str(version).encode(),
        "content-type": b"application/json",
    }


def test_it_labels_account_opened_as_version_2():
    _, value, headers = encode(event_envelope(AccountOpened("alice", "Main", "EUR")))
    assert dict(headers)["version"] == b"2"
    assert orjson.loads(value)["version"] == 2


# --- upcasting ---


def account_opened_v1() -> bytes:
    """An AccountOpened as the old code wrote it: version 1, no currency. Built by hand on purpose."""
    return orjson.dumps(
        {
            "event_id": str(EVENT_ID),
            "type": "AccountOpened",
            "version": 1,
            "account_id": str(ACCOUNT_ID),
            "sequence": 1,
            "occurred_at": "2020-01-02T03:04:05.000000Z",
            "command_id": str(COMMAND_ID),
            "actor": "alice",
            "data": {"owner": "alice", "name": "Old account"},
        }
    )


def test_it_upcasts_a_v1_account_opened_to_v2_in_euros():
    envelope = decode_event(account_opened_v1())
    assert envelope.event == AccountOpened("alice", "Old account", "EUR")
    assert envelope.sequence == 1
    assert envelope.occurred_at == datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_it_reports_the_upcast_body_as_the_current_version():
    body = decode_event(account_opened_v1()).to_dict()
    assert body["version"] == 2
    assert body["data"] == {"owner": "alice", "name": "Old account", "currency": "EUR"}


def test_it_re_encodes_an_upcast_event_as_v2():
    _, value, headers = encode(decode_event(account_opened_v1()))
    assert dict(headers)["version"] == b"2"
    assert orjson.loads(value)["data"]["currency"] == "EUR"


def test_it_rejects_a_v1_account_opened_that_already_has_a_currency():
    body = orjson.loads(account_opened_v1())
    body["data"]["currency"] = "USD"
    with pytest.raises(PoisonMessage):
        decode_event(dumps(body))


def test_it_upcasts_without_touching_the_input():
    data = {"owner": "alice", "name": "Main"}
    assert upcast("AccountOpened", 1, data) == {"owner": "alice", "name": "Main", "currency": "EUR"}
    assert data == {"owner": "alice", "name": "Main"}


def test_it_leaves_current_versions_alone_when_upcasting():
    data = {"amount": 1, "balance": 1}
    assert upcast("MoneyDeposited", 1, data) == data


# --- encode refuses invalid messages ---


@pytest.mark.parametrize(
    "event",
    [
        MoneyDeposited(10, -1),
        MoneyDeposited(0, 10),
        MoneyWithdrawn(-5, 10),
        AccountOpened("alice", "", "EUR"),
        AccountOpened("alice", "x" * (domain.MAX_NAME_LENGTH + 1), "EUR"),
        AccountOpened("", "Main", "EUR"),
        AccountOpened("alice", "Main", "eur"),
        CommandRejected("Transfer", Reason.INVALID_AMOUNT, 1),
    ],
    ids=repr,
)
def test_it_refuses_to_produce_an_invalid_event(event):
    with pytest.raises(ValueError, match="refusing to produce an invalid"):
        encode(event_envelope(event))


@pytest.mark.parametrize(
    "envelope",
    [
        event_envelope(sequence=0),
        event_envelope(actor=""),
        command_envelope(actor=""),
        command_envelope(OpenAccount(ACCOUNT_ID, "", "Main", "EUR")),
    ],
    ids=["sequence 0", "event without actor", "command without actor", "open without owner"],
)
def test_it_refuses_to_produce_an_invalid_envelope(envelope):
    with pytest.raises(ValueError, match="refusing to produce an invalid"):
        encode(envelope)


@pytest.mark.parametrize("amount", [0, -10])
def test_it_produces_a_command_with_a_bad_amount_for_the_domain_to_reject(amount):
    _, value, _ = encode(command_envelope(Deposit(ACCOUNT_ID, amount)))
    assert decode_command(value).command == Deposit(ACCOUNT_ID, amount)


# --- poison ---


@pytest.mark.parametrize("decode", [decode_command, decode_event])
@pytest.mark.parametrize(
    "value",
    [None, b"", b"{not json", b"\xff\xfe", b"[]", b'"text"', b"42", b"null", b"{}"],
    ids=["None", "empty", "bad JSON", "not UTF-8", "array", "string", "number", "null", "empty object"],
)
def test_it_treats_undecodable_bytes_as_poison(decode, value):
    with pytest.raises(PoisonMessage):
        decode(value)


@pytest.mark.parametrize("field", ["type", "version", "account_id", "actor", "command_id", "issued_at", "data"])
def test_it_treats_a_command_missing_an_envelope_field_as_poison(field):
    body = command_body()
    del body[field]
    with pytest.raises(PoisonMessage):
        decode_command(dumps(body))


@pytest.mark.parametrize(
    "field", ["event_id", "type", "version", "account_id", "sequence", "occurred_at", "command_id", "actor", "data"]
)
def test_it_treats_an_event_missing_an_envelope_field_as_poison(field):
    body = event_body()
    del body[field]
    with pytest.raises(PoisonMessage):
        decode_event(dumps(body))


@pytest.mark.parametrize(
    "changes",
    [
        {"account_id": "not-a-uuid"},
        {"command_id": 12},
        {"actor": ""},
        {"issued_at": "yesterday"},
        {"version": 0},
        {"version": "1"},
        {"type": None},
        {"data": []},
        {"trace": "extra"},
    ],
    ids=repr,
)
def test_it_treats_a_malformed_command_envelope_as_poison(changes):
    with pytest.raises(PoisonMessage):
        decode_command(dumps(command_body(**changes)))


@pytest.mark.parametrize(
    "changes",
    [{"event_id": "nope"}, {"sequence": 0}, {"sequence": 1.5}, {"occurred_at": "2025-13-01T00:00:00Z"}, {"x": 1}],
    ids=repr,
)
def test_it_treats_a_malformed_event_envelope_as_poison(changes):
    with pytest.raises(PoisonMessage):
        decode_event(dumps(event_body(**changes)))


def test_it_treats_an_unknown_command_type_as_poison():
    with pytest.raises(PoisonMessage, match="unknown message type"):
        decode_command(dumps(command_body(type="Transfer")))


def test_it_treats_an_unknown_event_type_as_poison():
    with pytest.raises(PoisonMessage, match="unknown message type"):
        decode_event(dumps(event_body(type="MoneyTransferred")))


def test_it_treats_an_event_name_on_the_command_topic_as_poison():
    with pytest.raises(PoisonMessage):
        decode_command(dumps(command_body(type="MoneyDeposited")))


@pytest.mark.parametrize("version", [2, 99])
def test_it_treats_an_unknown_command_version_as_poison(version):
    with pytest.raises(PoisonMessage):
        decode_command(dumps(command_body(version=version)))


@pytest.mark.parametrize(
    ("message_type", "version"), [("AccountOpened", 3), ("MoneyDeposited", 2), ("AccountClosed", 7)]
)
def test_it_treats_an_unknown_event_version_as_poison(message_type, version):
    body = event_body(type=message_type, version=version)
    with pytest.raises(PoisonMessage):
        decode_event(dumps(body))


def test_it_treats_an_event_newer_than_the_code_as_poison():
    # Say a newer producer already writes MoneyDeposited v2: this code cannot know what it means.
    with pytest.raises(PoisonMessage, match=r"MoneyDeposited v2 is newer than this code \(v1\)"):
        decode_event(dumps(event_body(version=2)))


def test_it_treats_a_command_in_a_non_current_version_as_poison():
    with pytest.raises(PoisonMessage, match="not the current command version"):
        decode_command(dumps(command_body(version=2)))


@pytest.mark.parametrize(
    ("message_type", "data"),
    [
        ("Deposit", {"amount": "10"}),
        ("Deposit", {"amount": 10.5}),
        ("Deposit", {"amount": True}),
        ("Deposit", {"amount": None}),
        ("Deposit", {}),
        ("Deposit", {"amount": 10, "note": "extra"}),
        ("Withdraw", {"amount": "10"}),
        ("OpenAccount", {"owner": "", "name": "Main", "currency": "EUR"}),
        ("OpenAccount", {"owner": "alice", "name": 5, "currency": "EUR"}),
        ("OpenAccount", {"owner": "alice", "name": "Main"}),
        ("CloseAccount", {"reason": "bye"}),
    ],
    ids=repr,
)
def test_it_treats_command_data_that_breaks_the_schema_as_poison(message_type, data):
    with pytest.raises(PoisonMessage):
        decode_command(dumps(command_body(type=message_type, data=data)))


@pytest.mark.parametrize(
    ("message_type", "data"),
    [
        ("MoneyDeposited", {"amount": "10", "balance": 10}),
        ("MoneyDeposited", {"amount": 10, "balance": -1}),
        ("MoneyDeposited", {"amount": 0, "balance": 0}),
        ("MoneyDeposited", {"amount": 10}),
        ("MoneyDeposited", {"amount": 10, "balance": 10, "currency": "EUR"}),
        ("MoneyWithdrawn", {"amount": -1, "balance": 10}),
        ("AccountOpened", {"owner": "alice", "name": "Main"}),
        ("AccountOpened", {"owner": "alice", "name": "Main", "currency": "euro"}),
        ("AccountOpened", {"owner": "alice", "name": "", "currency": "EUR"}),
        ("AccountClosed", {"balance": 0}),
        ("CommandRejected", {"command": "Deposit", "reason": "because"}),
        ("CommandRejected", {"command": "Transfer", "reason": "invalid_amount"}),
        ("CommandRejected", {"command": "Deposit", "reason": "invalid_amount", "amount": "1"}),
    ],
    ids=repr,
)
def test_it_treats_event_data_that_breaks_the_schema_as_poison(message_type, data):
    body = event_body(type=message_type, version=messages.EVENTS[message_type].version, data=data)
    with pytest.raises(PoisonMessage):
        decode_event(dumps(body))


def test_it_treats_an_amount_as_string_as_poison_with_a_useful_message():
    with pytest.raises(PoisonMessage, match="Deposit v1"):
        decode_command(dumps(command_body(data={"amount": "10"})))


def test_its_poison_is_a_value_error():
    assert issubclass(PoisonMessage, ValueError)


# --- business rejections are not poison ---


@pytest.mark.parametrize("amount", [0, -10])
def test_it_decodes_a_deposit_of_a_bad_amount_and_leaves_it_to_the_domain(amount):
    envelope = decode_command(dumps(command_body(data={"amount": amount})))
    assert envelope.command == Deposit(ACCOUNT_ID, amount)

    state = domain.evolve(domain.Account.new(ACCOUNT_ID), AccountOpened("alice", "Main", "EUR"))
    assert domain.decide(state, envelope.command) == [CommandRejected("Deposit", Reason.INVALID_AMOUNT, amount)]


@pytest.mark.parametrize(
    "data",
    [
        {"owner": "alice", "name": "", "currency": "EUR"},
        {"owner": "alice", "name": "   ", "currency": "EUR"},
        {"owner": "alice", "name": "x" * 200, "currency": "EUR"},
        {"owner": "alice", "name": "Main", "currency": "JPY"},
        {"owner": "alice", "name": "Main", "currency": ""},
    ],
    ids=repr,
)
def test_it_decodes_an_open_account_that_breaks_a_business_rule(data):
    envelope = decode_command(dumps(command_body(type="OpenAccount", data=data)))
    [event] = domain.decide(domain.Account.new(ACCOUNT_ID), envelope.command)
    assert isinstance(event, CommandRejected)


def test_it_round_trips_the_rejection_of_a_bad_command():
    [event] = domain.decide(domain.Account.new(ACCOUNT_ID), Deposit(ACCOUNT_ID, -10))
    envelope = event_envelope(event)
    _, value, _ = encode(envelope)
    assert decode_event(value) == envelope


# --- times ---


@pytest.mark.parametrize(
    "moment",
    ["2024-06-30T23:59:60Z", "2024-02-30T12:00:00Z", "2024-06-30T12:00:00", "2024-06-30T12:00:00+24:00", "1719748800"],
    ids=["leap second", "30 February", "no offset", "offset out of range", "epoch seconds"],
)
@pytest.mark.parametrize(
    ("decode", "body"),
    [(decode_command, command_body), (decode_event, event_body)],
    ids=["command", "event"],
)
def test_it_treats_an_unreadable_time_as_poison(decode, body, moment):
    field = "issued_at" if decode is decode_command else "occurred_at"
    with pytest.raises(PoisonMessage, match="bad envelope"):
        decode(dumps(body(**{field: moment})))


def test_it_reads_an_rfc_3339_time_in_lower_case_as_the_same_moment():
    # RFC 3339 allows "t" and "z"; the old decoder refused them only because fromisoformat did.
    assert decode_event(dumps(event_body(occurred_at="2025-03-04t05:06:07.891011z"))).occurred_at == MOMENT


# --- bad bytes inside otherwise good JSON ---


@pytest.mark.parametrize(
    "value",
    [
        b'{"actor": "\xff"}',
        dumps(event_body(actor="alice")).replace(b'"alice"', b'"al\xffice"'),
        dumps(event_body(type="AccountOpened", version=2, data={"owner": "a", "name": "N", "currency": "EUR"})).replace(
            b'"N"', b'"\xfe"'
        ),
        dumps(event_body(actor="alice")).replace(b'"alice"', b'"\\ud800"'),
    ],
    ids=["not UTF-8 alone", "not UTF-8 in the envelope", "not UTF-8 in data", "lone surrogate"],
)
def test_it_treats_a_string_that_is_not_unicode_as_poison(value):
    with pytest.raises(PoisonMessage):
        decode_event(value)


@pytest.mark.parametrize(
    ("decode", "body"),
    [
        (decode_command, command_body(data={"amount": -(2**53) - 1})),
        (decode_command, command_body(data={"amount": 10**30})),
        (
            decode_event,
            event_body(
                type="CommandRejected", data={"command": "Deposit", "reason": "invalid_amount", "amount": -(2**63) - 1}
            ),
        ),
        (decode_event, event_body(sequence=2**63)),
        (decode_event, event_body(data={"amount": 2**53 + 1, "balance": 1})),
    ],
    ids=[
        "huge negative deposit",
        "huge deposit",
        "rejected amount beyond bigint",
        "sequence beyond bigint",
        "amount beyond 2**53",
    ],
)
def test_it_treats_an_integer_too_large_for_the_projections_as_poison(decode, body):
    # A bigint column could not hold it: the projector would stop on it instead of dead-lettering it.
    with pytest.raises(PoisonMessage):
        decode(json.dumps(body).encode())  # json, not orjson: orjson refuses integers beyond 64 bits


# --- the specs drive the rest ---


def test_it_derives_the_rejected_command_enum_from_the_command_specs():
    schema = messages.json_schemas()["events/CommandRejected.v1"]["$defs"]["CommandRejectedV1"]
    assert set(schema["properties"]["command"]["enum"]) == set(messages.COMMANDS)
    assert set(schema["properties"]["reason"]["$ref"].rsplit("/")[-1:]) == {"Reason"}


def test_it_has_a_json_schema_per_type_and_version():
    schemas = messages.json_schemas()
    expected = {f"commands/{name}.v1" for name in messages.COMMANDS} | {
        f"events/{name}.v{v}" for name, spec in messages.EVENTS.items() for v in range(1, spec.version + 1)
    }
    assert set(schemas) == expected
    opened_v1 = schemas["events/AccountOpened.v1"]["$defs"]["AccountOpenedV1"]
    assert set(opened_v1["properties"]) == {"owner", "name"} and opened_v1["additionalProperties"] is False


def test_it_keeps_the_documented_schemas_current():
    # docs/schemas is written on request only: manage.py message_schemas --write docs/schemas
    written = {
        p.relative_to(SCHEMAS).with_suffix("").as_posix(): json.loads(p.read_text()) for p in SCHEMAS.rglob("*.json")
    }
    assert written == messages.json_schemas(), "specs changed: run manage.py message_schemas --write docs/schemas"


def test_it_bounds_every_integer_a_spec_leaves_alone_to_a_bigint():
    @dataclasses.dataclass(frozen=True)
    class Tipped:
        amount: int
        note: int | None = None

    struct = messages.data_struct(messages.Spec(Tipped, "Tipped"))
    decode = msgspec.json.Decoder(struct).decode
    assert decode(b'{"amount": 5}') == struct(5, None)
    for bad in (
        b'{"amount": 9223372036854775808}',
        b'{"amount": 1, "note": -9223372036854775809}',
        b'{"amount": 1, "x": 1}',
    ):
        with pytest.raises(msgspec.ValidationError):
            decode(bad)


# --- properties ---

uuids = st.uuids()
texts = st.text(min_size=1, max_size=domain.MAX_NAME_LENGTH)
valid_amounts = st.integers(min_value=1, max_value=2**53)
balances = st.integers(min_value=0, max_value=2**53)
moments = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]),
)
any_commands = st.one_of(
    st.builds(OpenAccount, account_id=uuids, owner=texts, name=st.text(max_size=200), currency=st.text(max_size=5)),
    st.builds(Deposit, account_id=uuids, amount=valid_amounts),
    st.builds(Withdraw, account_id=uuids, amount=valid_amounts),
    st.builds(CloseAccount, account_id=uuids),
)
any_events = st.one_of(
    st.builds(AccountOpened, owner=texts, name=texts, currency=st.sampled_from(domain.CURRENCIES)),
    st.builds(MoneyDeposited, amount=valid_amounts, balance=balances),
    st.builds(MoneyWithdrawn, amount=valid_amounts, balance=balances),
    st.just(AccountClosed()),
    st.builds(
        CommandRejected,
        command=st.sampled_from(list(messages.COMMANDS)),
        reason=st.sampled_from(Reason),
        amount=st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1),
    ),
)
property_settings = settings(max_examples=200, deadline=None, database=None)


@property_settings
@given(command=any_commands, command_id=uuids, actor=texts, issued_at=moments)
def test_it_round_trips_any_valid_command(command, command_id, actor, issued_at):
    envelope = CommandEnvelope(command, command_id, actor, issued_at)
    key, value, _ = encode(envelope)
    assert key == str(command.account_id).encode()
    assert decode_command(value) == envelope


@property_settings
@given(
    event=any_events,
    event_id=uuids,
    account_id=uuids,
    sequence=st.integers(min_value=1, max_value=2**63 - 1),
    occurred_at=moments,
    command_id=uuids,
    actor=texts,
)
def test_it_round_trips_any_valid_event(event, event_id, account_id, sequence, occurred_at, command_id, actor):
    envelope = EventEnvelope(event, event_id, account_id, sequence, occurred_at, command_id, actor)
    key, value, _ = encode(envelope)
    assert key == str(account_id).encode()
    assert decode_event(value) == envelope


@property_settings
@given(owner=texts, name=texts)
def test_it_upcasts_any_v1_account_opened(owner, name):
    body = event_body(type="AccountOpened", version=1, data={"owner": owner, "name": name})
    assert decode_event(dumps(body)).event == AccountOpened(owner, name, "EUR")


def test_it_names_the_account_a_bad_record_belongs_to_by_its_key_then_its_body() -> None:
    # One function answers for the processor's quarantine and the projector's parking alike.
    a, b = uuid.uuid4(), uuid.uuid4()
    cases: list[tuple[bytes | None, bytes | None, uuid.UUID | None]] = [
        (str(a).encode(), b"not json", a),
        (str(a).encode(), orjson.dumps({"account_id": str(b)}), a),  # the key wins: it decides the partition
        (None, orjson.dumps({"account_id": str(b)}), b),
        (b"\xff\xfe", orjson.dumps({"account_id": str(b)}), b),  # a key that is not UTF-8
        (b"not-an-account", orjson.dumps({"account_id": 12}), None),
        (None, orjson.dumps([str(a)]), None),
        (None, b"\xff", None),
        (None, None, None),
    ]
    for key, value, expected in cases:
        assert messages.named_account(key, value) == expected, (key, value)
