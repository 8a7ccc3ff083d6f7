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
    lost: bool = False  # its media connection was lost (the client's SDK may restart it)


@dataclass(frozen=True)
class PlayStarted:
    stream_id: str


@dataclass(frozen=True)
class PlayFinished:
    stream_id: str
    lost: bool = False  # its media connection was lost (the client's SDK may restart it)


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


@dataclass(frozen=True)
class ServerWillStop:
    """The server is shutting down: this client's streams end next (the SDK reconnects on it)."""


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
    | ServerWillStop
)


# -- what the server writes on a room play's data channel (encoded by the transport's
#    `Context.encode_data`, signaling/wire.py: data_message) ----------------------------------


@dataclass(frozen=True)
class VideoAssignment:
    """One video slot of a room play: its label and the stream it carries ("" if none)."""

    label: str
    stream_id: str
    reserved: bool = False  # pinned


@dataclass(frozen=True)
class VideoAssignments:
    """Which stream each video m-line of the room play `stream_id` carries."""

    stream_id: str
    assignments: tuple[VideoAssignment, ...]


@dataclass(frozen=True)
class TrackListUpdated:
    """The room's member streams changed."""

    stream_id: str


@dataclass(frozen=True)
class AudioLevels:
    """Who is talking: (stream id, RFC 6464 level: 0 loudest .. 127 silence) per member."""

    stream_id: str
    levels: tuple[tuple[str, int], ...]


DataEvent = VideoAssignments | TrackListUpdated | AudioLevels
