"""Table tests of the stream-token rules (confero.auth.tokens) and JWTs (confero.auth.jwt).

The rules (docs/security.md): the type must match and the token must not have expired (valid
while now < expireDate); a room-less token admits only its own stream, once; a play token bound
to a room admits, until it expires, the room itself and the streams of that room, and nothing
outside it. JWT stream tokens carry the same claims and the same rules (confero.auth.tokens.admits)
and are checked with the secret alone; the REST bearer JWT needs only a valid HS256 signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import jwt as pyjwt
import pytest

from confero.api.routes import status_of
from confero.auth import jwt, tokens
from confero.domain.access import Access
from confero.errors import Forbidden, Unauthorized
from confero.settings import Settings

NOW = 1_000_000.0
EXP = 1_000_100


@dataclass
class Tok:
    stream_id: str
    type: str
    expire_date: int
    room_id: str = ""


# -- confero.auth.tokens.check -----------------------------------------------------------------

#   (case id, token, request type, requested stream, room of the requested stream, now,
#    expected allowed, expected consume)
CHECK_CASES = [
    # room-less tokens: own stream only, once
    ("publish ok", Tok("s1", "publish", EXP), "publish", "s1", "", NOW, True, True),
    ("play ok", Tok("s1", "play", EXP), "play", "s1", "", NOW, True, True),
    ("room-less token for a member stream", Tok("s1", "play", EXP), "play", "s1", "r1", NOW, True, True),
    ("room-less publish into a room", Tok("s1", "publish", EXP), "publish", "s1", "r1", NOW, True, True),
    # expiry boundary: valid strictly before expireDate
    ("just before expiry", Tok("s1", "publish", EXP), "publish", "s1", "", EXP - 0.001, True, True),
    ("at expiry", Tok("s1", "publish", EXP), "publish", "s1", "", float(EXP), False, False),
    ("after expiry", Tok("s1", "publish", EXP), "publish", "s1", "", EXP + 1.0, False, False),
    ("long expired", Tok("s1", "play", 5), "play", "s1", "", NOW, False, False),
    # wrong type
    ("play token to publish", Tok("s1", "play", EXP), "publish", "s1", "", NOW, False, False),
    ("publish token to play", Tok("s1", "publish", EXP), "play", "s1", "", NOW, False, False),
    ("unknown token type", Tok("s1", "admin", EXP), "play", "s1", "", NOW, False, False),
    # wrong stream
    ("publish other stream", Tok("s1", "publish", EXP), "publish", "s2", "", NOW, False, False),
    ("play other stream", Tok("s1", "play", EXP), "play", "s2", "", NOW, False, False),
    ("stream id prefix", Tok("s1", "play", EXP), "play", "s10", "", NOW, False, False),
    ("stream id case", Tok("s1", "play", EXP), "play", "S1", "", NOW, False, False),
    # room-bound play: the room's streams and the room itself, reusable, nothing outside
    ("room play of a member stream", Tok("r1", "play", EXP, "r1"), "play", "a", "r1", NOW, True, False),
    ("room play of the room itself", Tok("r1", "play", EXP, "r1"), "play", "r1", "r1", NOW, True, False),
    ("room token naming another stream", Tok("x", "play", EXP, "r1"), "play", "a", "r1", NOW, True, False),
    ("room play, stream of another room", Tok("r1", "play", EXP, "r1"), "play", "c", "r2", NOW, False, False),
    ("room play of another room", Tok("r1", "play", EXP, "r1"), "play", "r2", "r2", NOW, False, False),
    ("room play, stream in no room", Tok("r1", "play", EXP, "r1"), "play", "lone", "", NOW, False, False),
    ("room play, its own stream outside the room", Tok("s1", "play", EXP, "r1"), "play", "s1", "", NOW, False, False),
    ("room play expired", Tok("r1", "play", EXP, "r1"), "play", "a", "r1", float(EXP), False, False),
    ("room play token to publish", Tok("a", "play", EXP, "r1"), "publish", "a", "r1", NOW, False, False),
    # room-bound publish: its own stream, in its own room, once
    ("room publish ok", Tok("a", "publish", EXP, "r1"), "publish", "a", "r1", NOW, True, True),
    ("room publish, other stream", Tok("a", "publish", EXP, "r1"), "publish", "b", "r1", NOW, False, False),
    ("room publish, other room", Tok("a", "publish", EXP, "r1"), "publish", "a", "r2", NOW, False, False),
    ("room publish, no room", Tok("a", "publish", EXP, "r1"), "publish", "a", "", NOW, False, False),
    ("room publish token to play", Tok("a", "publish", EXP, "r1"), "play", "a", "r1", NOW, False, False),
]


@pytest.mark.parametrize(
    "token,type_,stream_id,stream_room,now,allowed,consume",
    [c[1:] for c in CHECK_CASES],
    ids=[c[0] for c in CHECK_CASES],
)
def test_check(
    token: Tok, type_: str, stream_id: str, stream_room: str, now: float, allowed: bool, consume: bool
) -> None:
    decision = tokens.check(token, type_=type_, stream_id=stream_id, stream_room=stream_room, now=now)
    assert decision.allowed is allowed
    assert decision.consume is consume
    if allowed:
        assert decision.reason == ""
    else:
        assert decision.reason  # every refusal says why (logged)


@pytest.mark.parametrize("type_", tokens.TYPES)
def test_check_without_token(type_: str) -> None:
    decision = tokens.check(None, type_=type_, stream_id="s1", now=NOW)
    assert not decision.allowed and not decision.consume and decision.reason


def test_check_defaults_to_the_clock() -> None:
    now = time.time()
    assert tokens.check(Tok("s1", "play", int(now) + 60), type_="play", stream_id="s1").allowed
    assert not tokens.check(Tok("s1", "play", int(now) - 1), type_="play", stream_id="s1").allowed


def test_new_token_ids_are_unguessable() -> None:
    ids = {tokens.new_token_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) >= 32 for i in ids)


# -- confero.auth.jwt: stream tokens -----------------------------------------------------------

SECRET = "stream-secret-" + "x" * 50  # 64 characters: no key-length warnings, even for HS512
OTHER = "other-secret-" + "y" * 51


class _Clock:
    """Freezes PyJWT's notion of now (it reads datetime.now)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = time.time()
        clock = self

        class Frozen(datetime):
            @classmethod
            def now(cls, tz=None):  # type: ignore[override]
                return datetime.fromtimestamp(clock.now, tz or UTC)

        monkeypatch.setattr(pyjwt.api_jwt, "datetime", Frozen)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    return _Clock(monkeypatch)


