"""One-time stream tokens: issue them, and decide whether one admits a publish or a play.

The rules (docs/security.md): the type must match and the token must not have expired. A token
without a room admits only its own stream, once (the caller consumes it after the request is
accepted). A play token bound to a room admits, until it expires, the room itself (the
multitrack room play) and the streams of that room, and nothing outside the room.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Protocol

TYPES = ("publish", "play")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    consume: bool = False
    reason: str = ""


class Token(Protocol):
    """What a stored token carries (the store's TokenRecord has these fields)."""

    stream_id: str
    type: str
    expire_date: int
    room_id: str


def new_token_id() -> str:
    return secrets.token_urlsafe(24)


def admits(
    *,
    token_type: object,
    token_stream: object,
    token_room: object,
    type_: str,
    stream_id: str,
    stream_room: str = "",
    expired: bool = False,
) -> Decision:
    """The rules both kinds of token follow (one-time tokens here, JWT stream tokens in `jwt`).

    `token_*` are what the token carries (a JWT's claims need not be strings, so they are
    compared as they are); `expired` is the caller's, since a one-time token stores its expiry
    and a JWT's is checked with its signature. `consume` says whether a one-time token is used
    up by the request; a JWT is never consumed.
    """
    if token_type != type_:
        return Decision(False, reason=f"a {token_type} token cannot {type_}")
    if expired:
        return Decision(False, reason="the token has expired")
    if token_room:
        if type_ == "play" and stream_room == token_room:
            return Decision(True)
        if type_ == "publish" and token_stream == stream_id and stream_room == token_room:
            return Decision(True, consume=True)
        return Decision(False, reason=f"the token is for room {token_room}")
    if token_stream != stream_id:
        return Decision(False, reason="the token is for another stream")
    return Decision(True, consume=True)


def check(
    token: Token | None,
    *,
    type_: str,
    stream_id: str,
    stream_room: str = "",
    now: float | None = None,
) -> Decision:
    """Whether `token` admits a `type_` request for `stream_id` (a member of `stream_room`).

    `stream_room` is the room the requested stream belongs to; for a room play the requested
    stream id is the room itself and `stream_room` equals it.
    """
    now = time.time() if now is None else now
    if token is None:
        return Decision(False, reason="no such token")
    return admits(
        token_type=token.type,
        token_stream=token.stream_id,
        token_room=token.room_id,
        type_=type_,
        stream_id=stream_id,
        stream_room=stream_room,
        expired=now >= token.expire_date,
    )
