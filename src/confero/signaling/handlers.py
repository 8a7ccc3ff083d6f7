"""One handler per Ant Media command, and the one place errors become `error` messages.

Each handler makes one call into the domain and answers through the session. Events the
domain delivers later (offers, candidates, notifications) are turned into messages by
`event_message`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from confero.domain import events
from confero.domain.ids import check_stream_id
from confero.domain.stream import Playback, Publication, RoomPlayback
from confero.errors import ConferoError
from confero.media import MediaError
from confero.signaling import messages as m

if TYPE_CHECKING:
    from confero.signaling.session import SignalingSession

logger = logging.getLogger(__name__)

Handler = Callable[["SignalingSession", m.Command], Awaitable[None]]


def error_message(exc: BaseException, stream_id: str = "") -> m.Error:
    """Every refusal, whatever raised it, in the protocol's own terms."""
    if isinstance(exc, ConferoError):
        error_code = "404" if exc.definition == "no_stream_exist" else ""
        return m.Error(definition=exc.definition, stream_id=stream_id, information=exc.message, error_code=error_code)
    if isinstance(exc, MediaError):
        return m.Error(definition=exc.reason, stream_id=stream_id, information=exc.detail)
    if isinstance(exc, m.DecodeFailure):
        return m.Error(definition=exc.definition, stream_id=exc.stream_id, information=exc.information)
    return m.Error(definition="server_error_check_logs", stream_id=stream_id)


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
        case events.PublishFinished(stream_id):
            return m.Notification(definition="publish_finished", stream_id=stream_id)
        case events.PlayStarted(stream_id):
            return m.Notification(definition="play_started", stream_id=stream_id)
        case events.PlayFinished(stream_id):
            return m.Notification(definition="play_finished", stream_id=stream_id)
        case events.Failure(stream_id, definition, information, room):
            return m.Error(definition=definition, stream_id=stream_id, information=information, room=room)
        case events.StreamJoined(stream_id, room):
            return m.Notification(definition="streamJoined", stream_id=stream_id, room=room, room_name=room)
        case events.StreamLeft(stream_id, room):
            return m.Notification(definition="streamLeaved", stream_id=stream_id, room=room, room_name=room)
        case events.LeftRoom(room, stream_id):
            return m.Notification(definition="leavedFromRoom", stream_id=stream_id, room=room, room_name=room)
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
    raise TypeError(f"no message for {event!r}")


async def ping(session: SignalingSession, command: m.Command) -> None:
    session.send(m.Pong())


async def get_ice_server_config(session: SignalingSession, command: m.Command) -> None:
    s = session.app.app_settings
    session.send(
        m.IceServerConfig(
            stun_server_uri=s.stunServerURI,
            turn_server_username=s.turnServerUsername,
            turn_server_credential=s.turnServerCredential,
        )
    )


def refuse_if_in_use(session: SignalingSession, stream_id: str) -> None:
    """One connection publishes or plays an id at most once at a time."""
    owned = session.owned.get(stream_id)
    if owned is not None:
        kind = "already_publishing" if isinstance(owned, Publication) else "already_playing"
        raise ConferoError(f"{stream_id} is already in use on this connection", definition=kind)


async def publish(session: SignalingSession, command: m.Command) -> None:
    assert isinstance(command, m.Publish)
    stream_id = command.stream_id
    refuse_if_in_use(session, stream_id)
    # The room: `mainTrack` (multitrack flow), or the room this connection joined with this id (legacy).
    room = command.main_track or session.room_of(stream_id)
    publication = await session.app.publish(
        session,
        stream_id,
        name=command.stream_name,
        room=room,
        metadata=text(command.meta_data),
        token=command.token,
    )
    session.owned[stream_id] = publication
    if room:
        session.rooms.setdefault(room, stream_id)
    session.send(m.Start(stream_id=stream_id))


async def play(session: SignalingSession, command: m.Command) -> None:
    assert isinstance(command, m.Play)
    stream_id = command.stream_id
    refuse_if_in_use(session, stream_id)
    playback = await session.app.play(
        session,
        stream_id,
        room=command.room,
        track_list=command.track_list,
        own_stream_id=command.user_publish_id or session.rooms.get(stream_id, ""),
        token=command.token,
    )
    session.owned[stream_id] = playback