def future(seconds: int = 3600) -> int:
    return int(time.time()) + seconds


def unverified(token: str) -> dict:
    return pyjwt.decode(token, options={"verify_signature": False})


def test_issue_stream_token_claims() -> None:
    exp = future()
    token = jwt.issue_stream_token(SECRET, "s1", "publish", exp)
    assert pyjwt.get_unverified_header(token)["alg"] == "HS256"
    claims = unverified(token)
    assert claims["streamId"] == "s1" and claims["type"] == "publish" and claims["exp"] == exp
    assert "roomId" not in claims
    room_token = jwt.issue_stream_token(SECRET, "r1", "play", exp, "r1")
    assert unverified(room_token)["roomId"] == "r1"
    assert jwt.stream_claims(SECRET, room_token)["roomId"] == "r1"  # type: ignore[index]


#   (case id, issued (stream, type, room), request type, requested stream, its room, expected)
JWT_CASES = [
    ("publish ok", ("s1", "publish", ""), "publish", "s1", "", True),
    ("play ok", ("s1", "play", ""), "play", "s1", "", True),
    ("room-less token for a member stream", ("s1", "play", ""), "play", "s1", "r1", True),
    ("play token to publish", ("s1", "play", ""), "publish", "s1", "", False),
    ("publish token to play", ("s1", "publish", ""), "play", "s1", "", False),
    ("other stream", ("s1", "publish", ""), "publish", "s2", "", False),
    ("room play, member stream", ("r1", "play", "r1"), "play", "a", "r1", True),
    ("room play, the room itself", ("r1", "play", "r1"), "play", "r1", "r1", True),
    ("room play, another room's stream", ("r1", "play", "r1"), "play", "c", "r2", False),
    ("room play, another room", ("r1", "play", "r1"), "play", "r2", "r2", False),
    ("room play, stream in no room", ("r1", "play", "r1"), "play", "lone", "", False),
    ("room publish ok", ("a", "publish", "r1"), "publish", "a", "r1", True),
    ("room publish, other stream", ("a", "publish", "r1"), "publish", "b", "r1", False),
    ("room publish, other room", ("a", "publish", "r1"), "publish", "a", "r2", False),
    ("room publish, no room", ("a", "publish", "r1"), "publish", "a", "", False),
]


