"""Ant Media's REST JSON shapes (Result, ConferenceRoom, ...; the Broadcast is in
`confero.broadcast_json`, shared with the WebSocket) and their mapping to store records.

With `signaling/messages.py`, the only place where the wire's camelCase names appear.
"""

from __future__ import annotations

import msgspec

from confero.store import RoomRecord, StreamRecord, TokenRecord

#: Query parameter naming a stream (room-info, deprecated add/delete).
STREAM_ID_QUERY = "streamId"


class Result(msgspec.Struct):
    success: bool
    message: str = ""
    dataId: str = ""
    errorId: int = 0


class BroadcastIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """What `POST /broadcasts/create` and `PUT /broadcasts/{id}` accept.

    Every field is optional, and JSON `null` is the same as absent (Ant Media's `BroadcastUpdate`):
    a create starts from the record's defaults, an update changes only the fields it is given.
    """

    streamId: str | None = None
    name: str | None = None
    description: str | None = None
    type: str | None = None
    plannedStartDate: int | None = None
    plannedEndDate: int | None = None
    publicStream: bool | None = None
    metaData: str | None = None
    role: str | None = None
    mainTrackStreamId: str | None = None
    subtracksLimit: int | None = None
    webRTCViewerLimit: int | None = None
    listenerHookURL: str | None = None
    subTrackStreamIds: list[str] | None = None


#: BroadcastIn field -> StreamRecord attribute, for the fields a create or an update may set.
_BROADCAST_FIELDS = {
    "name": "name",
    "description": "description",
    "type": "type",
    "plannedStartDate": "planned_start_date",
    "plannedEndDate": "planned_end_date",
    "publicStream": "public_stream",
    "metaData": "meta_data",
    "role": "role",
    "mainTrackStreamId": "main_track_stream_id",
    "subtracksLimit": "subtracks_limit",
    "webRTCViewerLimit": "webrtc_viewer_limit",
    "listenerHookURL": "listener_hook_url",
}


def apply_broadcast(record: StreamRecord, body: BroadcastIn) -> StreamRecord:
    """Set the record's fields that `body` gives (not absent, not null); the others stay."""
    for wire_name, attribute in _BROADCAST_FIELDS.items():
        value = getattr(body, wire_name)
        if value is not None and not (wire_name in ("name", "type") and value == ""):
            setattr(record, attribute, value)
    return record


encoder = msgspec.json.Encoder()


class ConferenceRoom(msgspec.Struct, kw_only=True):
    """Ant Media's ConferenceRoom: dates in Unix seconds; 0 means "now" / "one hour after start"."""

    roomId: str = ""
    startDate: int = 0
    endDate: int = 0
    roomStreamList: list[str] = []
    mode: str = ""  # "" on input keeps the stored mode; records default to "legacy"
    originAdress: str = ""


class RoomInfo(msgspec.Struct):
    roomId: str
    streamDetailsMap: dict[str, str] | None
    startDate: int
    endDate: int


def room_from_record(record: RoomRecord) -> ConferenceRoom:
    return ConferenceRoom(
        roomId=record.room_id,
        startDate=record.start_date,
        endDate=record.end_date,
        roomStreamList=list(record.room_stream_list),
        mode=record.mode,
        originAdress=record.origin_address,
    )


def record_from_room(room: ConferenceRoom) -> RoomRecord:
    return RoomRecord(
        room_id=room.roomId.strip(),
        start_date=room.startDate,
        end_date=room.endDate,
        room_stream_list=list(room.roomStreamList),
        mode=room.mode or "legacy",
    )


class Token(msgspec.Struct, kw_only=True):
    """Ant Media's Token JSON."""

    tokenId: str = ""
    streamId: str = ""
    expireDate: int = 0
    type: str = ""
    roomId: str = ""


def token_from_record(record: TokenRecord) -> Token:
    return Token(
        tokenId=record.token_id,
        streamId=record.stream_id,
        expireDate=record.expire_date,
        type=record.type,
        roomId=record.room_id,
    )


#: Query parameters of the broadcast list (`GET /broadcasts/list/{offset}/{size}`).
LIST_QUERY = {"search": "search", "sort": "sort_by", "order": "order_by", "type": "type_by"}

#: Query parameter naming the member stream of `POST`/`DELETE /broadcasts/{id}/subtrack`.
SUBTRACK_QUERY = "id"


class SimpleStat(msgspec.Struct):
    number: int


class BasicStreamInfo(msgspec.Struct):
    """One entry of `GET /broadcasts/{id}/stream-info` (Ant Media's BasicStreamInfo)."""

    videoHeight: int
    videoWidth: int
    videoBitrate: int
    audioBitrate: int
    videoCodec: str | None


class BroadcastStatistics(msgspec.Struct):
    totalRTMPWatchersCount: int
    totalHLSWatchersCount: int
    totalWebRTCWatchersCount: int
    totalDASHWatchersCount: int


class AppBroadcastStatistics(msgspec.Struct):
    totalRTMPWatchersCount: int
    totalHLSWatchersCount: int
    totalWebRTCWatchersCount: int
    totalDASHWatchersCount: int
    activeLiveStreamCount: int


class WebRTCClientStats(msgspec.Struct, kw_only=True):
    measuredBitrate: int = 0
    sendBitrate: int = 0
    videoFrameSendPeriod: float = 0.0
    audioFrameSendPeriod: float = 0.0
    clientId: int = 0
    videoPacketCount: int = 0
    audioPacketCount: int = 0
    clientInfo: str = ""
    clientIp: str = ""


class Version(msgspec.Struct, kw_only=True):
    versionName: str
    versionType: str = "Confero"
    buildNumber: str = ""


#: Query parameters of the token endpoints.
TOKEN_QUERY = {"expire": "expireDate", "type": "type", "room": "roomId"}
