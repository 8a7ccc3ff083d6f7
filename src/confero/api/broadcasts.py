"""Broadcasts: stream records and rooms as main-track Broadcasts (Ant Media's paths).

Create, get, list (search, sort), count, update (only the fields given), delete, stop, subtracks,
statistics.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from confero import __version__
from confero.api.schemas import (
    LIST_QUERY,
    SUBTRACK_QUERY,
    AppBroadcastStatistics,
    BasicStreamInfo,
    BroadcastIn,
    BroadcastStatistics,
    Result,
    SimpleStat,
    Version,
    WebRTCClientStats,
    apply_broadcast,
    encoder,
)
from confero.broadcast_json import broadcast_from_record
from confero.domain.application import Application
from confero.errors import BadRequest, InvalidStreamId, MissingStreamId, NotFound
from confero.store import StreamRecord


def json_response(body: object, status: int = 200) -> web.Response:
    return web.Response(body=encoder.encode(body), status=status, content_type="application/json")


async def read_body(request: web.Request, type_: type[msgspec.Struct]) -> msgspec.Struct:
    """The body as `type_`; a field given as JSON `null` counts as absent (as in Ant Media)."""
    raw = await request.read()
    if not raw.strip():
        return type_()
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise BadRequest("the body is not JSON") from None
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if v is not None}
    try:
        return msgspec.convert(value, type=type_)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid body: {exc}") from None


def int_param(request: web.Request, name: str) -> int:
    try:
        value = int(request.match_info[name])
    except ValueError:
        raise BadRequest(f"{name} must be a whole number") from None
    if value < 0:
        raise BadRequest(f"{name} must not be negative")
    return value


async def create(request: web.Request, app: Application) -> web.Response:
    body = await read_body(request, BroadcastIn)
    assert isinstance(body, BroadcastIn)
    record = apply_broadcast(StreamRecord(stream_id=(body.streamId or "").strip()), body)
    try:
        record = await app.streams.create(record)
    except (InvalidStreamId, MissingStreamId):
        raise BadRequest("Stream id is not valid.") from None
    return json_response(broadcast_from_record(record))


async def get(request: web.Request, app: Application) -> web.Response:
    """A stream's Broadcast, or a room's (a main track, with its `subTrackStreamIds`)."""
    stream_id = request.match_info["stream_id"]
    record = await app.streams.broadcast(stream_id)
    if record is None:
        raise NotFound(f"stream {stream_id} does not exist")
    return json_response(broadcast_from_record(record, app.streams.viewer_count(stream_id)))


async def list_(request: web.Request, app: Application) -> web.Response:
    query = request.query
    records = await app.streams.records(
        int_param(request, "offset"),
        int_param(request, "size"),
        search=query.get(LIST_QUERY["search"], ""),
        sort_by=query.get(LIST_QUERY["sort"], ""),
        order=query.get(LIST_QUERY["order"], "asc").lower(),
    )
    type_by = query.get(LIST_QUERY["type"], "")
    return json_response(
        [
            broadcast_from_record(r, app.streams.viewer_count(r.stream_id))
            for r in records
            if not type_by or r.type == type_by
        ]
    )


async def count(request: web.Request, app: Application) -> web.Response:
    return json_response(SimpleStat(await app.streams.count(request.match_info.get("search", ""))))


async def update(request: web.Request, app: Application) -> web.Response:
    stream_id = request.match_info["stream_id"]
    body = await read_body(request, BroadcastIn)
    assert isinstance(body, BroadcastIn)
    record = await app.streams.record(stream_id)
    room = await app.rooms.record(stream_id)
    if record is None and room is None:
        raise NotFound(f"stream {stream_id} does not exist")
    if room is not None and (body.plannedStartDate is not None or body.plannedEndDate is not None):
        # a room's planned dates are its window
        await app.rooms.update(stream_id, body.plannedStartDate or 0, body.plannedEndDate or 0, "")
    if record is not None:
        await app.streams.save(apply_broadcast(record, body))
    return json_response(Result(True, dataId=stream_id))


async def delete(request: web.Request, app: Application) -> web.Response:
    stream_id = request.match_info["stream_id"]
    if not await app.streams.delete(stream_id):
        raise NotFound(f"stream {stream_id} does not exist")
    return json_response(Result(True, dataId=stream_id))


async def active_count(request: web.Request, app: Application) -> web.Response:
    return json_response(SimpleStat(len(app.streams)))


async def stop(request: web.Request, app: Application) -> web.Response:
    """POST /broadcasts/{id}/stop: a live stream (or every stream of a room) stops; the record stays."""
    stream_id = request.match_info["stream_id"]
    if not await app.streams.stop_broadcast(stream_id) and await app.streams.broadcast(stream_id) is None:
        raise NotFound(f"stream {stream_id} does not exist")
    return json_response(Result(True, dataId=stream_id))


async def add_subtrack(request: web.Request, app: Application) -> web.Response:
    room_id, stream_id = request.match_info["stream_id"], request.query.get(SUBTRACK_QUERY, "")
    await app.streams.add_subtrack(room_id, stream_id)
    return json_response(Result(True, dataId=room_id))


async def remove_subtrack(request: web.Request, app: Application) -> web.Response:
    room_id, stream_id = request.match_info["stream_id"], request.query.get(SUBTRACK_QUERY, "")
    await app.streams.remove_subtrack(room_id, stream_id)
    return json_response(Result(True, dataId=room_id))


async def statistics(request: web.Request, app: Application) -> web.Response:
    """One Broadcast's viewers (-1: unknown id, as Ant Media; HLS/RTMP/DASH are not served: 0)."""
    stream_id = request.match_info["stream_id"]
    if await app.streams.broadcast(stream_id) is None:
        return json_response(BroadcastStatistics(-1, -1, -1, -1))
    return json_response(BroadcastStatistics(0, 0, app.streams.viewer_count(stream_id), 0))


async def stream_info(request: web.Request, app: Application) -> web.Response:
    """The live stream's one layer (its size from the keyframes); [] when it is not streaming."""
    try:
        info = app.streams.info(request.match_info["stream_id"])
    except NotFound:
        return json_response([])
    codec = info.video_codec.upper() or None
    return json_response([BasicStreamInfo(info.height, info.width, info.video_bitrate, info.audio_bitrate, codec)])


async def total_statistics(request: web.Request, app: Application) -> web.Response:
    return json_response(AppBroadcastStatistics(-1, 0, app.streams.total_viewers(), 0, len(app.streams)))


async def client_stats(request: web.Request, app: Application) -> web.Response:
    """One entry per WebRTC player of the stream (Confero keeps no per-player send rates: 0)."""
    offset, size = int_param(request, "offset"), min(int_param(request, "size"), 50)
    players = app.streams.players(request.match_info["stream_id"])[offset : offset + size]
    return json_response([WebRTCClientStats(clientId=offset + i, clientInfo=p) for i, p in enumerate(players)])


async def version(request: web.Request, app: Application) -> web.Response:
    return json_response(Version(versionName=__version__))


async def send_data(request: web.Request, app: Application) -> web.Response:
    """POST /broadcasts/{id}/data: the raw body goes to the stream's data channels."""
    stream_id = request.match_info["stream_id"]
    body = await request.read()
    if not body:
        raise BadRequest("the message is empty")
    try:
        data: str | bytes = body.decode("utf-8")
    except UnicodeDecodeError:
        data = body
    count = await app.send_data(stream_id, data)
    return json_response(Result(True, message=f"delivered to {count} data channels", dataId=stream_id))
