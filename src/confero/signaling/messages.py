"""Every Ant Media WebSocket message Confero reads or writes, as typed structs.

This and `api/schemas.py` are the only places where the wire's camelCase names appear.
Client commands are decoded leniently (unknown fields ignored, "true" accepted for true),
as the official SDKs send optional fields loosely typed. Server messages are encoded from
tagged structs so that the `command` field is always right.
"""

from __future__ import annotations

from typing import Any

import msgspec

# -- client -> server ------------------------------------------------------------------------


class Command(msgspec.Struct, rename="camel", kw_only=True):
    stream_id: str = ""


class Ping(Command):
    pass


class GetIceServerConfig(Command):
    pass


class Publish(Command):
    token: str | None = None
    subscriber_id: str = ""
    subscriber_code: str = ""
    stream_name: str = ""
    main_track: str = ""
    video: bool = True
    audio: bool = True
    meta_data: str | dict[str, Any] = ""
    role: str = ""


class Play(Command):
    token: str | None = None
    room: str = ""
    track_list: list[str] = []
    subscriber_id: str = ""
    subscriber_code: str = ""
    viewer_info: str = ""
    role: str = ""
    user_publish_id: str = ""
    disable_tracks_by_default: bool = False
    subscriber_name: str = ""


class TakeConfiguration(Command):
    type: str = ""
    sdp: str = ""


class TakeCandidate(Command):
    label: int | None = None
    id: str | None = None
    candidate: str = ""


class Stop(Command):
    pass


class GetStreamInfo(Command):
    pass


class JoinRoom(Command):
    room: str = ""
    main_track: str = ""
    mode: str | None = None
    stream_name: str = ""
    role: str = ""
    metadata: str | dict[str, Any] | None = None


class LeaveFromRoom(Command):
    room: str = ""
    main_track: str = ""


class GetRoomInfo(Command):
    room: str = ""


class EnableTrack(Command):
    track_id: str = ""
    enabled: bool = True


class GetTrackList(Command):
    token: str | None = None


class Join(Command):
    multi_peer: bool = False
    mode: str = ""
    token: str | None = None


class Leave(Command):
    pass


class PeerMessageCommand(Command):
    definition: str = ""
    data: Any = None


# -- video slots of a room play (maxVideoTrackCount) --


class SetMaxVideoTrackCount(Command):
    max_track_count: int = -1


class GetVideoTrackAssignments(Command):
    pass


class AssignVideoTrack(Command):
    video_track_id: str = ""  # the slot's label (the SDK's name for it)
    enabled: bool = True


class UpdateVideoTrackAssignments(Command):
    offset: int = 0
    size: int = 0


# -- signal: per-player track switches, stream quality, debug info, subscribers, push --------


class ToggleVideo(Command):
    track_id: str = ""
    enabled: bool = True


class ToggleAudio(Command):
    track_id: str = ""
    enabled: bool = True


class ForceStreamQuality(Command):
    stream_height: int | str = 0  # a height of the ABR list, or "auto"


class GetDebugInfo(Command):
    pass


class GetSubscriberCount(Command):
    pass


class GetSubscribers(Command):
    offset: int = 0
    size: int = 50


class RegisterPushNotificationToken(Command):
    subscriber_id: str = ""
    token: str = ""
    pns_registration_token: str = ""
    pns_type: str = ""


class SendPushNotification(Command):
    subscriber_id: str = ""
    token: str = ""
    push_notification_content: Any = None
    subscriber_ids_to_notify: list[str] = []
    topic: str = ""


# getBroadcastObject / updateStreamMetaData / getSubtracks / getSubtracksCount (rooms as main tracks)


class GetBroadcastObject(Command):
    pass


class UpdateStreamMetaData(Command):
    meta_data: str | dict[str, Any] | None = None


class GetSubtracks(Command):
    role: str | None = None
    offset: int | None = None
    size: int | None = None


class GetSubtracksCount(Command):
    role: str | None = None
    status: str | None = None


