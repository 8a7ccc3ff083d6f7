"""The domain in Ant Media's terms: events become messages, refusals become `error` messages.

With `messages.py` (the schemas), this is where Ant Media's wire names live. Every refusal,
whatever layer raised it, is answered through `error_message`; nothing else picks definitions.
"""

from __future__ import annotations

import msgspec

from confero import errors
from confero.domain import events
from confero.domain.results import DebugInfo, LegStats, StreamSummary, SubscriberInfo
from confero.media import types as media
from confero.signaling import messages as m

#: `reason` of a publish_finished / play_finished whose media connection was lost (Confero's
#: field; Ant Media's clients ignore it): Confero's SDK restarts the publish or play.
LOST = "connectionLost"

#: Refusal type -> Ant Media's `definition`; the first match in this order wins (subclasses first).
DEFINITIONS: tuple[tuple[type[BaseException], str], ...] = (
    (errors.MissingStreamId, "noStreamNameSpecified"),
    (errors.InvalidStreamId, "invalidStreamName"),
    (errors.NoRoomGiven, "no_room_specified"),
    (errors.UnregisteredStream, "not_allowed_unregistered_streams"),
    (errors.BadRequest, "missingParameter"),
    (errors.AlreadyPublishing, "already_publishing"),
    (errors.AlreadyPlaying, "already_playing"),
    (errors.InUse, "streamIdInUse"),
    (errors.NotFound, "no_stream_exist"),
    (errors.RoomNotActive, "room_not_active_or_expired"),
    (errors.StreamNotActive, "stream_not_active_or_expired"),
    (errors.ViewerLimitReached, "viewerLimitReached"),
    (errors.SubtrackLimitReached, "main_track_has_max_subtrack_count__not_allowed_to_add_more_subtracks"),
    (errors.Unauthorized, "unauthorized_access"),
    (errors.Forbidden, "unauthorized_access"),
    (errors.ShuttingDown, "server_will_stop"),
    (errors.NoPeer, "no_peer_associated_before"),
    (errors.OutOfOrder, "notSetRemoteDescription"),
    (media.CodecMismatch, "unsupported_codec"),
    (media.BadCandidate, "invalid_candidate"),
    (media.UnknownTrack, "no_stream_exist"),
)


_json = msgspec.json.Encoder()


def definition(exc: BaseException) -> str:
    if isinstance(exc, media.SdpError):
        return "notSetLocalDescription" if exc.side == "local" else "notSetRemoteDescription"
    for type_, name in DEFINITIONS:
        if isinstance(exc, type_):
            return name
    return "server_error_check_logs"


def is_refusal(exc: BaseException) -> bool:
    """A refusal is answered and logged briefly; anything else is a server fault (logged in full)."""
    return isinstance(exc, (errors.ConferoError, media.MediaError))


def error_message(exc: BaseException, stream_id: str = "") -> m.Error:
    """Every refusal, whatever raised it, in the protocol's own terms."""
    if isinstance(exc, m.DecodeFailure):
        return m.Error(definition=exc.definition, stream_id=exc.stream_id, information=exc.information)
    if not is_refusal(exc):
        return m.Error(definition="server_error_check_logs", stream_id=stream_id)
    name = definition(exc)
    information = exc.message if isinstance(exc, errors.ConferoError) else getattr(exc, "detail", "")
    return m.Error(
        definition=name,
        stream_id=stream_id,
        information=information,
        error_code="404" if name == "no_stream_exist" and isinstance(exc, errors.ConferoError) else "",
    )


def details(summaries: tuple[StreamSummary, ...]) -> list[m.StreamDetail]:
    return [m.StreamDetail(s.stream_id, s.name, s.metadata) for s in summaries]


