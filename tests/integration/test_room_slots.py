"""The room play as Ant Media offers it: ARDAMS msids in one MediaStream, video before audio,
last-N video slots (maxVideoTrackCount), who is talking, and the slot commands."""

from __future__ import annotations

import json
import math
import re
import struct

import pytest

from confero.server import Server
from tests.integration.test_conference import ROOM, Member, close_all
from tests.support import eventually
from tests.support.amsclient import Player, Publisher, SineAudioTrack, build_publisher_pc

pytestmark = pytest.mark.integration


def sections(sdp: str) -> list[tuple[str, str, str]]:
    """(kind, mid, msid) of every m-section of `sdp`, in order."""
    out = []
    for section in sdp.split("\r\nm=")[1:]:
        kind = section.split(" ", 1)[0]
        mid = re.search(r"a=mid:(\S+)", section)
        msid = re.search(r"a=msid:(\S+ \S+)", section)
        out.append((kind, mid.group(1) if mid else "", msid.group(1) if msid else ""))
    return out


async def room_play(member: Member) -> Player:
    track_list = [*member.joined["streams"], "!" + member.stream_id]
    return await member.play(ROOM, room=ROOM, track_list=track_list)


async def test_msids_are_ardams_in_one_stream_and_video_comes_first(server: Server) -> None:
    members: list[Member] = []
    try:
        for i in range(3):
            member = await Member.join(server, f"s{i}")
            await member.publish(room=ROOM)
            members.append(member)
        player = await room_play(members[0])
        want = {"ARDAMSvs1", "ARDAMSas1", "ARDAMSvs2", "ARDAMSas2"}
        await eventually(lambda: want <= set(player.id_mapping.values()), timeout=15, what="idMapping")
        assert player.offer_sdp is not None
        media = [s for s in sections(player.offer_sdp) if s[0] in ("audio", "video")]
        assert [(kind, msid) for kind, _, msid in media] == [
            ("video", f"{ROOM} ARDAMSvs1"),
            ("audio", f"{ROOM} ARDAMSas1"),
            ("video", f"{ROOM} ARDAMSvs2"),
            ("audio", f"{ROOM} ARDAMSas2"),
        ]
        for _, mid, msid in media:
            assert player.id_mapping[mid] == msid.split()[1]
        # the browser-side view: every remote track is in one MediaStream with ARDAMS ids
        assert player.pc is not None
        tracks = {t.receiver.track.id for t in player.pc.getTransceivers() if t.receiver.track is not None}
        assert want <= tracks

        # a 1-N play of one member: its own stream id, video first
        single = await members[1].play("s2")
        assert single.offer_sdp is not None
        media = [s for s in sections(single.offer_sdp) if s[0] in ("audio", "video")]
        assert [(kind, msid) for kind, _, msid in media] == [("video", "s2 ARDAMSvs2"), ("audio", "s2 ARDAMSas2")]
        await single.wait_frames(5, 5, timeout=20)
    finally:
        await close_all(members)


class Voice(SineAudioTrack):
    """A sine tone whose loudness a test turns up and down (silence: level 127)."""

    def __init__(self) -> None:
        super().__init__(amplitude=0.0)

    def set_amplitude(self, amplitude: float) -> None:
        peak = int(32767 * amplitude)
        samples = [int(peak * math.sin(2 * math.pi * 400 * i / self.SAMPLE_RATE)) for i in range(self.SAMPLES)]
        self._pcm = struct.pack(f"<{self.SAMPLES}h", *samples)


def data_events(player: Player, event_type: str) -> list[dict]:
    out = []
    for data in player.data_messages:
        try:
            message = json.loads(data)
        except (TypeError, ValueError):
            continue
        if isinstance(message, dict) and message.get("eventType") == event_type:
            out.append(message)
    return out


def assignment(player: Player) -> dict[str, str]:
    """The last VIDEO_TRACK_ASSIGNMENT_LIST: label -> stream id."""
    lists = data_events(player, "VIDEO_TRACK_ASSIGNMENT_LIST")
    return {a["videoLabel"]: a["trackId"] for a in lists[-1]["payload"]} if lists else {}