COMMANDS: dict[str, type[Command]] = {
    "ping": Ping,
    "getIceServerConfig": GetIceServerConfig,
    "publish": Publish,
    "play": Play,
    "takeConfiguration": TakeConfiguration,
    "takeCandidate": TakeCandidate,
    "stop": Stop,
    "getStreamInfo": GetStreamInfo,
    "joinRoom": JoinRoom,
    "leaveFromRoom": LeaveFromRoom,
    "getRoomInfo": GetRoomInfo,
    "enableTrack": EnableTrack,
    "getTrackList": GetTrackList,
    "join": Join,
    "leave": Leave,
    "peerMessageCommand": PeerMessageCommand,
    "getBroadcastObject": GetBroadcastObject,
    "updateStreamMetaData": UpdateStreamMetaData,
    "getSubtracks": GetSubtracks,
    "getSubtracksCount": GetSubtracksCount,
    "setMaxVideoTrackCountCommand": SetMaxVideoTrackCount,
    "getVideoTrackAssignmentsCommand": GetVideoTrackAssignments,
    "assignVideoTrackCommand": AssignVideoTrack,
    "updateVideoTrackAssignmentsCommand": UpdateVideoTrackAssignments,
    "toggleVideo": ToggleVideo,
    "toggleAudio": ToggleAudio,
    "forceStreamQuality": ForceStreamQuality,
    "getDebugInfo": GetDebugInfo,
    "getSubscriberCount": GetSubscriberCount,
    "getSubscribers": GetSubscribers,
    "registerPushNotificationToken": RegisterPushNotificationToken,
    "sendPushNotification": SendPushNotification,
}

#: Commands that need no streamId (everything else is refused without one).
NO_STREAM_ID = frozenset(
    {
        "ping",
        "getIceServerConfig",
        "joinRoom",
        "leaveFromRoom",
        "getRoomInfo",
        "registerPushNotificationToken",
        "sendPushNotification",
    }
)


class DecodeFailure(Exception):
    """A frame that is not a usable command; `definition` is the error to answer with."""

    def __init__(self, definition: str, information: str, command: str = "", stream_id: str = "") -> None:
        super().__init__(information)
        self.definition = definition
        self.information = information
        self.command = command
        self.stream_id = stream_id


_decoder = msgspec.json.Decoder()


def decode(text: str | bytes) -> tuple[str, Command]:
    """(command name, typed command) or DecodeFailure."""
    try:
        raw = _decoder.decode(text)
    except msgspec.DecodeError as exc:
        raise DecodeFailure("invalid_json", f"not JSON: {exc}") from None
    except RecursionError:
        raise DecodeFailure("invalid_json", "the JSON is nested too deeply") from None
    if not isinstance(raw, dict):
        raise DecodeFailure("invalid_json", "a message must be a JSON object")
    name = raw.get("command")
    raw_id = raw.get("streamId")
    stream_id = raw_id if isinstance(raw_id, str) else ""
    if not isinstance(name, str) or not name:
        raise DecodeFailure("missingParameter", "the message has no command", stream_id=stream_id)
    cls = COMMANDS.get(name)
    if cls is None:
        raise DecodeFailure("unknown_command", f"unknown command {name!r}", name, stream_id)
    # A JSON null is an absent field, as for Ant Media's JSON parsers: the SDK sends
    # `joinRoom(room, id, null, null, null, null)` and `play` with `trackList: null` as is.
    raw = {key: value for key, value in raw.items() if value is not None}
    try:
        command = msgspec.convert(raw, cls, strict=False)
    except msgspec.ValidationError as exc:
        raise DecodeFailure("invalid_field", str(exc), name, stream_id) from None
    except RecursionError:
        raise DecodeFailure("invalid_field", "a field is nested too deeply", name, stream_id) from None
    return name, command


# -- server -> client ------------------------------------------------------------------------


class Message(msgspec.Struct, rename="camel", kw_only=True, omit_defaults=True, tag_field="command"):
    pass


class Pong(Message, tag="pong"):
    pass


class Start(Message, tag="start"):
    stream_id: str


class TakeConfigurationOut(Message, tag="takeConfiguration"):
    stream_id: str
    type: str
    sdp: str
    id_mapping: dict[str, str] | None = None


class TakeCandidateOut(Message, tag="takeCandidate"):
    stream_id: str
    label: int
    id: str | None
    candidate: str


class StopOut(Message, tag="stop"):
    stream_id: str


class IceServerConfig(Message, tag="iceServerConfig"):
    #: Ant Media's one URI (the official SDK reads only this, a stun: or turn: URI).
    stun_server_uri: str = ""
    turn_server_username: str = ""
    turn_server_credential: str = ""
    #: Confero's own: every TURN URI of the deployment (same credentials), which Confero's SDK
    #: uses; absent when there are none, as in Ant Media.
    turn_server_uris: list[str] | None = None


