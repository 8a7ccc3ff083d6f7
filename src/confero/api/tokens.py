"""Stream tokens over REST: issue (one-time or JWT), validate, list and revoke."""

from __future__ import annotations

from aiohttp import web

from confero.api.broadcasts import int_param, json_response, read_body
from confero.api.schemas import TOKEN_QUERY, Result, Token, token_from_record
from confero.domain.application import Application
from confero.errors import BadRequest


def _query(request: web.Request) -> tuple[str, str, int, str]:
    raw_expire = request.query.get(TOKEN_QUERY["expire"], "0")
    try:
        expire = int(raw_expire)
    except ValueError:
        raise BadRequest("Define Stream ID, Token Type and Expire Date (unix time)") from None
    return (
        request.match_info["stream_id"],
        request.query.get(TOKEN_QUERY["type"], ""),
        expire,
        request.query.get(TOKEN_QUERY["room"], ""),
    )


async def issue(request: web.Request, app: Application) -> web.Response:
    stream_id, type_, expire, room = _query(request)
    return json_response(token_from_record(await app.access.issue_token(stream_id, type_, expire, room)))


async def issue_jwt(request: web.Request, app: Application) -> web.Response:
    stream_id, type_, expire, room = _query(request)
    return json_response(token_from_record(app.access.issue_jwt(stream_id, type_, expire, room)))


async def validate(request: web.Request, app: Application) -> web.Response:
    body = await read_body(request, Token)
    assert isinstance(body, Token)
    if not body.tokenId:
        raise BadRequest("tokenId is missing")
    ok = await app.validate_token(body.tokenId, body.streamId, body.type, body.roomId)
    return json_response(Result(ok, dataId=body.tokenId if ok else ""))


async def revoke(request: web.Request, app: Application) -> web.Response:
    stream_id = request.match_info["stream_id"]
    count = await app.access.revoke_tokens(stream_id)
    return json_response(Result(True, message=f"{count} tokens revoked", dataId=stream_id))


async def list_(request: web.Request, app: Application) -> web.Response:
    records = await app.access.list_tokens(
        request.match_info["stream_id"], int_param(request, "offset"), int_param(request, "size")
    )
    return json_response([token_from_record(r) for r in records])