@pytest.mark.parametrize(
    "issued,type_,stream_id,stream_room,expected", [c[1:] for c in JWT_CASES], ids=[c[0] for c in JWT_CASES]
)
def test_check_stream_token(
    issued: tuple[str, str, str], type_: str, stream_id: str, stream_room: str, expected: bool
) -> None:
    sid, typ, room = issued
    token = jwt.issue_stream_token(SECRET, sid, typ, future(), room)
    ok, why = jwt.check_stream_token(SECRET, token, type_=type_, stream_id=stream_id, stream_room=stream_room)
    assert ok is expected
    assert (why == "") is expected


@pytest.mark.parametrize(
    "token,type_,stream_id,stream_room",
    [c[1:5] for c in CHECK_CASES if c[5] < c[1].expire_date],
    ids=[c[0] for c in CHECK_CASES if c[5] < c[1].expire_date],
)
def test_jwt_and_one_time_tokens_follow_the_same_rules(
    token: Tok, type_: str, stream_id: str, stream_room: str
) -> None:
    """A JWT carrying a one-time token's fields admits exactly what that token admits."""
    one_time = tokens.check(token, type_=type_, stream_id=stream_id, stream_room=stream_room, now=NOW)
    signed = jwt.issue_stream_token(SECRET, token.stream_id, token.type, future(), token.room_id)
    assert jwt.check_stream_token(SECRET, signed, type_=type_, stream_id=stream_id, stream_room=stream_room) == (
        one_time.allowed,
        one_time.reason,
    )


def test_jwt_claims_are_compared_as_they_are() -> None:
    """A numeric streamId claim is not the stream id spelled with the same digits."""
    token = _forge({"streamId": 5, "type": "play", "exp": future()}, SECRET)
    assert jwt.check_stream_token(SECRET, token, type_="play", stream_id="5") == (
        False,
        "the token is for another stream",
    )


def test_stream_token_expiry_boundary(clock: _Clock) -> None:
    exp = future(100)
    token = jwt.issue_stream_token(SECRET, "s1", "play", exp)
    clock.now = exp - 0.5
    assert jwt.check_stream_token(SECRET, token, type_="play", stream_id="s1")[0]
    clock.now = float(exp)
    assert not jwt.check_stream_token(SECRET, token, type_="play", stream_id="s1")[0]
    clock.now = exp + 1.0
    assert jwt.stream_claims(SECRET, token) is None


def test_stream_token_already_expired() -> None:
    token = jwt.issue_stream_token(SECRET, "s1", "publish", int(time.time()) - 1)
    assert jwt.check_stream_token(SECRET, token, type_="publish", stream_id="s1") == (False, "invalid or expired JWT")


def _forge(claims: dict, secret: str = OTHER, algorithm: str = "HS256") -> str:
    return pyjwt.encode(claims, secret, algorithm=algorithm)


