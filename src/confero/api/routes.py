"""The REST route table, and the one place where refusals become REST replies."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from confero import errors
from confero.api import applications, broadcasts, rooms, tokens
from confero.api.schemas import Result, encoder
from confero.domain.application import Application
from confero.errors import ConferoError

logger = logging.getLogger(__name__)

AppHandler = Callable[[web.Request, Application], Awaitable[web.StreamResponse]]
APPLICATIONS = web.AppKey("applications", dict)


#: Refusal type -> HTTP status; the first match in this order wins (subclasses first).
STATUSES: tuple[tuple[type[ConferoError], int], ...] = (
    (errors.BadRequest, 400),
    (errors.NotFound, 404),
    (errors.InUse, 409),
    (errors.RoomNotActive, 403),
    (errors.StreamNotActive, 403),
    (errors.LimitReached, 400),
    (errors.Unauthorized, 401),
    (errors.Forbidden, 403),
    (errors.ShuttingDown, 503),
)


def status_of(exc: ConferoError) -> int:
    return next((status for type_, status in STATUSES if isinstance(exc, type_)), 500)


def refusal_response(exc: ConferoError) -> web.Response:
    return error_response(status_of(exc), exc.message or type(exc).__name__)


def error_response(status: int, message: str) -> web.Response:
    return web.Response(body=encoder.encode(Result(False, message)), status=status, content_type="application/json")


def bind(handler: AppHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Resolve {app}, run the handler, and map every refusal to a status and Result JSON."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        app = request.app[APPLICATIONS].get(request.match_info["app"])
        if app is None:
            return error_response(404, f"no application {request.match_info['app']!r}")
        try:
            return await handler(request, app)
        except ConferoError as exc:
            logger.info("%s %s refused: %s", request.method, request.path, exc)
            return refusal_response(exc)
        except Exception:
            logger.exception("%s %s failed", request.method, request.path)
            return error_response(500, "internal error, see the server log")

    return wrapped


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/rest/v2/applications/settings/{app}", bind(applications.get))
    router.add_post("/rest/v2/applications/settings/{app}", bind(applications.update))
    router.add_get("/{app}/rest/v2/version", bind(broadcasts.version))
    base = "/{app}/rest/v2/broadcasts"
    router.add_post(base + "/validate-token", bind(tokens.validate))
    router.add_post(base + "/{stream_id}/data", bind(broadcasts.send_data))
    router.add_get(base + "/{stream_id}/token", bind(tokens.issue))
    router.add_get(base + "/{stream_id}/jwt-token", bind(tokens.issue_jwt))
    router.add_delete(base + "/{stream_id}/tokens", bind(tokens.revoke))
    router.add_get(base + "/{stream_id}/tokens/list/{offset}/{size}", bind(tokens.list_))
    rooms_base = base + "/conference-rooms"
    router.add_post(rooms_base, bind(rooms.create))
    router.add_get(rooms_base + "/list/{offset}/{size}", bind(rooms.list_))
    router.add_get(rooms_base + "/{room_id}/room-info", bind(rooms.room_info))
    router.add_put(rooms_base + "/{room_id}/add", bind(rooms.add_stream))
    router.add_put(rooms_base + "/{room_id}/delete", bind(rooms.remove_stream))
    router.add_put(rooms_base + "/{room_id}/{stream_id}", bind(rooms.add_stream))
    router.add_delete(rooms_base + "/{room_id}/{stream_id}", bind(rooms.remove_stream))
    router.add_get(rooms_base + "/{room_id}", bind(rooms.get))
    router.add_put(rooms_base + "/{room_id}", bind(rooms.update))
    router.add_delete(rooms_base + "/{room_id}", bind(rooms.delete))
    router.add_post(base + "/{stream_id}/subtrack", bind(broadcasts.add_subtrack))
    router.add_delete(base + "/{stream_id}/subtrack", bind(broadcasts.remove_subtrack))
    router.add_post(base + "/{stream_id}/stop", bind(broadcasts.stop))
    router.add_get(base + "/{stream_id}/broadcast-statistics", bind(broadcasts.statistics))
    router.add_get(base + "/{stream_id}/stream-info", bind(broadcasts.stream_info))
    router.add_get(base + "/{stream_id}/webrtc-client-stats/{offset}/{size}", bind(broadcasts.client_stats))
    # Single-segment paths before /broadcasts/{stream_id}, which would take them as ids.
    router.add_post(base + "/create", bind(broadcasts.create))
    router.add_get(base + "/active-live-stream-count", bind(broadcasts.active_count))
    router.add_get(base + "/count", bind(broadcasts.count))
    router.add_get(base + "/count/{search}", bind(broadcasts.count))
    router.add_get(base + "/total-broadcast-statistics", bind(broadcasts.total_statistics))
    router.add_get(base + "/list/{offset}/{size}", bind(broadcasts.list_))
    router.add_get(base + "/{stream_id}", bind(broadcasts.get))
    router.add_put(base + "/{stream_id}", bind(broadcasts.update))
    router.add_delete(base + "/{stream_id}", bind(broadcasts.delete))
