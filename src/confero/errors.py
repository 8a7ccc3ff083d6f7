"""Why the domain refuses a request: one exception type per kind of refusal.

The types carry no wire terms. Each transport maps them once: `signaling/wire.py` to Ant Media's
`error` definitions, `api/routes.py` to HTTP statuses. The message is for people (the log, the
`information` field, the REST `message`).
"""

from __future__ import annotations


class ConferoError(Exception):
    """A refused request."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message or type(self).__name__)
        self.message = message


class BadRequest(ConferoError):
    """The request is incomplete or malformed."""


class MissingStreamId(BadRequest):
    """No stream id where one is needed."""


class InvalidStreamId(BadRequest):
    """A stream or room id with characters Ant Media does not allow."""


class NoRoomGiven(BadRequest):
    """A room command without a room."""


class UnregisteredStream(BadRequest):
    """The application publishes only streams created over REST first."""


class IdTaken(BadRequest):
    """REST create with an id that a stream or room already has (Ant Media answers 400)."""


class NotFound(ConferoError):
    """No such stream (or it is not streaming), room, track or record."""


class InUse(ConferoError):
    """The stream id is taken by another client."""


class AlreadyPublishing(InUse):
    """This connection already publishes this id."""


class AlreadyPlaying(InUse):
    """This connection already plays this id."""


class CallFull(InUse):
    """A 1-1 call that already has two peers."""


class RoomNotActive(ConferoError):
    """The room's validity window is not open (not yet, or any more)."""


class UnknownRoom(RoomNotActive):
    """`acceptOnlyRoomsInDataStore` is on and the room was not created over REST."""


class StreamNotActive(ConferoError):
    """The stream's planned start has not come yet, or its planned end has passed."""


class LimitReached(ConferoError):
    """A limit stored on a Broadcast is reached."""


class ViewerLimitReached(LimitReached):
    """The stream (or room) has as many WebRTC players as its `webRTCViewerLimit`."""


class SubtrackLimitReached(LimitReached):
    """The room (main track) has as many member streams as its `subtracksLimit`."""


class Unauthorized(ConferoError):
    """A token is missing, wrong, used up or expired."""


class Forbidden(ConferoError):
    """REST: the caller's address is not allowed, or its application JWT is wrong."""


class ShuttingDown(ConferoError):
    """The server is stopping (draining) and takes no new publish, play, room member or call."""


class NoPeer(ConferoError):
    """No peer connection, or no 1-1 partner, for this id on this connection."""


class OutOfOrder(ConferoError):
    """A negotiation step that does not fit the current state (an answer nobody asked for, ...)."""


__all__ = [
    "AlreadyPlaying",
    "AlreadyPublishing",
    "BadRequest",
    "CallFull",
    "ConferoError",
    "Forbidden",
    "IdTaken",
    "InUse",
    "InvalidStreamId",
    "LimitReached",
    "MissingStreamId",
    "NoPeer",
    "NoRoomGiven",
    "NotFound",
    "OutOfOrder",
    "RoomNotActive",
    "ShuttingDown",
    "StreamNotActive",
    "SubtrackLimitReached",
    "Unauthorized",
    "UnknownRoom",
    "UnregisteredStream",
    "ViewerLimitReached",
]
