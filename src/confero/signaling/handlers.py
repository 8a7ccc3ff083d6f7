"""One handler per Ant Media command: one call into the client's domain object, one reply.

`dispatch` matches the typed command and calls its handler; every refusal is answered with an
`error` (`wire.error_message`) and logged once. The frame's text is passed explicitly to the
commands that a 1-1 call relays unchanged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from confero.auth.turn import TurnServers
from confero.broadcast_json import broadcast_json
from confero.domain.client import Client
from confero.domain.ids import check_stream_id
from confero.settings import AppSettings
from confero.signaling import messages as m
from confero.signaling import wire

logger = logging.getLogger(__name__)

Send = Callable[[m.Message | m.Raw], None]


def metadata_text(value: object) -> str:
    """Metadata arrives as a string or as a JSON object; it is kept as a string."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


async def publish(client: Client, send: Send, cmd: m.Publish) -> None:
    await client.publish(
        cmd.stream_id,
        name=cmd.stream_name,
        room=cmd.main_track,
        metadata=metadata_text(cmd.meta_data),
        role=cmd.role,
        token=cmd.token,
    )
    send(m.Start(stream_id=cmd.stream_id))


async def play(client: Client, cmd: m.Play) -> None:
    await client.play(
        cmd.stream_id,
        room=cmd.room,
        track_list=cmd.track_list,
        own_stream_id=cmd.user_publish_id,
        token=cmd.token,
        subscriber_id=cmd.subscriber_id,
        subscriber_name=cmd.subscriber_name,
    )


async def join_room(client: Client, send: Send, cmd: m.JoinRoom) -> None:
    result = await client.join_room(
        cmd.room or cmd.main_track,
        cmd.stream_id,
        name=cmd.stream_name,
        metadata=metadata_text(cmd.metadata),
        role=cmd.role,
        mode=cmd.mode or "",
    )
    send(
        m.JoinedTheRoom(
            definition="joinedTheRoom",
            stream_id=result.stream_id,
            room=result.room_id,
            room_name=result.room_id,
            streams=[s.stream_id for s in result.streams],
            stream_list=wire.details(result.streams),
            max_track_count=-1,
        )
    )


async def get_broadcast_object(client: Client, send: Send, cmd: m.GetBroadcastObject) -> None:
    record, viewers = await client.broadcast_object(cmd.stream_id)
    send(
        m.BroadcastObject(
            definition="broadcastObject", stream_id=cmd.stream_id, broadcast=broadcast_json(record, viewers)
        )
    )


async def get_subtracks(client: Client, send: Send, cmd: m.GetSubtracks) -> None:
    offset = cmd.offset if cmd.offset is not None else 0
    size = cmd.size if cmd.size is not None else 50
    found = await client.subtracks(cmd.stream_id, offset, size, role=cmd.role or "")
    send(
        m.SubtrackList(
            definition="subtrackList",
            stream_id=cmd.stream_id,
            subtrack_list=[broadcast_json(r, client.viewer_count(r.stream_id)) for r in found],
        )
    )


async def get_subtracks_count(client: Client, send: Send, cmd: m.GetSubtracksCount) -> None:
    count = await client.subtracks_count(cmd.stream_id, role=cmd.role or "", status=cmd.status or "")
    send(m.SubtrackCount(definition="subtrackCount", stream_id=cmd.stream_id, count=count))


def ice_servers(settings: AppSettings, turn: TurnServers | None = None, client: str = "") -> m.IceServerConfig:
    """The application's STUN/TURN server, or, when the server has TURN (coturn) configured,
    fresh time-limited credentials for it. The official SDK reads one URI (`stunServerUri`,
    only if it starts with turn: or stun:), so it gets the first turn: URL; every URL is in
    `turnServerUris` for Confero's SDK."""
    if turn is None or not turn.urls:
        return m.IceServerConfig(
            stun_server_uri=settings.stunServerURI,
            turn_server_username=settings.turnServerUsername,
            turn_server_credential=settings.turnServerCredential,
        )
    issued = turn.issue(client or "confero")
    first = next((u for u in issued.urls if u.startswith("turn:")), issued.urls[0])
    return m.IceServerConfig(
        stun_server_uri=first,
        turn_server_username=issued.username,
        turn_server_credential=issued.credential,
        turn_server_uris=list(issued.urls),
    )


