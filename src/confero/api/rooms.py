"""Conference rooms: create with a validity window, get, list, update, delete, room info, members."""

from __future__ import annotations

from aiohttp import web

from confero.api.broadcasts import int_param, json_response, read_body
from confero.api.schemas import STREAM_ID_QUERY, ConferenceRoom, Result, RoomInfo, record_from_room, room_from_record
from confero.domain.application import Application
from confero.errors import BadRequest, NotFound

MODES = ("legacy", "mcu", "amcu", "multitrack")


async def room_body(request: web.Request) -> ConferenceRoom:
    body = await read_body(request, ConferenceRoom)
    assert isinstance(body, ConferenceRoom)
    if body.startDate < 0 or body.endDate < 0:
        raise BadRequest("startDate and endDate are Unix seconds, not negative")
    if body.mode and body.mode not in MODES:
        raise BadRequest(f"mode must be one of {', '.join(MODES)}")
    return body


async def create(request: web.Request, app: Application) -> web.Response:
    body = await room_body(request)
    record = await app.rooms.create(record_from_room(body))
    return json_response(room_from_record(record))


async def get(request: web.Request, app: Application) -> web.Response:
    room_id = request.match_info["room_id"]
    record = await app.rooms.record(room_id)
    if record is None:
        raise NotFound(f"room {room_id} does not exist")
    return json_response(room_from_record(record))


async def list_(request: web.Request, app: Application) -> web.Response:
    records = await app.rooms.records(int_param(request, "offset"), int_param(request, "size"))
    return json_response([room_from_record(r) for r in records])


async def update(request: web.Request, app: Application) -> web.Response:
    body = await room_body(request)
    record = await app.rooms.update(request.match_info["room_id"], body.startDate, body.endDate, body.mode)
    return json_response(room_from_record(record))


async def delete(request: web.Request, app: Application) -> web.Response:
    room_id = request.match_info["room_id"]
    if not await app.rooms.delete(room_id):
        raise NotFound(f"room {room_id} does not exist")
    return json_response(Result(True, dataId=room_id))


async def room_info(request: web.Request, app: Application) -> web.Response:
    room_id = request.match_info["room_id"]
    record = await app.rooms.record(room_id)
    streams = app.rooms.summaries(room_id, exclude=request.query.get(STREAM_ID_QUERY, ""))
    return json_response(
        RoomInfo(
            roomId=room_id,
            streamDetailsMap={s.stream_id: s.name for s in streams} if record else None,
            startDate=record.start_date if record else 0,
            endDate=record.end_date if record else 0,
        )
    )


def _stream_id(request: web.Request) -> str:
    return request.match_info.get("stream_id") or request.query.get(STREAM_ID_QUERY, "")


async def add_stream(request: web.Request, app: Application) -> web.Response:
    room_id = request.match_info["room_id"]
    if not await app.rooms.set_stream(room_id, _stream_id(request), present=True):
        raise NotFound(f"room {room_id} does not exist")
    return json_response(Result(True, dataId=room_id))


async def remove_stream(request: web.Request, app: Application) -> web.Response:
    room_id = request.match_info["room_id"]
    if not await app.rooms.set_stream(room_id, _stream_id(request), present=False):
        raise NotFound(f"room {room_id} does not exist")
    return json_response(Result(True, dataId=room_id))
