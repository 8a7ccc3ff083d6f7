"""Time-limited TURN credentials in coturn's REST scheme (`use-auth-secret`).

The username is `expiry:client` (expiry in Unix seconds) and the password is the base64 HMAC-SHA1
of that username keyed with coturn's `static-auth-secret`; coturn recomputes it and refuses it
once `expiry` has passed. Confero never runs a TURN server: it only hands these out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass


def rest_username(expiry: int, client: str) -> str:
    """`expiry:client`; a `:` in the client label would split it for coturn, so it becomes `_`."""
    return f"{int(expiry)}:{client.replace(':', '_')}"


def rest_credential(secret: str, username: str) -> str:
    """base64(HMAC-SHA1(secret, username)), coturn's `static-auth-secret` check."""
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True)
class TurnCredentials:
    urls: tuple[str, ...]
    username: str
    credential: str
    expires: int


@dataclass(frozen=True)
class TurnServers:
    """The TURN URLs of a deployment and the secret shared with coturn."""

    urls: tuple[str, ...]
    secret: str
    ttl: int = 86400

    def issue(self, client: str, now: float | None = None) -> TurnCredentials:
        """Fresh credentials for `client`, valid for `ttl` seconds from `now`."""
        expires = int(time.time() if now is None else now) + self.ttl
        username = rest_username(expires, client)
        return TurnCredentials(self.urls, username, rest_credential(self.secret, username), expires)
