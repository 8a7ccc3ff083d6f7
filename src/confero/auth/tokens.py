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
    if token.type != type_:
        return Decision(False, reason=f"a {token.type} token cannot {type_}")
    if now >= token.expire_date:
        return Decision(False, reason="the token has expired")
    if token.room_id:
        if type_ == "play" and stream_room == token.room_id:
            return Decision(True)
        if type_ == "publish" and token.stream_id == stream_id and stream_room == token.room_id:
            return Decision(True, consume=True)
        return Decision(False, reason=f"the token is for room {token.room_id}")
    if token.stream_id != stream_id:
        return Decision(False, reason="the token is for another stream")
    return Decision(True, consume=True)
