"""Application events as Ant Media's webhook actions: the only place their wire names live.

Ant Media Server 2.16.2 (`AntMediaApplicationAdapter`) has 14 actions. Confero sends the nine
that a WebRTC forwarding server has a cause for, with the body fields Ant Media puts in each
(`notifyHook`: id, action, streamName, category, vodName, vodId, mainTrackId, roomId,
subscriberId, app, metadata, timestamp; empty ones left out):

| action | when | id | mainTrackId / roomId |
|---|---|---|---|
| liveStreamStarted | a publish connected | stream | its room |
| liveStreamEnded | a started publish ended | stream | its room |
| subtrackAddedInTheMainTrack | a stream started in a room | stream | room |
| subtrackLeftTheMainTrack | a stream of a room ended | stream | room |
| firstActiveTrackAddedInMainTrack | the room's first live stream | stream | room |
| noActiveSubtracksLeftInMainTrack | the room's last live stream ended | room | - |
| playStarted | a play connected | stream (or room, for a room play) | - |
| playStopped | a started play ended | stream (or room) | - |
| publishTimeoutError | a publish did not connect in time | stream | its room |

Not sent (no cause in Confero): `vodReady` (no recording), `encoderNotOpenedError` (no
encoder: Confero forwards, never transcodes), `endpointFailed` (no RTMP/SRT re-streaming
endpoints), `idleTimeIsExpired` (no `maxIdleTime` on streams or rooms), `liveStreamStatus`
(the muxer's periodic figures: width, height, queue sizes, speed; off by default in Ant Media).

`Mapper` is stateful only for rooms: it counts each room's live streams to tell the first and
the last, and keeps the record of every started stream so that its end is reported with the
same name, metadata and hook URL even though the stream has left the registry by then.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confero.domain import observer
from confero.domain.observer import AppEvent
from confero.store import StreamRecord

LIVE_STREAM_STARTED = "liveStreamStarted"
LIVE_STREAM_ENDED = "liveStreamEnded"
SUBTRACK_ADDED = "subtrackAddedInTheMainTrack"
SUBTRACK_LEFT = "subtrackLeftTheMainTrack"
FIRST_ACTIVE_SUBTRACK = "firstActiveTrackAddedInMainTrack"
NO_ACTIVE_SUBTRACKS = "noActiveSubtracksLeftInMainTrack"
PLAY_STARTED = "playStarted"
PLAY_STOPPED = "playStopped"
PUBLISH_TIMEOUT_ERROR = "publishTimeoutError"

#: Ant Media's actions Confero has no cause for (see the module's docstring).
NOT_APPLICABLE = ("vodReady", "encoderNotOpenedError", "endpointFailed", "idleTimeIsExpired", "liveStreamStatus")

SENT = (
    LIVE_STREAM_STARTED,
    LIVE_STREAM_ENDED,
    SUBTRACK_ADDED,
    SUBTRACK_LEFT,
    FIRST_ACTIVE_SUBTRACK,
    NO_ACTIVE_SUBTRACKS,
    PLAY_STARTED,
    PLAY_STOPPED,
    PUBLISH_TIMEOUT_ERROR,
)

#: Looks up a live stream's record by id (None: not live, or not a stream).
RecordLookup = Callable[[str], StreamRecord | None]


@dataclass(frozen=True)
class Notice:
    """One webhook to send: its body's fields, and the record whose `listener_hook_url` wins."""

    action: str
    fields: dict[str, Any]
    record: StreamRecord | None

    def hook_url(self, app_url: str) -> str:
        """Ant Media's rule: the Broadcast's own listenerHookURL, else the application's."""
        own = self.record.listener_hook_url.strip() if self.record is not None else ""
        return own or app_url.strip()


