"""Media plane on aiortc: knows RTP and RTCP; never JSON, rooms or tokens.

The domain sees the `Router` (creates and owns every peer), the Publisher and Subscriber it
returns (`domain/media.py` states them as Protocols), and the values and typed failures of
`media/types.py`.
"""

from confero.media.aiortc_hooks import IcePolicy
from confero.media.downtrack import DownTrack
from confero.media.keyframes import KeyframeRequester
from confero.media.peer import IceServer, Peer, PeerConfig
from confero.media.publisher import Publisher
from confero.media.router import Router
from confero.media.subscriber import Subscriber
from confero.media.types import (
    BadCandidate,
    CodecMismatch,
    LocalCandidate,
    MediaError,
    NoMedia,
    SdpError,
    SlotInfo,
    TrackInfo,
    TrackStats,
    UnknownTrack,
)
from confero.media.uptrack import TrackRegistry, UpTrack

__all__ = [
    "BadCandidate",
    "CodecMismatch",
    "DownTrack",
    "IcePolicy",
    "IceServer",
    "KeyframeRequester",
    "LocalCandidate",
    "MediaError",
    "NoMedia",
    "Peer",
    "PeerConfig",
    "Publisher",
    "Router",
    "SdpError",
    "SlotInfo",
    "Subscriber",
    "TrackInfo",
    "TrackRegistry",
    "TrackStats",
    "UnknownTrack",
    "UpTrack",
]
