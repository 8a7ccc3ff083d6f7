"""Stream and room identifiers: Ant Media's allowed characters, and generated ids."""

from __future__ import annotations

import re
import secrets

from confero.errors import InvalidStreamId, MissingStreamId

_VALID = re.compile(r"^[A-Za-z0-9_.\-]{1,200}$")


def check_stream_id(value: str) -> str:
    if not value:
        raise MissingStreamId("streamId is missing")
    if not _VALID.match(value):
        raise InvalidStreamId(f"invalid stream id {value!r}")
    return value


def new_stream_id() -> str:
    """A fresh id in the form Ant Media generates (digits and letters)."""
    return secrets.token_hex(8)
