"""Properties of `confero.signaling.messages`, the wire schemas (no sockets, no server).

* `decode` answers any frame (text, bytes, any JSON value) with a command or a `DecodeFailure`;
* every client command struct survives encode -> `decode` unchanged;
* a known command whose fields carry values of any JSON type decodes to its struct, with every
  field of its declared type, or fails as `invalid_field`;
* `encode` of every server message is JSON carrying the message's own `command` tag and its
  fields under their wire names.
"""

from __future__ import annotations

import json
from typing import Any, get_args, get_origin

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from confero.signaling import messages
from confero.signaling.messages import COMMANDS, DecodeFailure, decode, encode

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Every definition `decode` fails with, and when.
FAILURES = {"invalid_json", "missingParameter", "unknown_command", "invalid_field"}

INT64 = st.integers(-(2**63), 2**63 - 1)
json_scalars = st.none() | st.booleans() | INT64 | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
command_names = st.sampled_from(sorted(COMMANDS))


def check_decoded(frame: str | bytes) -> tuple[str, messages.Command] | DecodeFailure:
    """`decode(frame)`, asserting its contract: a command of the named class, or a DecodeFailure."""
    try:
        name, command = decode(frame)
    except DecodeFailure as failure:
        assert failure.definition in FAILURES, failure.definition
        assert isinstance(failure.information, str) and failure.information
        assert isinstance(failure.stream_id, str) and isinstance(failure.command, str)
        return failure
    assert type(command) is COMMANDS[name]
    return name, command


# -- decode never raises anything else ------------------------------------------------------------


@FAST
@given(st.text())
@example("")
@example("{")
@example('{"command": null}')
@example('{"command": "play", "streamId": 5}')
@example('{"command": "takeCandidate", "label": 1e400}')
@example('{"command": "takeCandidate", "label": ' + "9" * 30 + "}")
def test_decode_of_any_text(frame: str) -> None:
    check_decoded(frame)


@FAST
@given(st.binary())
@example(b"\xff\xfe")
@example('{"command": "ping"}'.encode("utf-16"))
def test_decode_of_any_bytes(frame: bytes) -> None:
    check_decoded(frame)


@FAST
@given(json_values, st.booleans())
def test_decode_of_any_json_value(value: Any, as_bytes: bool) -> None:
    text = json.dumps(value)
    outcome = check_decoded(text.encode() if as_bytes else text)
    if not isinstance(value, dict):
        assert isinstance(outcome, DecodeFailure) and outcome.definition == "invalid_json"
    elif not isinstance(value.get("command"), str) or not value["command"]:
        assert isinstance(outcome, DecodeFailure) and outcome.definition == "missingParameter"
    elif value["command"] not in COMMANDS:
        assert isinstance(outcome, DecodeFailure) and outcome.definition == "unknown_command"


@pytest.mark.parametrize(
    "frame",
    ["[" * 100_000, '{"command": "peerMessageCommand", "streamId": "c", "data": ' + "[" * 2000 + "]" * 2000 + "}"],
    ids=["bare", "in-a-field"],
)
def test_decode_of_deeply_nested_json(frame: str) -> None:
    check_decoded(frame)


# -- client commands round-trip -------------------------------------------------------------------


def values_of(annotation: Any) -> st.SearchStrategy[Any]:
    """Values of a field's declared type (as msgspec resolves it): scalars, unions, lists,
    dicts, nested structs, and `Any` as any JSON value."""
    if annotation is Any:
        return json_values
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return struct_values(annotation)
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is list:
        return st.lists(values_of(args[0]), max_size=3)
    if origin is dict:
        return st.dictionaries(st.text(max_size=8), values_of(args[1]), max_size=3)
    if args:  # a union, `X | Y` or Union[X, Y]
        return st.one_of(*(values_of(a) for a in args))
    return {str: st.text(), bool: st.booleans(), int: INT64, type(None): st.none()}[annotation]


def struct_values(cls: type[msgspec.Struct]) -> st.SearchStrategy[Any]:
    """Instances of `cls`: its required fields always given, the others now and then."""
    fields = msgspec.structs.fields(cls)
    required = {f.name: values_of(f.type) for f in fields if f.required}
    optional = {f.name: values_of(f.type) for f in fields if not f.required}
    return st.fixed_dictionaries(required, optional=optional).map(lambda kw: cls(**kw))


any_command = st.one_of(*(struct_values(cls).map(lambda c, n=name: (n, c)) for name, cls in COMMANDS.items()))


@FAST
@given(any_command)
def test_every_command_round_trips(named: tuple[str, messages.Command]) -> None:
    name, command = named
    wire = msgspec.to_builtins(command)
    assert "command" not in wire
    decoded_name, decoded = decode(msgspec.json.encode({"command": name, **wire}))
    assert decoded_name == name
    assert decoded == command


@FAST
@given(command_names, st.dictionaries(st.text(max_size=12), json_values, max_size=6), st.data())
def test_known_command_with_fuzzed_fields(name: str, extra: dict[str, Any], data: st.DataObject) -> None:
    cls = COMMANDS[name]
    wire_names = [f.encode_name for f in msgspec.structs.fields(cls)]
    fuzzed = data.draw(st.dictionaries(st.sampled_from(wire_names), json_values, max_size=len(wire_names)))
    frame = json.dumps({**extra, **fuzzed, "command": name})
    try:
        decoded_name, command = decode(frame)
    except DecodeFailure as failure:
        assert failure.definition == "invalid_field", failure.definition
        assert failure.command == name
        stream_id = fuzzed.get("streamId", extra.get("streamId"))
        assert failure.stream_id == (stream_id if isinstance(stream_id, str) else "")
        return
    assert decoded_name == name and type(command) is cls
    # every field holds a value of its declared type: a strict conversion accepts it as it is
    assert msgspec.convert(msgspec.to_builtins(command), cls) == command


# -- server messages ------------------------------------------------------------------------------


def server_message_classes() -> list[type[messages.Message]]:
    """Every concrete server message: the subclasses of `Message` (each has its `command` tag)."""
    return [cls for cls in messages.Message.__subclasses__() if cls is not messages.Message]


any_server_message = st.one_of(*(struct_values(cls) for cls in server_message_classes()))


def test_every_server_message_class_is_covered() -> None:
    assert {cls.__name__ for cls in server_message_classes()} == {
        cls.__name__ for cls in messages.Message.__subclasses__()
    }


@FAST
@given(any_server_message)
def test_encode_tags_every_server_message(message: messages.Message) -> None:
    text = encode(message)
    wire = json.loads(text)
    cls = type(message)
    assert wire["command"] == cls.__struct_config__.tag
    fields = msgspec.structs.fields(cls)
    assert set(wire) - {"command"} <= {f.encode_name for f in fields}
    assert {f.encode_name for f in fields if f.required} <= set(wire)
    # the JSON is that very message again (fields left out were at their defaults)
    assert msgspec.json.decode(text, type=cls) == message


@FAST
@given(st.text())
def test_encode_relays_raw_frames_verbatim(text: str) -> None:
    assert encode(messages.Raw(text)) == text