def relayed(session: SignalingSession, command: m.Command) -> bool:
    """In a 1-1 call, offers, answers, candidates and stops go to the partner unchanged."""
    if command.stream_id in session.owned or not session.app.calls.member_of(session, command.stream_id):
        return False
    session.app.calls.relay(session, command.stream_id, session.frame)
    return True


async def take_configuration(session: SignalingSession, command: m.Command) -> None:
    assert isinstance(command, m.TakeConfiguration)
    if relayed(session, command):
        return
    owned = session.owned.get(command.stream_id)
    if command.type not in ("offer", "answer") or not command.sdp:
        raise MediaError("notSetRemoteDescription", "takeConfiguration needs type offer/answer and an sdp")
    if isinstance(owned, Publication) and command.type == "offer":
        try:
            await owned.accept_offer(command.sdp)
        except MediaError:
            session.owned.pop(command.stream_id, None)
            await owned.close("error")
            raise
    elif isinstance(owned, (Playback, RoomPlayback)) and command.type == "answer":
        try:
            await owned.accept_answer(command.sdp)
        except MediaError:
            session.owned.pop(command.stream_id, None)
            await owned.close("error")
            raise
    else:
        raise MediaError(
            "notSetRemoteDescription",
            f"no {'publish' if command.type == 'offer' else 'play'} of {command.stream_id} on this connection",
        )


async def take_candidate(session: SignalingSession, command: m.Command) -> None:
    assert isinstance(command, m.TakeCandidate)
    if relayed(session, command):
        return
    owned = session.owned.get(command.stream_id)
    if owned is None:
        raise ConferoError(f"no publish or play of {command.stream_id}", definition="no_peer_associated_before")
    await owned.add_candidate(command.candidate, command.id, command.label)


async def stop(session: SignalingSession, command: m.Command) -> None:
    if relayed(session, command):
        return
    owned = session.owned.pop(command.stream_id, None)
    if owned is None:
        logger.debug("stop for %s, which this connection does not have", command.stream_id)
        return
    await owned.close("stop")


async def get_stream_info(session: SignalingSession, command: m.Command) -> None:
    stream = session.app.live_stream(command.stream_id)
    entries = [
        m.StreamInfoEntry(
            video_codec=e["video_codec"],
            audio_codec=e["audio_codec"],
            video_bitrate=e["video_bitrate"],
            audio_bitrate=e["audio_bitrate"],
        )
        for e in stream.info()
    ]
    session.send(m.StreamInformation(stream_id=command.stream_id, stream_info=entries))