async def test_four_members_two_video_slots_the_loudest_takes_one_and_a_pin_holds(server: Server) -> None:
    server.applications["WebRTCAppEE"].app_settings.maxVideoTrackCount = 2
    members: list[Member] = []
    voices: dict[str, Voice] = {}
    try:
        for i in range(4):
            sid = f"v{i}"
            member = await Member.join(server, sid)
            voice = voices[sid] = Voice()
            member.publisher = Publisher(
                member.sock,
                sid,
                codec="VP8",
                extra={"mainTrack": ROOM},
                media_factory=lambda voice=voice: build_publisher_pc("VP8", audio_track=voice),
            )
            await member.publisher.start()
            await member.sock.wait_for(definition="publish_started", stream_id=sid, timeout=10)
            members.append(member)
        player = await room_play(members[0])
        slots = {"ARDAMSvvideoTrack0", "ARDAMSvvideoTrack1"}
        audio = {"ARDAMSav1", "ARDAMSav2", "ARDAMSav3"}
        await eventually(lambda: set(player.id_mapping.values()) == slots | audio, timeout=15, what="2 slots, 3 audio")
        assert player.offer_sdp is not None
        media = [s for s in sections(player.offer_sdp) if s[0] in ("audio", "video")]
        assert [kind for kind, _, _ in media] == ["video", "video", "audio", "audio", "audio"]
        assert {msid for _, _, msid in media} == {f"{ROOM} {t}" for t in slots | audio}
        await eventually(
            lambda: assignment(player) == {"videoTrack0": "v1", "videoTrack1": "v2"}, timeout=15, what="assignments"
        )
        await eventually(lambda: all(player.frames_for(s) >= 10 for s in slots), timeout=30, what="video on both slots")
        offers = len(player.offers)

        # v3 talks: it takes a slot from a silent member, on the same m-line (no new offer)
        voices["v3"].set_amplitude(0.5)
        await eventually(lambda: "v3" in assignment(player).values(), timeout=20, what="v3 in a slot")
        talking = data_events(player, "AUDIO_TRACK_ASSIGNMENT")[-1]["payload"]
        assert {t["trackId"] for t in talking} == {"v1", "v2", "v3"}
        assert [t["audioLevel"] < 60 for t in talking if t["trackId"] == "v3"] == [True]
        assert all(t["audioLevel"] == 127 for t in talking if t["trackId"] != "v3")
        label = next(lab for lab, sid in assignment(player).items() if sid == "v3")
        before = player.frames_for(f"ARDAMSv{label}")
        await eventually(
            lambda: player.frames_for(f"ARDAMSv{label}") >= before + 15, timeout=20, what="frames after the switch"
        )
        assert len(player.offers) == offers
        assert player.decode_errors == 0

        # pin the silent member left out into v3's slot: it holds while v3 keeps talking
        out = ({"v1", "v2"} - set(assignment(player).values())).pop()
        await members[0].sock.send(
            {"command": "assignVideoTrackCommand", "streamId": out, "videoTrackId": label, "enabled": True}
        )
        await eventually(lambda: assignment(player).get(label) == out, timeout=10, what="the pin")
        pinned = [a for a in data_events(player, "VIDEO_TRACK_ASSIGNMENT_LIST")[-1]["payload"] if a["reserved"]]
        assert pinned == [{"videoLabel": label, "trackId": out, "reserved": True}]
        await eventually(lambda: "v3" in assignment(player).values(), timeout=20, what="v3 back in the other slot")
        assert assignment(player)[label] == out
        await members[0].sock.send({"command": "getVideoTrackAssignmentsCommand", "streamId": ROOM})
        count = len(data_events(player, "VIDEO_TRACK_ASSIGNMENT_LIST"))
        await eventually(
            lambda: len(data_events(player, "VIDEO_TRACK_ASSIGNMENT_LIST")) > count,
            timeout=10,
            what="the list on request",
        )
        assert len(player.offers) == offers
    finally:
        await close_all(members)


class AnswerLog(Player):
    """A room play that notes, for every offer, its video labels and how many data-channel
    messages had arrived when its answer was sent."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.answered: list[tuple[set[str], int]] = []

    def after_answer(self, pc: object, offer: dict) -> None:
        labels = {tid.removeprefix("ARDAMSv") for tid in self.id_mapping.values() if tid.startswith("ARDAMSv")}
        self.answered.append((labels, len(self.data_messages)))


def assignment_lists(player: Player) -> list[tuple[int, dict[str, str]]]:
    """(index in data_messages, label -> stream id) of every VIDEO_TRACK_ASSIGNMENT_LIST."""
    out = []
    for i, data in enumerate(list(player.data_messages)):
        try:
            message = json.loads(data)
        except (TypeError, ValueError):
            continue
        if isinstance(message, dict) and message.get("eventType") == "VIDEO_TRACK_ASSIGNMENT_LIST":
            out.append((i, {a["videoLabel"]: a["trackId"] for a in message["payload"]}))
    return out


async def test_members_join_in_turn_with_a_slot_limit_the_first_gets_the_third(server: Server) -> None:
    """Circle's flow: the first member plays the room, sets its own limit with its publish
    stream id (setMaxVideoTrackCountCommand), then two members join one after the other.
    Its room play gets a slot for each with the newcomer's video, the list names both, and a
    list naming a new slot comes only after the player has answered the offer bringing it
    (sent with the offer, it lands while Circle applies that offer and loses the tile)."""
    members: list[Member] = []
    try:
        first = await Member.join(server, "c0")
        await first.publish(room=ROOM)
        members.append(first)
        player = AnswerLog(first.sock, ROOM, room=ROOM, track_list=["!c0"])
        first.players[ROOM] = player
        await player.start()
        await first.sock.send({"command": "setMaxVideoTrackCountCommand", "streamId": "c0", "maxTrackCount": 5})
        for n, sid in enumerate(["c1", "c2"]):
            member = await Member.join(server, sid)
            await member.publish(room=ROOM)
            members.append(member)
            want = {f"videoTrack{i}": f"c{i + 1}" for i in range(n + 1)}
            await eventually(lambda want=want: assignment(player) == want, timeout=15, what=f"the list after {sid}")
            label = f"videoTrack{n}"
            await eventually(
                lambda label=label: player.frames_for(f"ARDAMSv{label}") >= 10, timeout=30, what=f"{sid}'s video"
            )
            # the first list naming the new slot came after the answer to the offer that brought it
            answered_at = next(count for labels, count in player.answered if label in labels)
            first_named = next(i for i, lst in assignment_lists(player) if label in lst)
            assert first_named >= answered_at, (label, player.answered, assignment_lists(player))
        # the 3 s poll gets the whole list back
        await first.sock.send({"command": "getVideoTrackAssignmentsCommand", "streamId": ROOM})
        count = len(assignment_lists(player))
        await eventually(lambda: len(assignment_lists(player)) > count, timeout=10, what="the list on request")
        assert assignment_lists(player)[-1][1] == {"videoTrack0": "c1", "videoTrack1": "c2"}
        assert player.decode_errors == 0
    finally:
        await close_all(members)
