"""What the domain tells one client: plain frozen dataclasses, no wire format.

The client's sink (the transport's session) turns each event into its protocol message
(`signaling/wire.py`) and queues it, so the domain never writes to a socket.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PublishStarted:
    stream_id: str
    room: str = ""


@dataclass(frozen=True)
class PublishFinished:
    stream_id: str


@dataclass(frozen=True)
class PlayStarted:
    stream_id: str


@dataclass(frozen=True)
class PlayFinished:
    stream_id: str


@dataclass(frozen=True)
class Offer:
    stream_id: str
    sdp: str
    id_mapping: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    stream_id: str
    sdp: str


@dataclass(frozen=True)
class Candidate:
    stream_id: str
    index: int
    mid: str | None
    candidate: str


@dataclass(frozen=True)
class ConnectTimeout:
    """The peer of this publish or play did not connect in time; it is being closed."""

    stream_id: str


@dataclass(frozen=True)
class RoomWindowEnded:
    """The window of a room this client is a member of has ended; the client is removed."""

    stream_id: str
    room: str


@dataclass(frozen=True)
class StreamJoined:
    """Another member's stream started in a room this client joined."""

    stream_id: str
    room: str


@dataclass(frozen=True)
class StreamLeft:
    """Another member's stream ended in a room this client joined."""

    stream_id: str
    room: str


@dataclass(frozen=True)
class SubtrackAdded:
    """A member's stream started in a room this client plays (`room` is the main track)."""

    room: str
    track_id: str


@dataclass(frozen=True)
class SubtrackRemoved:
    """A member's stream ended in a room this client plays."""

    room: str
    track_id: str


@dataclass(frozen=True)
class LeftRoom:
    """This client is no longer a member of `room` (it left, or the room ended)."""

    room: str
    stream_id: str


@dataclass(frozen=True)
class PeerJoined:
    """This client joined 1-1 call `stream_id`."""

    stream_id: str


@dataclass(frozen=True)
class PeerStart:
    """The partner arrived: this client (the first one) makes the offer."""

    stream_id: str


@dataclass(frozen=True)
class PeerStop:
    """The partner left the 1-1 call: close the peer connection, stay joined."""

    stream_id: str


@dataclass(frozen=True)
class PeerLeft:
    """This client left 1-1 call `stream_id`."""

    stream_id: str


@dataclass(frozen=True)
class Relay:
    """A message from the partner in a 1-1 call, to pass on unchanged (the frame's text)."""

    stream_id: str
    payload: str


@dataclass(frozen=True)
class DataTooLarge:
    """A data-channel message from this client was over the limit and was not delivered."""

    stream_id: str
    size: int
    limit: int


Event = (
    PublishStarted
    | PublishFinished
    | PlayStarted
    | PlayFinished
    | Offer
    | Answer
    | Candidate
    | ConnectTimeout
    | RoomWindowEnded
    | StreamJoined
    | StreamLeft
    | SubtrackAdded
    | SubtrackRemoved
    | LeftRoom
    | PeerJoined
    | PeerStart
    | PeerStop
    | PeerLeft
    | Relay
    | DataTooLarge
)
