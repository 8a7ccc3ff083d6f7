"""REST protection: every /rest request passes its application's address and JWT checks first.

The WebSocket endpoint and the pages are public; only REST paths are guarded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from aiohttp.typedefs import Middleware

from confero.domain.application import Application
from confero.errors import ConferoError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def rest_application(path: str) -> str | None:
    """The application a REST path belongs to: /{App}/rest/... or /rest/v2/applications/.../{App}."""
    parts = path.strip("/").split("/")
    if len(parts) >= 2 and parts[1] == "rest":
        return parts[0]
    if len(parts) >= 5 and parts[:3] == ["rest", "v2", "applications"]:
        return parts[-1]
    return None


def rest_guard(
    applications: Mapping[str, Application], refusal_response: Callable[[ConferoError], web.Response]
) -> Middleware:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        name = rest_application(request.path)
        app = applications.get(name) if name is not None else None
        if app is not None:
            try:
                app.access.check_rest_access(request.remote or "", request.headers.get("Authorization", ""))
            except ConferoError as exc:
                return refusal_response(exc)
        return await handler(request)

    return guard
