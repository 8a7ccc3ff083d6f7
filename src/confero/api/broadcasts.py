"""Broadcasts: create, get, list, update and delete stream records (Ant Media's paths)."""

from __future__ import annotations

import msgspec
from aiohttp import web

from confero.api.schemas import BroadcastIn, Result, apply_broadcast, broadcast_from_record, encoder
from confero.domain.application import Application
from confero.errors import BadRequest, InvalidStreamId, MissingStreamId, NotFound
from confero.store import StreamRecord


def json_response(body: object, status: int = 200) -> web.Response:
    return web.Response(body=encoder.encode(body), status=status, content_type="application/json")


async def read_body(request: web.Request, type_: type[msgspec.Struct]) -> msgspec.Struct:
    raw = await request.read()
    if not raw.strip():
        return type_()
    try:
        return msgspec.json.decode(raw, type=type_)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid body: {exc}") from None
    except msgspec.DecodeError:
        raise BadRequest("the body is not JSON") from None


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
    record = apply_broadcast(StreamRecord(stream_id=body.streamId.strip()), body)
    try:
        record = await app.streams.create(record)
    except (InvalidStreamId, MissingStreamId):
        raise BadRequest("Stream id is not valid.") from None
    return json_response(broadcast_from_record(record))


async def get(request: web.Request, app: Application) -> web.Response:
    stream_id = request.match_info["stream_id"]
    record = await app.streams.record(stream_id)
    if record is None:
        raise NotFound(f"stream {stream_id} does not exist")
    return json_response(broadcast_from_record(record, app.streams.viewer_count(stream_id)))


async def list_(request: web.Request, app: Application) -> web.Response:
    records = await app.streams.records(int_param(request, "offset"), int_param(request, "size"))
    return json_response([broadcast_from_record(r, app.streams.viewer_count(r.stream_id)) for r in records])


async def update(request: web.Request, app: Application) -> web.Response:
    stream_id = request.match_info["stream_id"]
    body = await read_body(request, BroadcastIn)
    assert isinstance(body, BroadcastIn)
    record = await app.streams.record(stream_id)
    if record is None:
        raise NotFound(f"stream {stream_id} does not exist")
    await app.streams.save(apply_broadcast(record, body))
    return json_response(Result(True, dataId=stream_id))


async def delete(request: web.Request, app: Application) -> web.Response:
    stream_id = request.match_info["stream_id"]
    if not await app.streams.delete(stream_id):
        raise NotFound(f"stream {stream_id} does not exist")
    return json_response(Result(True, dataId=stream_id))


async def active_count(request: web.Request, app: Application) -> web.Response:
    return json_response({"number": len(app.streams)})


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
