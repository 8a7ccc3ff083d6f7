"""JWT: stream tokens checked without any store lookup, and the REST API's bearer tokens (HS256)."""

from __future__ import annotations

import time

import jwt as pyjwt

from confero.auth.tokens import admits

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
    """Whether a JWT stream token admits the request, and why not (the rules of `tokens.admits`)."""
    claims = stream_claims(secret, token)
    if claims is None:
        return False, "invalid or expired JWT"
    decision = admits(
        token_type=claims.get("type"),
        token_stream=claims.get("streamId"),
        token_room=claims.get("roomId") or "",
        type_=type_,
        stream_id=stream_id,
        stream_room=stream_room,
    )
    return decision.allowed, decision.reason


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
