"""Media plane on aiortc: knows RTP and RTCP; never JSON, rooms or tokens."""

from confero.media.aiortc_hooks import IcePolicy
from confero.media.downtrack import DownTrack
from confero.media.peer import LocalCandidate, MediaError, Peer, PeerConfig
from confero.media.publisher import Publisher
from confero.media.router import Router
from confero.media.subscriber import Subscriber
from confero.media.uptrack import UpTrack

__all__ = [
    "DownTrack",
    "IcePolicy",
    "LocalCandidate",
    "MediaError",
    "Peer",
    "PeerConfig",
    "Publisher",
    "Router",
    "Subscriber",
    "UpTrack",
]
