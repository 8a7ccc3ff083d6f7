"""coturn's REST credentials (use-auth-secret) and the TURN settings."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from confero.auth.turn import TurnServers, rest_credential, rest_username
from confero.settings import Settings, SettingsError

# Computed independently with openssl:
#   printf '%s' "1700086400:alice" | openssl dgst -sha1 -hmac "north-wind" -binary | base64
VECTOR = ("north-wind", "1700086400:alice", "2cdv8ItP/4kX53j3SEoTDhjFpeM=")


def test_credential_matches_an_independently_computed_vector() -> None:
    secret, username, expected = VECTOR
    assert rest_credential(secret, username) == expected


def test_username_is_expiry_then_client_and_a_colon_cannot_split_it() -> None:
    assert rest_username(1700086400, "alice") == "1700086400:alice"
    assert rest_username(5, "a:b") == "5:a_b"


def test_issue_expires_ttl_seconds_from_now() -> None:
    turn = TurnServers(("turn:127.0.0.1:3478?transport=udp",), "north-wind", ttl=86400)
    issued = turn.issue("alice", now=1700000000.7)
    assert issued.username == "1700086400:alice"
    assert issued.credential == VECTOR[2]
    assert issued.expires == 1700086400
    assert issued.urls == turn.urls
    # The credential is the HMAC of exactly the username handed out (what coturn recomputes).
    digest = hmac.new(b"north-wind", issued.username.encode(), hashlib.sha1).digest()
    assert base64.b64decode(issued.credential) == digest


def test_each_issue_is_fresh() -> None:
    turn = TurnServers(("turn:h:3478",), "s", ttl=60)
    first, later = turn.issue("c", now=1000), turn.issue("c", now=1001)
    assert first.username != later.username and first.credential != later.credential
    assert later.expires == 1061


def test_turn_settings_are_checked() -> None:
    Settings(turn_urls=["turn:h:3478?transport=udp", "turns:h:5349"], turn_secret="s").validate()
    with pytest.raises(SettingsError, match="turn_secret"):
        Settings(turn_urls=["turn:h:3478"]).validate()
    with pytest.raises(SettingsError, match="turn_urls"):
        Settings(turn_urls=["http://h"], turn_secret="s").validate()
    with pytest.raises(SettingsError, match="turn_ttl"):
        Settings(turn_ttl=0).validate()
    with pytest.raises(SettingsError, match="server_ice_servers"):
        Settings(server_ice_servers=["turn:h:3478"]).validate()
    Settings(server_ice_servers=["stun:h:3478"]).validate()


def test_server_ice_servers_take_what_the_server_peers_can_use() -> None:
    """One TURN URL, turn: over UDP or TCP or turns: over TCP (aiortc would skip the rest silently)."""
    for url in ("turn:h:3478", "turn:h:3478?transport=tcp", "turns:h:5349", "turns:h:5349?transport=tcp"):
        Settings(server_ice_servers=["stun:h:3478", url], turn_secret="s").validate()
    with pytest.raises(SettingsError, match="turns: over TCP only"):
        Settings(server_ice_servers=["turns:h:5349?transport=udp"], turn_secret="s").validate()
    with pytest.raises(SettingsError, match="transport is udp or tcp"):
        Settings(server_ice_servers=["turn:h:3478?transport=sctp"], turn_secret="s").validate()
    with pytest.raises(SettingsError, match="one TURN URL"):
        Settings(server_ice_servers=["turn:h:3478", "turns:h:5349"], turn_secret="s").validate()
