"""Stream and room identifiers: Ant Media's allowed characters, and generated ids."""

from __future__ import annotations

import re
import secrets

from confero.errors import BadRequest

_VALID = re.compile(r"^[A-Za-z0-9_.\-]{1,200}$")


def check_stream_id(value: str) -> str:
    if not value:
        raise BadRequest("streamId is missing", definition="noStreamNameSpecified")
    if not _VALID.match(value):
        raise BadRequest(f"invalid stream id {value!r}", definition="invalidStreamName")
    return value


def new_stream_id() -> str:
    """A fresh id in the form Ant Media generates (digits and letters)."""
    return secrets.token_hex(8)