def text(value: object) -> str:
    """Metadata arrives as a string or as a JSON object; it is kept as a string."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def details(entries: list[dict[str, str]]) -> list[m.StreamDetail]:
    return [m.StreamDetail(e["stream_id"], e["stream_name"], e["meta_data"]) for e in entries]


async def join_room(session: SignalingSession, command: m.Command) -> None:
    assert isinstance(command, m.JoinRoom)
    room_id = command.room or command.main_track
    if room_id in session.rooms:
        await session.app.leave_room(session, room_id, session.rooms.pop(room_id))
    room, member = await session.app.join_room(
        session,
        room_id,
        command.stream_id,
        name=command.stream_name,
        metadata=text(command.metadata),
        role=command.role,
        mode=command.mode or "",
    )
    session.rooms[room.room_id] = member.stream_id
    others = session.app.room_streams(room.room_id, exclude=member.stream_id)
    session.send(
        m.JoinedTheRoom(
            definition="joinedTheRoom",
            stream_id=member.stream_id,
            room=room.room_id,
            room_name=room.room_id,
            streams=[e["stream_id"] for e in others],
            stream_list=details(others),
            max_track_count=-1,
        )
    )


async def leave_from_room(session: SignalingSession, command: m.Command) -> None:
    assert isinstance(command, m.LeaveFromRoom)
    room_id = command.room or command.main_track
    if not room_id:
        raise ConferoError("no room given", definition="no_room_specified")
    stream_id = session.rooms.pop(room_id, "") or command.stream_id
    for sid in [sid for sid, o in session.owned.items() if o.closed]:
        session.owned.pop(sid, None)
    await session.app.leave_room(session, room_id, stream_id)
    for sid in [sid for sid, o in session.owned.items() if o.closed]:
        session.owned.pop(sid, None)
    session.send(m.Notification(definition="leavedFromRoom", stream_id=stream_id, room=room_id, room_name=room_id))


async def get_room_info(session: SignalingSession, command: m.Command) -> None:
    assert isinstance(command, m.GetRoomInfo)
    if not command.room:
        raise ConferoError("no room given", definition="no_room_specified")
    others = session.app.room_streams(command.room, exclude=command.stream_id)
    session.send(
        m.RoomInformation(
            room=command.room,
            room_name=command.room,
            streams=[e["stream_id"] for e in others],
            stream_list=details(others),
            stream_id=command.stream_id,
        )
    )


def room_playback(session: SignalingSession, stream_id: str) -> RoomPlayback:
    owned = session.owned.get(stream_id)
    if not isinstance(owned, RoomPlayback):
        raise ConferoError(f"no room play of {stream_id} on this connection", definition="no_stream_exist")
    return owned


async def enable_track(session: SignalingSession, command: m.Command) -> None:
    assert isinstance(command, m.EnableTrack)
    track = command.track_id
    for prefix in ("ARDAMSv", "ARDAMSa"):
        if track.startswith(prefix):
            track = track[len(prefix) :]
    if not room_playback(session, command.stream_id).set_enabled(track, command.enabled):
        raise ConferoError(f"no track {command.track_id} in this play", definition="no_stream_exist")


async def get_track_list(session: SignalingSession, command: m.Command) -> None:
    owned = session.owned.get(command.stream_id)
    if isinstance(owned, RoomPlayback):
        tracks = owned.track_ids()
    else:
        tracks = [e["stream_id"] for e in session.app.room_streams(command.stream_id)]
    session.send(m.TrackList(stream_id=command.stream_id, track_list=tracks))


async def join(session: SignalingSession, command: m.Command) -> None:
    assert isinstance(command, m.Join)
    await session.app.join_call(session, command.stream_id, command.token)
    session.calls.add(command.stream_id)


async def leave(session: SignalingSession, command: m.Command) -> None:
    session.calls.discard(command.stream_id)
    if not session.app.leave_call(session, command.stream_id):
        raise ConferoError(f"not in call {command.stream_id}", definition="no_peer_associated_before")


async def peer_message(session: SignalingSession, command: m.Command) -> None:
    session.app.calls.relay(session, command.stream_id, session.frame)


HANDLERS: dict[str, Handler] = {
    "ping": ping,
    "getIceServerConfig": get_ice_server_config,
    "publish": publish,
    "play": play,
    "takeConfiguration": take_configuration,
    "takeCandidate": take_candidate,
    "stop": stop,
    "getStreamInfo": get_stream_info,
    "joinRoom": join_room,
    "leaveFromRoom": leave_from_room,
    "getRoomInfo": get_room_info,
    "enableTrack": enable_track,
    "getTrackList": get_track_list,
    "join": join,
    "leave": leave,
    "peerMessageCommand": peer_message,
}


async def dispatch(session: SignalingSession, name: str, command: m.Command) -> None:
    """Run one command; any refusal is answered with an `error` and logged once."""
    try:
        if name not in m.NO_STREAM_ID:
            check_stream_id(command.stream_id)
        await HANDLERS[name](session, command)
    except (ConferoError, MediaError) as exc:
        logger.info("%s %s(%s) refused: %s", session.remote, name, command.stream_id, exc)
        session.send(error_message(exc, command.stream_id))
    except Exception as exc:
        logger.exception("%s %s(%s) failed", session.remote, name, command.stream_id)
        session.send(error_message(exc, command.stream_id))
