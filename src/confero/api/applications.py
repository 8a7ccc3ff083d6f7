"""Application settings over REST (`/rest/v2/applications/settings/{App}`, on the server root)."""

from __future__ import annotations

import msgspec
from aiohttp import web

from confero.api.broadcasts import json_response
from confero.api.schemas import Result
from confero.domain.application import Application
from confero.errors import BadRequest


async def get(request: web.Request, app: Application) -> web.Response:
    return json_response(app.settings_view())


async def update(request: web.Request, app: Application) -> web.Response:
    try:
        body = msgspec.json.decode(await request.read())
    except msgspec.DecodeError:
        raise BadRequest("the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object of settings")
    app.update_settings(body)
    return json_response(Result(True, dataId=app.name))
