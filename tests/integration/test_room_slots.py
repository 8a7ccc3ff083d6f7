"""The room play as Ant Media offers it: ARDAMS msids in one MediaStream, video before audio,
last-N video slots (maxVideoTrackCount), who is talking, and the slot commands."""

from __future__ import annotations

import re

import pytest

from confero.server import Server
from tests.integration.test_conference import ROOM, Member, close_all
from tests.support import eventually
from tests.support.amsclient import Player

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