def _tamper(token: str, **changes: object) -> str:
    """Change claims but keep the original signature."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    raw = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{raw}.{signature}"


def _part(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _alg_none(claims: dict) -> str:
    return f"{_part(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{_part(json.dumps(claims).encode())}."


def _empty_key_hs256(claims: dict) -> str:
    """A well-formed HS256 token signed with the empty key (PyJWT refuses to make one)."""
    signing_input = f"{_part(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{_part(json.dumps(claims).encode())}"
    signature = hmac.new(b"", signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_part(signature)}"


def _claims(**extra: object) -> dict:
    return {"streamId": "s1", "type": "publish", "exp": future(), **extra}


BAD_STREAM_TOKENS = {
    "signed with another secret": lambda: _forge(_claims()),
    "tampered stream id": lambda: _tamper(jwt.issue_stream_token(SECRET, "s0", "publish", future()), streamId="s1"),
    "tampered type": lambda: _tamper(jwt.issue_stream_token(SECRET, "s1", "play", future()), type="publish"),
    "tampered expiry": lambda: _tamper(
        jwt.issue_stream_token(SECRET, "s1", "publish", int(time.time()) - 10), exp=future()
    ),
    "truncated signature": lambda: jwt.issue_stream_token(SECRET, "s1", "publish", future())[:-4],
    "alg none": lambda: _alg_none(_claims()),
    "alg none via pyjwt": lambda: pyjwt.encode(_claims(), None, algorithm="none"),
    "HS512 with the right secret": lambda: _forge(_claims(), SECRET, "HS512"),
    "missing exp": lambda: _forge({"streamId": "s1", "type": "publish"}, SECRET),
    "exp not a number": lambda: _forge({"streamId": "s1", "type": "publish", "exp": "soon"}, SECRET),
    "not a JWT": lambda: "not-a-jwt",
    "a one-time token id": lambda: tokens.new_token_id(),
    "empty": lambda: "",
}


@pytest.mark.parametrize("make", BAD_STREAM_TOKENS.values(), ids=BAD_STREAM_TOKENS.keys())
def test_forged_stream_tokens_are_refused(make) -> None:  # type: ignore[no-untyped-def]
    token = make()
    assert jwt.stream_claims(SECRET, token) is None
    assert jwt.check_stream_token(SECRET, token, type_="publish", stream_id="s1") == (False, "invalid or expired JWT")


def test_stream_token_wrong_or_missing_secret() -> None:
    token = jwt.issue_stream_token(SECRET, "s1", "publish", future())
    assert jwt.check_stream_token(SECRET, token, type_="publish", stream_id="s1")[0]
    assert not jwt.check_stream_token(OTHER, token, type_="publish", stream_id="s1")[0]
    assert not jwt.check_stream_token(SECRET[:-1], token, type_="publish", stream_id="s1")[0]
    assert not jwt.check_stream_token("", token, type_="publish", stream_id="s1")[0]
    # even a token signed with the empty key is refused when no secret is configured
    unsigned = _empty_key_hs256(_claims())
    assert not jwt.check_stream_token("", unsigned, type_="publish", stream_id="s1")[0]


# -- confero.auth.jwt: REST bearer -------------------------------------------------------------


def test_bearer_accepts_plain_and_bearer_prefix() -> None:
    token = pyjwt.encode({"sub": "admin"}, SECRET, algorithm="HS256")
    assert jwt.check_bearer(SECRET, token)
    assert jwt.check_bearer(SECRET, f"Bearer {token}")
    assert jwt.check_bearer(SECRET, f"bearer {token}")
    assert jwt.check_bearer(SECRET, f"  BEARER   {token}  ")


def test_bearer_needs_no_claims_but_honours_exp(clock: _Clock) -> None:
    assert jwt.check_bearer(SECRET, pyjwt.encode({}, SECRET, algorithm="HS256"))
    exp = future(100)
    token = pyjwt.encode({"exp": exp}, SECRET, algorithm="HS256")
    clock.now = exp - 0.5
    assert jwt.check_bearer(SECRET, f"Bearer {token}")
    clock.now = float(exp)
    assert not jwt.check_bearer(SECRET, f"Bearer {token}")


BAD_BEARERS = {
    "empty": lambda: "",
    "prefix only": lambda: "Bearer ",
    "other scheme": lambda: "Basic " + base64.b64encode(b"admin:admin").decode(),
    "wrong secret": lambda: pyjwt.encode({"sub": "admin"}, OTHER, algorithm="HS256"),
    "wrong secret, Bearer": lambda: "Bearer " + pyjwt.encode({"sub": "admin"}, OTHER, algorithm="HS256"),
    "tampered": lambda: _tamper(pyjwt.encode({"sub": "user"}, SECRET, algorithm="HS256"), sub="admin"),
    "alg none": lambda: _alg_none({"sub": "admin"}),
    "alg none, Bearer": lambda: "Bearer " + _alg_none({"sub": "admin"}),
    "HS384 with the right secret": lambda: pyjwt.encode({"sub": "admin"}, SECRET, algorithm="HS384"),
    "expired": lambda: pyjwt.encode({"exp": int(time.time()) - 1}, SECRET, algorithm="HS256"),
    "the secret itself": lambda: SECRET,
    "double prefix": lambda: "Bearer Bearer " + pyjwt.encode({}, SECRET, algorithm="HS256"),
}


@pytest.mark.parametrize("make", BAD_BEARERS.values(), ids=BAD_BEARERS.keys())
def test_bad_bearers_are_refused(make) -> None:  # type: ignore[no-untyped-def]
    assert not jwt.check_bearer(SECRET, make())


def test_bearer_without_a_secret_is_refused() -> None:
    assert not jwt.check_bearer("", _empty_key_hs256({}))
    assert not jwt.check_bearer("", "Bearer " + pyjwt.encode({}, SECRET, algorithm="HS256"))


# -- Access.check_rest_access (the REST guard's decision) --------------------------------------


def rest_app(**values: object) -> Access:
    settings = Settings()
    settings.app("WebRTCAppEE").update(values)
    return Access("WebRTCAppEE", lambda: settings.app("WebRTCAppEE"), store=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("remote", ["127.0.0.1", "::1", "::ffff:127.0.0.1"])
def test_rest_default_allows_loopback(remote: str) -> None:
    rest_app().check_rest_access(remote, "")


@pytest.mark.parametrize(
    "remote", ["10.1.2.3", "192.168.1.1", "127.0.0.2", "fe80::1%eth0", "2001:db8::1", "", "nonsense"]
)
def test_rest_default_refuses_other_addresses(remote: str) -> None:
    with pytest.raises(Forbidden) as info:
        rest_app().check_rest_access(remote, "")
    assert status_of(info.value) == 403 and info.value.message == "Not allowed IP"


def test_rest_allowed_cidrs() -> None:
    app = rest_app(remoteAllowedCIDR="10.0.0.0/8, 2001:db8::/32")
    for remote in ("10.0.0.1", "10.255.255.255", "::ffff:10.9.9.9", "2001:db8::42"):
        app.check_rest_access(remote, "")
    for remote in ("127.0.0.1", "::1", "11.0.0.1", "2001:db9::1"):
        with pytest.raises(Forbidden):
            app.check_rest_access(remote, "")


def test_rest_ip_filter_disabled_lets_anyone_through() -> None:
    app = rest_app(ipFilterEnabled=False, remoteAllowedCIDR="10.0.0.0/8")
    for remote in ("203.0.113.7", "127.0.0.1", "2001:db8::1", ""):
        app.check_rest_access(remote, "")


def test_rest_app_jwt() -> None:
    app = rest_app(jwtControlEnabled=True, jwtSecretKey=SECRET)
    good = pyjwt.encode({"sub": "admin"}, SECRET, algorithm="HS256")
    app.check_rest_access("127.0.0.1", good)
    app.check_rest_access("127.0.0.1", f"Bearer {good}")
    with pytest.raises(Unauthorized) as missing:
        app.check_rest_access("127.0.0.1", "")
    assert status_of(missing.value) == 401
    with pytest.raises(Forbidden) as forged:
        app.check_rest_access("127.0.0.1", pyjwt.encode({"sub": "admin"}, OTHER, algorithm="HS256"))
    assert status_of(forged.value) == 403 and forged.value.message == "Invalid App JWT Token"
    # the address check comes first: a valid JWT does not open the API to other networks
    with pytest.raises(Forbidden) as ip:
        app.check_rest_access("10.0.0.1", good)
    assert ip.value.message == "Not allowed IP"