async def handle(
    client: Client,
    settings: AppSettings,
    send: Send,
    command: m.Command,
    frame: str,
    turn: TurnServers | None = None,
) -> None:
    """Run one command (its stream id already checked where it needs one)."""
    match command:
        case m.Ping():
            send(m.Pong())
        case m.GetIceServerConfig():
            send(ice_servers(settings, turn, client.client_id))
        case m.Publish():
            await publish(client, send, command)
        case m.Play():
            await play(client, command)
        case m.TakeConfiguration() | m.TakeCandidate() | m.Stop() if client.relays(command.stream_id):
            client.relay(command.stream_id, frame)
        case m.TakeConfiguration():
            await client.configure(command.stream_id, command.type, command.sdp)
        case m.TakeCandidate():
            await client.add_candidate(command.stream_id, command.candidate, command.id, command.label)
        case m.Stop():
            await client.stop(command.stream_id)
        case m.GetStreamInfo():
            info = client.stream_info(command.stream_id)
            entry = m.StreamInfoEntry(
                stream_width=info.width,
                stream_height=info.height,
                video_codec=info.video_codec,
                audio_codec=info.audio_codec,
                video_bitrate=info.video_bitrate,
                audio_bitrate=info.audio_bitrate,
            )
            send(m.StreamInformation(stream_id=command.stream_id, stream_info=[entry]))
        case m.JoinRoom():
            await join_room(client, send, command)
        case m.LeaveFromRoom():
            room = command.room or command.main_track
            stream_id = await client.leave_room(room, command.stream_id)
            send(wire.left_room(room, stream_id))
        case m.GetRoomInfo():
            others = client.room_info(command.room, exclude=command.stream_id)
            send(
                m.RoomInformation(
                    room=command.room,
                    room_name=command.room,
                    streams=[s.stream_id for s in others],
                    stream_list=wire.details(others),
                    stream_id=command.stream_id,
                )
            )
        case m.EnableTrack():
            client.enable_track(command.stream_id, command.track_id, command.enabled)
        case m.GetTrackList():
            send(m.TrackList(stream_id=command.stream_id, track_list=client.track_list(command.stream_id)))
        case m.Join():
            await client.join_call(command.stream_id, command.token)
        case m.Leave():
            client.leave_call(command.stream_id)
        case m.PeerMessageCommand():
            client.relay(command.stream_id, frame)
        # -- video slots of a room play (the replies go on its data channel) --
        case m.SetMaxVideoTrackCount():
            client.set_max_video_tracks(command.stream_id, command.max_track_count)
        case m.GetVideoTrackAssignments():
            client.video_track_assignments(command.stream_id)
        case m.AssignVideoTrack():
            client.assign_video_track(command.stream_id, command.video_track_id, command.enabled)
        case m.UpdateVideoTrackAssignments():
            client.update_video_track_assignments(command.stream_id, command.offset, command.size)
        # -- signal: per-player track switches, quality, debug info, subscribers, push
        case m.ToggleVideo():
            client.toggle_track(command.stream_id, command.track_id, "video", command.enabled)
        case m.ToggleAudio():
            client.toggle_track(command.stream_id, command.track_id, "audio", command.enabled)
        case m.ForceStreamQuality():
            # Ant Media switches ABR layers here; with one layer per stream there is nothing to
            # switch, and Ant Media sends nothing back either (resolutionChangeInfo only on a switch).
            logger.debug(
                "%s forceStreamQuality(%s, %s): one layer", client.remote, command.stream_id, command.stream_height
            )
        case m.GetDebugInfo():
            send(wire.debug_info(client.debug_info(command.stream_id)))
        case m.GetSubscriberCount():
            count = len(client.subscribers(command.stream_id))
            send(m.SubscriberCount(definition="subscriberCount", stream_id=command.stream_id, count=count))
        case m.GetSubscribers():
            page = client.subscribers_page(command.stream_id, command.offset, command.size)
            send(
                m.SubscriberList(
                    definition="subscriberList",
                    stream_id=command.stream_id,
                    subscriber_list=[wire.subscriber_json(s) for s in page],
                )
            )
        case m.RegisterPushNotificationToken():
            logger.info("%s registerPushNotificationToken: no push service", client.remote)
            send(wire.push_refused("registerPushNotificationToken"))
        case m.SendPushNotification():
            logger.info("%s sendPushNotification: no push service", client.remote)
            send(wire.push_refused("sendPushNotification"))
        case m.GetBroadcastObject():
            await get_broadcast_object(client, send, command)
        case m.UpdateStreamMetaData():
            await client.update_metadata(command.stream_id, metadata_text(command.meta_data))
        case m.GetSubtracks():
            await get_subtracks(client, send, command)
        case m.GetSubtracksCount():
            await get_subtracks_count(client, send, command)
        case _:
            raise TypeError(f"no handler for {type(command).__name__}")


async def dispatch(
    client: Client,
    settings: AppSettings,
    send: Send,
    name: str,
    command: m.Command,
    frame: str,
    turn: TurnServers | None = None,
) -> None:
    """Run one command; any refusal is answered with an `error` and logged once."""
    try:
        if name not in m.NO_STREAM_ID:
            check_stream_id(command.stream_id)
        await handle(client, settings, send, command, frame, turn)
    except Exception as exc:
        if wire.is_refusal(exc):
            logger.info("%s %s(%s) refused: %s", client.remote, name, command.stream_id, exc)
        else:
            logger.exception("%s %s(%s) failed", client.remote, name, command.stream_id)
        send(wire.error_message(exc, command.stream_id))