def event_message(event: events.Event) -> m.Message | m.Raw:
    match event:
        case events.Relay(_, payload):
            return m.Raw(payload)
        case events.Offer(stream_id, sdp, mapping):
            return m.TakeConfigurationOut(stream_id=stream_id, type="offer", sdp=sdp, id_mapping=mapping)
        case events.Answer(stream_id, sdp):
            return m.TakeConfigurationOut(stream_id=stream_id, type="answer", sdp=sdp)
        case events.Candidate(stream_id, index, mid, candidate):
            return m.TakeCandidateOut(stream_id=stream_id, label=index, id=mid, candidate=candidate)
        case events.PublishStarted(stream_id, room):
            return m.Notification(definition="publish_started", stream_id=stream_id, room=room, room_name=room)
        case events.PublishFinished(stream_id, lost):
            return m.Notification(definition="publish_finished", stream_id=stream_id, reason=LOST if lost else "")
        case events.PlayStarted(stream_id):
            return m.Notification(definition="play_started", stream_id=stream_id)
        case events.PlayFinished(stream_id, lost):
            return m.Notification(definition="play_finished", stream_id=stream_id, reason=LOST if lost else "")
        case events.ConnectTimeout(stream_id):
            return m.Error(
                definition="publishTimeoutError", stream_id=stream_id, information="the peer did not connect in time"
            )
        case events.RoomWindowEnded(stream_id, room):
            return m.Error(
                definition="room_not_active_or_expired",
                stream_id=stream_id,
                information=f"room {room} is not active",
                room=room,
            )
        case events.StreamJoined(stream_id, room):
            return m.Notification(definition="streamJoined", stream_id=stream_id, room=room, room_name=room)
        case events.StreamLeft(stream_id, room):
            return m.Notification(definition="streamLeaved", stream_id=stream_id, room=room, room_name=room)
        case events.SubtrackAdded(room, track_id):
            return m.SubtrackNotification(definition="subtrackAdded", stream_id=room, track_id=track_id)
        case events.SubtrackRemoved(room, track_id):
            return m.SubtrackNotification(definition="subtrackRemoved", stream_id=room, track_id=track_id)
        case events.LeftRoom(room, stream_id):
            return left_room(room, stream_id)
        case events.PeerJoined(stream_id):
            return m.Notification(definition="joined", stream_id=stream_id)
        case events.PeerStart(stream_id):
            return m.Start(stream_id=stream_id)
        case events.PeerStop(stream_id):
            return m.StopOut(stream_id=stream_id)
        case events.PeerLeft(stream_id):
            return m.Notification(definition="leaved", stream_id=stream_id)
        case events.DataTooLarge(stream_id, size, limit):
            return m.Error(
                definition="data_message_too_large",
                stream_id=stream_id,
                information=f"a data-channel message of {size} bytes was not delivered; the limit is {limit}",
            )
        case events.ServerWillStop():
            return m.Notification(definition="server_will_stop")
    raise TypeError(f"no message for {event!r}")


def left_room(room: str, stream_id: str) -> m.Notification:
    return m.Notification(definition="leavedFromRoom", stream_id=stream_id, room=room, room_name=room)


# -- the server's data-channel events (room plays) -----------------------------------------------


def data_message(event: events.DataEvent) -> str:
    """A server event on a room play's data channel, as Ant Media writes it (JSON text)."""
    match event:
        case events.VideoAssignments(stream_id, assignments):
            payload: list[dict[str, object]] = [
                {"videoLabel": a.label, "trackId": a.stream_id, "reserved": a.reserved} for a in assignments
            ]
            return m.data_event(stream_id, "VIDEO_TRACK_ASSIGNMENT_LIST", payload=payload)
        case events.TrackListUpdated(stream_id):
            return m.data_event(stream_id, "TRACK_LIST_UPDATED")
        case events.AudioLevels(stream_id, levels):
            talkers: list[dict[str, object]] = [{"trackId": s, "audioLevel": level} for s, level in levels]
            # Circle reads `payload`, the SDK's conference-room.html sample `assignments`
            return m.data_event(stream_id, "AUDIO_TRACK_ASSIGNMENT", payload=talkers, assignments=talkers)


# -- signal: subscribers, debug info, push ------------------------------------------------------

#: Confero has no push-notification service (no FCM/APN credentials, no `subscriberAuthenticationKey`),
#: so no push auth token can ever be verified: AMS's answer to an unverifiable one.
PUSH_UNSUPPORTED = "authenticationTokenNotValid"


def push_refused(command: str) -> m.Error:
    return m.Error(
        definition=PUSH_UNSUPPORTED,
        information=f"{command}: push notifications are not supported by this server",
    )


def subscriber_json(info: SubscriberInfo) -> str:
    """One entry of `subscriberList`: Ant Media's Subscriber JSON, with what applies to a player."""
    entry = m.SubscriberEntry(
        subscriber_id=info.subscriber_id,
        stream_id=info.stream_id,
        subscriber_name=info.name,
        connected=info.connected,
        current_concurrent_connections=1 if info.connected else 0,
    )
    return _json.encode(entry).decode()


def _leg(leg: LegStats) -> m.DebugConnection:
    tracks = [
        m.DebugTrack(
            track_id=t.track_id,
            kind=t.kind,
            codec=t.codec,
            packets=t.packets,
            bytes=t.octets,
            keyframes=t.keyframes,
            keyframe_requests=t.keyframe_requests,
            width=t.width,
            height=t.height,
        )
        for t in leg.tracks
    ]
    return m.DebugConnection(client_id=leg.client_id, direction=leg.direction, connected=leg.connected, tracks=tracks)


def debug_info(info: DebugInfo) -> m.DebugInfo:
    """`debugInfo`: the stream's (or room's) live legs and their counters, as JSON text."""
    body = m.DebugBody(stream_id=info.stream_id, type=info.kind, connections=[_leg(leg) for leg in info.legs])
    if info.info is not None:
        body.stream_info = m.StreamInfoEntry(
            stream_width=info.info.width,
            stream_height=info.info.height,
            video_bitrate=info.info.video_bitrate,
            audio_bitrate=info.info.audio_bitrate,
            video_codec=info.info.video_codec,
            audio_codec=info.info.audio_codec,
        )
    return m.DebugInfo(definition="debugInfo", stream_id=info.stream_id, debug_info=_json.encode(body).decode())
