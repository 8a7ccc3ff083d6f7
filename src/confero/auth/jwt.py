"""JWT: stream tokens checked without any store lookup, and the REST API's bearer tokens (HS256)."""

from __future__ import annotations

import time

import jwt as pyjwt

ALGORITHM = "HS256"
MIN_SECRET = 32


def issue_stream_token(secret: str, stream_id: str, type_: str, expire_date: int, room_id: str = "") -> str:
    claims: dict[str, object] = {"streamId": stream_id, "type": type_, "exp": int(expire_date), "iat": int(time.time())}
    if room_id:
        claims["roomId"] = room_id
    return pyjwt.encode(claims, secret, algorithm=ALGORITHM)


def stream_claims(secret: str, token: str) -> dict[str, object] | None:
    """The claims of a valid, unexpired stream token signed with `secret`, else None."""
    if not secret or not token:
        return None
    try:
        claims = pyjwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["exp"]})
    except pyjwt.PyJWTError:
        return None
    return claims if isinstance(claims, dict) else None


def check_stream_token(
    secret: str, token: str, *, type_: str, stream_id: str, stream_room: str = ""
) -> tuple[bool, str]:
    claims = stream_claims(secret, token)
    if claims is None:
        return False, "invalid or expired JWT"
    if claims.get("type") != type_:
        return False, f"a {claims.get('type')} token cannot {type_}"
    room = claims.get("roomId") or ""
    if room:
        if type_ == "play" and stream_room == room:
            return True, ""
        if type_ == "publish" and claims.get("streamId") == stream_id and stream_room == room:
            return True, ""
        return False, f"the token is for room {room}"
    if claims.get("streamId") != stream_id:
        return False, "the token is for another stream"
    return True, ""


def check_bearer(secret: str, header: str) -> bool:
    """`Authorization: <jwt>` or `Authorization: Bearer <jwt>` signed with `secret` (no claims required)."""
    token = header.strip()
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    if not secret or not token:
        return False
    try:
        pyjwt.decode(token, secret, algorithms=[ALGORITHM], options={"verify_exp": True})
    except pyjwt.PyJWTError:
        return False
    return True
