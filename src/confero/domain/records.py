"""The record types the domain hands to REST (re-exported so `api/` need not import `store/`)."""

from confero.store import RoomRecord, StreamRecord, TokenRecord

__all__ = ["RoomRecord", "StreamRecord", "TokenRecord"]
