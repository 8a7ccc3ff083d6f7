"""Access: who may publish, play, join a call or call REST in one application.

Publish and play tokens (one-time, stored) and JWT stream tokens (checked without a lookup),
the REST address filter and the application JWT. `authorize` decides and returns what to use up;
`consume` uses it up once the request is otherwise accepted, so a refused request never spends a
token.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from confero.auth import jwt, tokens
from confero.domain.ids import check_stream_id
from confero.errors import BadRequest, Forbidden, Unauthorized
from confero.settings import AppSettings
from confero.store import Store, TokenRecord


class Access:
    """Token, JWT and address rules of one application, over its store."""

    def __init__(self, app: str, settings: Callable[[], AppSettings], store: Store) -> None:
        self.app = app
        self._settings = settings
        self.store = store

    # -- publish, play and 1-1 calls -----------------------------------------------------------

    def controlled(self, type_: str) -> bool:
        s = self._settings()
        if type_ == "publish":
            return s.publishTokenControlEnabled or s.publishJwtControlEnabled
        return s.playTokenControlEnabled or s.playJwtControlEnabled

    async def authorize(self, type_: str, token: str | None, stream_id: str, stream_room: str) -> TokenRecord | None:
        """Check a publish/play token when the application asks for one.

        Returns the stored one-time token to consume once the request is accepted, or None when
        there is nothing to consume. Raises Unauthorized.
        """
        s = self._settings()
        token_on = s.publishTokenControlEnabled if type_ == "publish" else s.playTokenControlEnabled
        jwt_on = s.publishJwtControlEnabled if type_ == "publish" else s.playJwtControlEnabled
        if not token_on and not jwt_on:
            return None
        reasons: list[str] = []
        if token:
            if jwt_on:
                ok, why = jwt.check_stream_token(
                    s.jwtStreamSecretKey, token, type_=type_, stream_id=stream_id, stream_room=stream_room
                )
                if ok:
                    return None
                reasons.append(why)
            if token_on:
                record = await self.store.get_token(self.app, token)
                decision = tokens.check(record, type_=type_, stream_id=stream_id, stream_room=stream_room)
                if decision.allowed:
                    return record if decision.consume else None
                reasons.append(decision.reason)
        raise Unauthorized(f"{type_} of {stream_id} refused: {'; '.join(reasons) or 'a token is required'}")

    async def authorize_call(self, token: str | None, call_id: str) -> TokenRecord | None:
        """A 1-1 call: with token control on, a publish or play token for the call id admits."""
        controlled = [t for t in tokens.TYPES if self.controlled(t)]
        if not controlled:
            return None
        errors: list[Unauthorized] = []
        # Only a controlled type can admit: an uncontrolled one would let anyone in.
        for type_ in controlled:
            try:
                return await self.authorize(type_, token, call_id, "")
            except Unauthorized as exc:
                errors.append(exc)
        raise errors[0]

    async def consume(self, grant: TokenRecord | None) -> None:
        """Use up a one-time token; a second use racing this one loses."""
        if grant is not None and not await self.store.consume_token(self.app, grant.token_id):
            raise Unauthorized("the token was already used")

    # -- REST token endpoints --------------------------------------------------------------------

    @staticmethod
    def _check_token_request(stream_id: str, type_: str, expire_date: int) -> None:
        if type_ and type_ not in tokens.TYPES:
            raise BadRequest("Invalid token type. Supported types are 'play' and 'publish'")
        if not stream_id or not type_ or expire_date <= 0:
            raise BadRequest("Define Stream ID, Token Type and Expire Date (unix time)")
        check_stream_id(stream_id)

    async def issue_token(self, stream_id: str, type_: str, expire_date: int, room_id: str = "") -> TokenRecord:
        self._check_token_request(stream_id, type_, expire_date)
        record = TokenRecord(
            token_id=tokens.new_token_id(), stream_id=stream_id, expire_date=expire_date, type=type_, room_id=room_id
        )
        await self.store.save_token(self.app, record)
        return record

    def issue_jwt(self, stream_id: str, type_: str, expire_date: int, room_id: str = "") -> TokenRecord:
        self._check_token_request(stream_id, type_, expire_date)
        secret = self._settings().jwtStreamSecretKey
        if len(secret) < jwt.MIN_SECRET:
            raise BadRequest("jwtStreamSecretKey must be set to at least 32 characters")
        token = jwt.issue_stream_token(secret, stream_id, type_, expire_date, room_id)
        return TokenRecord(token_id=token, stream_id=stream_id, expire_date=expire_date, type=type_, room_id=room_id)

    async def validate_token(self, token_id: str, stream_id: str, type_: str, stream_room: str) -> bool:
        """REST validate-token: the same rules as a publish/play; a room-less token is used up."""
        record = await self.store.get_token(self.app, token_id)
        decision = tokens.check(record, type_=type_, stream_id=stream_id, stream_room=stream_room)
        if decision.allowed and decision.consume and record is not None:
            return await self.store.consume_token(self.app, record.token_id)
        return decision.allowed

    async def revoke_tokens(self, stream_id: str) -> int:
        return await self.store.delete_tokens_for_stream(self.app, stream_id)

    async def list_tokens(self, stream_id: str, offset: int, size: int) -> list[TokenRecord]:
        return await self.store.list_tokens(self.app, stream_id, offset, min(size, 50))

    # -- REST protection -------------------------------------------------------------------------

    def check_rest_access(self, remote: str, authorization: str) -> None:
        """The allowed networks (default loopback), then the application JWT."""
        s = self._settings()
        if s.ipFilterEnabled:
            try:
                address = ipaddress.ip_address(remote.split("%")[0])
            except ValueError:
                raise Forbidden("Not allowed IP") from None
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            networks = [ipaddress.ip_network(c, strict=False) for c in s.allowed_networks_text()]
            if not any(address.version == n.version and address in n for n in networks):
                raise Forbidden("Not allowed IP")
        if s.jwtControlEnabled:
            if not authorization:
                raise Unauthorized("Invalid App JWT Token: the Authorization header is missing")
            if not jwt.check_bearer(s.jwtSecretKey, authorization):
                raise Forbidden("Invalid App JWT Token")
