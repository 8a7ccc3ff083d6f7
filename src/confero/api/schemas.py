"""Ant Media's REST JSON shapes (Broadcast, Result) and their mapping to store records.

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


class Broadcast(msgspec.Struct, kw_only=True):
    """Ant Media's Broadcast object (the fields Confero keeps; others default)."""

    streamId: str = ""
    status: str = "created"
    type: str = "liveStream"
    publishType: str = "WebRTC"
    name: str = ""
    description: str = ""
    publish: bool = True
    date: int = 0
    plannedStartDate: int = 0
    plannedEndDate: int = 0
    duration: int = 0
    publicStream: bool = True
    originAdress: str = ""
    mainTrackStreamId: str = ""
    subTrackStreamIds: list[str] = []
    metaData: str = ""
    role: str = ""
    webRTCViewerCount: int = 0
    hlsViewerCount: int = 0
    rtmpViewerCount: int = 0
    startTime: int = 0
    updateTime: int = 0
    webRTCViewerLimit: int = -1
    subtracksLimit: int = -1
    zombi: bool = False
    absoluteStartTimeMs: int = 0
    userAgent: str = "N/A"
    remoteIp: str = ""
    conferenceMode: str = ""
    virtual: bool = False


class BroadcastIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """What `POST /broadcasts/create` and `PUT /broadcasts/{id}` accept."""

    streamId: str = ""
    name: str = ""
    description: str = ""
    type: str = "liveStream"
    plannedStartDate: int = 0
    plannedEndDate: int = 0
    publicStream: bool = True
    metaData: str = ""
    role: str = ""
    mainTrackStreamId: str = ""
    subtracksLimit: int = -1
    webRTCViewerLimit: int = -1


def broadcast_from_record(record: StreamRecord, viewers: int = 0) -> Broadcast:
    return Broadcast(
        streamId=record.stream_id,
        status=record.status,
        type=record.type,
        publishType=record.publish_type,
        name=record.name,
        description=record.description,
        date=record.date,
        plannedStartDate=record.planned_start_date,
        plannedEndDate=record.planned_end_date,
        duration=record.duration,
        publicStream=record.public_stream,
        originAdress=record.origin_address,
        mainTrackStreamId=record.main_track_stream_id,
        subTrackStreamIds=list(record.sub_track_stream_ids),
        metaData=record.meta_data,
        role=record.role,
        webRTCViewerCount=viewers,
        startTime=record.start_time,
        updateTime=record.update_time,
        webRTCViewerLimit=record.webrtc_viewer_limit,
        subtracksLimit=record.subtracks_limit,
        zombi=record.zombi,
        absoluteStartTimeMs=record.absolute_start_time_ms,
        userAgent=record.user_agent,
        remoteIp=record.remote_ip,
    )


def apply_broadcast(record: StreamRecord, body: BroadcastIn) -> StreamRecord:
    record.name = body.name or record.name
    record.description = body.description
    record.type = body.type or record.type
    record.planned_start_date = body.plannedStartDate
    record.planned_end_date = body.plannedEndDate
    record.public_stream = body.publicStream
    record.meta_data = body.metaData
    record.role = body.role
    record.main_track_stream_id = body.mainTrackStreamId
    record.subtracks_limit = body.subtracksLimit
    record.webrtc_viewer_limit = body.webRTCViewerLimit
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


#: Query parameters of the token endpoints.
TOKEN_QUERY = {"expire": "expireDate", "type": "type", "room": "roomId"}
