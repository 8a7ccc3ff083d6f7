"""The messages of Circle's application WebSocket (`/{App}/websocket/application`), typed.

Circle (Ant Media's conference app) opens this second socket beside the main one; on Ant Media
it is answered by Circle's own server plugin (`WebSocketApplicationHandler`), not by the media
server. Its wire names are that plugin's. Two of its replies carry JSON *inside a string*
(`pong` and the recording replies put a `Result` in `definition`, `setSettings` puts the
settings in `settings`), which Circle parses a second time; they are kept that way here.
"""

from __future__ import annotations

import msgspec

# -- client -> server ------------------------------------------------------------------------


class Command(msgspec.Struct, rename="camel", kw_only=True):
    stream_id: str = ""


class Ping(Command):
    pass


class GetSettings(Command):
    pass


class IsRoomCreationPasswordRequired(Command):
    pass


class CreateRoomWithPassword(Command):
    room_creation_password: str = ""
    room_name: str = ""


class SendData(Command):
    receiver_stream_id: str = ""
    message: str = ""


class StartRecording(Command):
    websocket_url: str = msgspec.field(default="", name="websocketURL")
    token: str | None = None
    recording_mode: str | None = None


class StopRecording(Command):
    pass


class UpdateBroadcastRole(Command):
    role: str = ""


class SyncAdministrativeFields(Command):
    room_name: str = ""
    websocket_url: str = msgspec.field(default="", name="websocketURL")
    token: str | None = None


COMMANDS: dict[str, type[Command]] = {
    "ping": Ping,
    "getSettings": GetSettings,
    "isRoomCreationPasswordRequired": IsRoomCreationPasswordRequired,
    "createRoomWithPassword": CreateRoomWithPassword,
    "sendData": SendData,
    "startRecording": StartRecording,
    "stopRecording": StopRecording,
    "updateBroadcastRole": UpdateBroadcastRole,
    "syncAdministrativeFields": SyncAdministrativeFields,
}


class DecodeFailure(Exception):
    """A frame that is not a usable command; `definition` is the error to answer with."""

    def __init__(self, definition: str, information: str, command: str = "") -> None:
        super().__init__(information)
        self.definition = definition
        self.information = information
        self.command = command


_decoder = msgspec.json.Decoder()


def decode(text: str | bytes) -> tuple[str, Command]:
    """(command name, typed command) or DecodeFailure."""
    try:
        raw = _decoder.decode(text)
        if isinstance(raw, str):  # Circle's provider also accepts a JSON string holding the JSON
            raw = _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise DecodeFailure("invalid_json", f"not JSON: {exc}") from None
    except RecursionError:
        raise DecodeFailure("invalid_json", "the JSON is nested too deeply") from None
    if not isinstance(raw, dict):
        raise DecodeFailure("invalid_json", "a message must be a JSON object")
    name = raw.get("command")
    if not isinstance(name, str) or not name:
        raise DecodeFailure("missingParameter", "the message has no command")
    cls = COMMANDS.get(name)
    if cls is None:
        raise DecodeFailure("unknown_command", f"unknown command {name!r}", name)
    try:
        command = msgspec.convert(raw, cls, strict=False)
    except msgspec.ValidationError as exc:
        raise DecodeFailure("invalid_field", str(exc), name) from None
    except RecursionError:
        raise DecodeFailure("invalid_field", "a field is nested too deeply", name) from None
    return name, command


# -- server -> client ------------------------------------------------------------------------


class Result(msgspec.Struct, rename="camel", kw_only=True, omit_defaults=True):
    """Ant Media's REST `Result`, as Gson writes it (null fields left out, `errorId` always)."""

    success: bool
    message: str | None = None
    data_id: str | None = None
    error_id: int = msgspec.field(name="errorId")


class Settings(msgspec.Struct, rename="camel", kw_only=True):
    """`ConferenceRoomSettings`' exposed fields, the ones Circle reads from `setSettings`."""

    room_creation_password_enabled: bool = False
    is_recording_feature_available: bool = False
    participant_visibility_matrix: str = ""
    max_video_track_count: int = -1


class Message(msgspec.Struct, rename="camel", kw_only=True, omit_defaults=True, tag_field="command"):
    pass


class Pong(Message, tag="pong"):
    definition: str


class SetSettings(Message, tag="setSettings"):
    settings: str


class PasswordRequired(Message, tag="isRoomCreationPasswordRequired"):
    required: bool


class RoomCreatedWithPassword(Message, tag="createRoomWithPassword"):
    authenticated: bool
    join_token: str | None = None
    room_name: str | None = None


class StartRecordingResponse(Message, tag="startRecordingResponse"):
    definition: str


class StopRecordingResponse(Message, tag="stopRecordingResponse"):
    definition: str


class Error(Message, tag="error"):
    definition: str
    information: str = ""


_encoder = msgspec.json.Encoder()


def encode(message: Message | Result | Settings) -> str:
    return _encoder.encode(message).decode()


def result(success: bool, message: str | None = None) -> str:
    """A `Result` as the JSON text that goes in a reply's `definition`."""
    return encode(Result(success=success, message=message, error_id=0))


__all__ = ["COMMANDS", "DecodeFailure", "Message", "Result", "Settings", "decode", "encode", "result"]