class StreamInfoEntry(msgspec.Struct, rename="camel"):
    stream_width: int = 0
    stream_height: int = 0
    video_bitrate: int = 0
    audio_bitrate: int = 0
    video_codec: str = ""
    audio_codec: str = ""


class StreamInformation(Message, tag="streamInformation"):
    stream_id: str
    stream_info: list[StreamInfoEntry]


class Notification(Message, tag="notification"):
    definition: str
    stream_id: str = ""
    room: str = ""
    room_name: str = msgspec.field(default="", name="ATTR_ROOM_NAME")
    subscriber_id: str = ""
    reason: str = ""  # Confero's: publish_finished/play_finished of a lost connection


class StreamDetail(msgspec.Struct, rename="camel"):
    stream_id: str
    stream_name: str = ""
    meta_data: str = ""


class JoinedTheRoom(Message, tag="notification"):
    stream_id: str
    room: str
    room_name: str = msgspec.field(name="ATTR_ROOM_NAME")
    streams: list[str]
    stream_list: list[StreamDetail]
    max_track_count: int
    definition: str


class RoomInformation(Message, tag="roomInformation"):
    room: str
    room_name: str = msgspec.field(name="ATTR_ROOM_NAME")
    streams: list[str]
    stream_list: list[StreamDetail]
    stream_id: str = ""


class TrackList(Message, tag="trackList"):
    stream_id: str
    track_list: list[str]


# -- rooms as main tracks: broadcastObject, subtrackList, subtrackCount, subtrackAdded/Removed


class BroadcastObject(Message, tag="notification"):
    definition: str
    stream_id: str
    broadcast: str


class SubtrackList(Message, tag="notification"):
    definition: str
    stream_id: str
    subtrack_list: list[str]


class SubtrackCount(Message, tag="notification"):
    definition: str
    stream_id: str
    count: int


class SubtrackNotification(Message, tag="notification"):
    definition: str
    stream_id: str
    track_id: str


# -- signal: replies to the commands above, and the shutdown notice --------------------------


class SubscriberCount(Message, tag="notification"):
    definition: str
    stream_id: str
    count: int


class SubscriberEntry(msgspec.Struct, rename="camel"):
    """What of Ant Media's Subscriber JSON applies to a current player (no TOTP secret)."""

    subscriber_id: str
    stream_id: str
    subscriber_name: str = ""
    type: str = "play"
    connected: bool = False
    current_concurrent_connections: int = 1
    concurrent_connections_limit: int = 1
    avg_video_bitrate: int = 0
    avg_audio_bitrate: int = 0


class SubscriberList(Message, tag="notification"):
    """`subscriberList`: each entry is a Subscriber as a JSON string, as `subtrackList` carries Broadcasts."""

    definition: str
    stream_id: str
    subscriber_list: list[str]


class DebugTrack(msgspec.Struct, rename="camel"):
    track_id: str
    kind: str
    codec: str
    packets: int
    bytes: int
    keyframes: int
    keyframe_requests: int
    width: int = 0
    height: int = 0


class DebugConnection(msgspec.Struct, rename="camel"):
    client_id: str
    direction: str
    connected: bool
    tracks: list[DebugTrack]


class DebugBody(msgspec.Struct, rename="camel", omit_defaults=True):
    """The text of `debugInfo` (Confero's own layout; Ant Media's is free text too)."""

    stream_id: str
    type: str
    connections: list[DebugConnection]
    stream_info: StreamInfoEntry | None = None


class DebugInfo(Message, tag="notification"):
    """`debugInfo`: free text for people (Circle appends it to its chat); here JSON of the live stats."""

    definition: str
    stream_id: str
    debug_info: str


class Error(Message, tag="error"):
    definition: str
    stream_id: str = ""
    information: str = ""
    room: str = ""
    error_code: str = msgspec.field(default="", name="error_code")


class Raw:
    """A frame relayed verbatim (1-1 call signaling between two clients)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


_encoder = msgspec.json.Encoder()


def encode(message: Message | Raw) -> str:
    if isinstance(message, Raw):
        return message.text
    return _encoder.encode(message).decode()


def data_event(stream_id: str, event_type: str, **fields: object) -> str:
    """A server event for a data channel: {"streamId", "eventType", ...fields} as JSON text."""
    return _encoder.encode({"streamId": stream_id, "eventType": event_type, **fields}).decode()
