"""Errors that reach clients: each carries its Ant Media `definition` and an HTTP status.

The domain raises these; `signaling/handlers.py` turns them into `error` messages and
`api/routes.py` into REST replies: one mapping per transport.
"""

from __future__ import annotations


class ConferoError(Exception):
    """A refused request, in the protocol's own terms."""

    definition = "server_error_check_logs"
    status = 500

    def __init__(self, message: str = "", *, definition: str | None = None, status: int | None = None) -> None:
        super().__init__(message or (definition or self.definition))
        self.message = message
        if definition is not None:
            self.definition = definition
        if status is not None:
            self.status = status


class BadRequest(ConferoError):
    definition = "missingParameter"
    status = 400


class NotFound(ConferoError):
    definition = "no_stream_exist"
    status = 404


class Conflict(ConferoError):
    definition = "streamIdInUse"
    status = 409


class Unauthorized(ConferoError):
    definition = "unauthorized_access"
    status = 401


class Forbidden(ConferoError):
    definition = "unauthorized_access"
    status = 403