def metadata_value(text: str) -> Any:
    """Ant Media sends metadata that parses as a JSON object as that object, else as text."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, dict) else text


def _fields(app: str, id_: str, action: str, timestamp_ms: int, **more: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"id": id_, "action": action}
    for key, value in more.items():
        if value is not None and str(value).strip():  # Ant Media's putToMap skips blank values
            out[key] = value
    out["app"] = app
    out["timestamp"] = str(timestamp_ms)  # a string, as in Ant Media
    return out


class Mapper:
    """Turns each application event into the Ant Media webhooks it stands for, in order."""

    def __init__(self, app: str, record_of: RecordLookup) -> None:
        self.app = app
        self.record_of = record_of
        self.active: dict[str, set[str]] = {}  # room -> its live streams
        self.started: dict[str, StreamRecord | None] = {}  # live stream -> its record

    def notices(self, event: AppEvent, timestamp_ms: int) -> list[Notice]:
        match event:
            case observer.StreamStarted(stream_id=sid, room=room):
                record = self.record_of(sid)
                self.started[sid] = record
                out = [self._stream(LIVE_STREAM_STARTED, sid, room, record, timestamp_ms)]
                if room:
                    live = self.active.setdefault(room, set())
                    live.add(sid)
                    out.append(self._stream(SUBTRACK_ADDED, sid, room, record, timestamp_ms))
                    if len(live) == 1:
                        out.append(self._first(sid, room, timestamp_ms))
                return out
            case observer.StreamEnded(stream_id=sid, room=room):
                record = self.started.pop(sid) if sid in self.started else self.record_of(sid)
                out = [self._stream(LIVE_STREAM_ENDED, sid, room, record, timestamp_ms)]
                if room:
                    live = self.active.get(room, set())
                    was_live = sid in live
                    live.discard(sid)
                    out.append(self._stream(SUBTRACK_LEFT, sid, room, record, timestamp_ms))
                    if was_live and not live:
                        self.active.pop(room, None)
                        out.append(self._last(room, timestamp_ms))
                return out
            case observer.PublishTimedOut(stream_id=sid, room=room):
                record = self.record_of(sid)
                name = record.name if record is not None else None
                fields = _fields(
                    self.app,
                    sid,
                    PUBLISH_TIMEOUT_ERROR,
                    timestamp_ms,
                    streamName=name,
                    mainTrackId=room,
                    roomId=room,
                    # Ant Media puts {"subscriberId": ...} in metadata; Confero has no subscriber id here.
                    metadata={"subscriberId": None},
                )
                return [Notice(PUBLISH_TIMEOUT_ERROR, fields, record)]
            case observer.PlayStarted(stream_id=sid) | observer.PlayEnded(stream_id=sid):
                action = PLAY_STARTED if isinstance(event, observer.PlayStarted) else PLAY_STOPPED
                record = self.record_of(sid) or self.started.get(sid)
                meta = metadata_value(record.meta_data) if record is not None else None
                return [Notice(action, _fields(self.app, sid, action, timestamp_ms, metadata=meta), record)]
            case _:
                return []

    def _stream(self, action: str, sid: str, room: str, record: StreamRecord | None, ts: int) -> Notice:
        name = record.name if record is not None else None
        meta = metadata_value(record.meta_data) if record is not None else None
        main = room or (record.main_track_stream_id if record is not None else "")
        fields = _fields(self.app, sid, action, ts, streamName=name, mainTrackId=main, roomId=main, metadata=meta)
        return Notice(action, fields, record)

    def _first(self, sid: str, room: str, ts: int) -> Notice:
        main = self.record_of(room)  # a room is a main-track Broadcast in Ant Media; rarely one here
        name = main.name if main is not None else None
        fields = _fields(self.app, sid, FIRST_ACTIVE_SUBTRACK, ts, streamName=name, mainTrackId=room, roomId=room)
        return Notice(FIRST_ACTIVE_SUBTRACK, fields, main)

    def _last(self, room: str, ts: int) -> Notice:
        main = self.record_of(room)
        name = main.name if main is not None else None
        return Notice(NO_ACTIVE_SUBTRACKS, _fields(self.app, room, NO_ACTIVE_SUBTRACKS, ts, streamName=name), main)

    def dump(self) -> dict[str, Any]:
        return {"rooms": {room: sorted(live) for room, live in self.active.items()}, "streams": sorted(self.started)}
