"""Ant Media's Broadcast JSON: the one shape both transports carry.

REST bodies (`GET /broadcasts/{id}`, lists) are Broadcasts, and so are the strings the WebSocket
puts in `broadcastObject` and `subtrackList`; one definition serves `api/schemas.py` and
`signaling/wire.py`, so the two cannot drift apart.
"""

from __future__ import annotations

import msgspec

from confero.store import StreamRecord

__all__ = ["Broadcast", "broadcast_from_record", "broadcast_json"]


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
    metaData: str | None = None  # Ant Media: null when none (pages JSON.parse it when present)
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
    listenerHookURL: str = ""


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
        metaData=record.meta_data or None,
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
        virtual=bool(record.sub_track_stream_ids),
        listenerHookURL=record.listener_hook_url,
    )


_encoder = msgspec.json.Encoder()


def broadcast_json(record: StreamRecord, viewers: int = 0) -> str:
    """A stream's (or a room's) record as a Broadcast JSON string (`broadcastObject`, `subtrackList`)."""
    return _encoder.encode(broadcast_from_record(record, viewers)).decode()
