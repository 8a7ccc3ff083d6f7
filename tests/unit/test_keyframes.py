"""The keyframe owner of a published video track: rate limit, reasons, counters, and the way
every request (a copy joining, resuming or resyncing, a player's PLI, the tick's retry) meets
the publisher in that one place. A fake clock stands in for time; nothing sleeps."""

from __future__ import annotations

import asyncio

import pytest
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from confero.media import fanout, rtp
from confero.media.downtrack import DownTrack
from confero.media.keyframes import PLI_INTERVAL, REASONS, KeyframeRequester
from confero.media.peer import PeerConfig
from confero.media.publisher import Publisher
from confero.media.uptrack import TrackRegistry, UpTrack

ENGINES = [fanout.PYTHON] + ([fanout.COMPILED] if fanout.COMPILED is not None else [])
VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)


class Clock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Sender:
    """Stands for the publisher's PLI path: records calls, and can refuse (no SSRC yet)."""

    def __init__(self) -> None:
        self.calls = 0
        self.can_send = True

    def __call__(self) -> bool:
        self.calls += 1
        return self.can_send


# --------------------------------------------------------------------------------------------
# KeyframeRequester alone
# --------------------------------------------------------------------------------------------


def test_one_pli_per_interval() -> None:
    clock, send = Clock(), Sender()
    requester = KeyframeRequester(send, clock=clock)
    assert requester.request("join")
    clock.now += PLI_INTERVAL / 3
    assert not requester.request("player")
    clock.now += PLI_INTERVAL / 3
    assert not requester.request("retry")
    assert send.calls == 1
    clock.now += PLI_INTERVAL / 3 + 0.001  # the interval counts from the PLI that went out
    assert requester.request("player")
    assert send.calls == 2
    assert (requester.sent, requester.throttled, requester.dropped) == (2, 2, 0)


def test_a_held_back_request_goes_out_when_the_interval_ends() -> None:
    """A player's PLI inside the interval is owed, not lost: its decoder waits for that keyframe."""
    clock, send = Clock(), Sender()
    requester = KeyframeRequester(send, clock=clock)
    assert not requester.settle()  # nothing owed
    assert requester.request("join")
    clock.now += PLI_INTERVAL / 2
    assert not requester.request("player")
    assert not requester.request("player")
    assert requester.owed
    assert not requester.settle()  # still inside the interval
    assert send.calls == 1
    clock.now += PLI_INTERVAL / 2 + 0.001
    assert requester.settle()  # two held-back requests, one PLI
    assert send.calls == 2 and not requester.owed
    assert not requester.settle()
    assert send.calls == 2
    assert (requester.sent, requester.throttled) == (2, 2)


def test_an_owed_request_is_paid_by_the_next_one_that_goes_out() -> None:
    clock, send = Clock(), Sender()
    requester = KeyframeRequester(send, clock=clock)
    requester.request("join")
    clock.now += PLI_INTERVAL / 2
    requester.request("player")
    clock.now += PLI_INTERVAL
    assert requester.request("player")  # this one goes out and covers the owed one
    assert not requester.owed and not requester.settle()
    assert send.calls == 2


def test_interval_is_a_parameter() -> None:
    clock, send = Clock(), Sender()
    requester = KeyframeRequester(send, interval=1.0, clock=clock)
    requester.request("join")
    clock.now += 0.5
    assert not requester.request("join")
    clock.now += 0.5
    assert requester.request("join")
    assert send.calls == 2


def test_counts_every_request_by_reason_sent_or_not() -> None:
    clock = Clock()
    requester = KeyframeRequester(Sender(), clock=clock)
    for reason in ("join", "join", "player", "retry", "resync", "resume", "player", "player", "moved"):
        requester.request(reason)
    assert requester.requests == {"join": 2, "resume": 1, "resync": 1, "player": 3, "retry": 1, "moved": 1}
    assert set(requester.requests) == set(REASONS)
    assert requester.total == 9
    assert requester.sent == 1 and requester.throttled == 8
    assert requester.dump() == {"requests": requester.requests, "sent": 1, "throttled": 8, "owed": True, "dropped": 0}
    # the dump is a copy, not the live counters
    dumped = requester.dump()["requests"]
    assert isinstance(dumped, dict)
    dumped["join"] = 99
    assert requester.requests["join"] == 2


def test_unknown_reason_is_refused_and_not_counted() -> None:
    send = Sender()
    requester = KeyframeRequester(send, clock=Clock())
    with pytest.raises(ValueError, match="unknown keyframe request reason"):
        requester.request("because")
    assert requester.total == 0 and send.calls == 0


def test_a_request_that_cannot_be_sent_does_not_start_the_interval() -> None:
    clock, send = Clock(), Sender()
    requester = KeyframeRequester(send, clock=clock)
    send.can_send = False  # no source SSRC or transport yet
    assert not requester.request("join")
    assert requester.dropped == 1 and requester.sent == 0
    send.can_send = True
    clock.now += 0.01  # well inside what would have been the interval
    assert requester.request("retry")
    assert (requester.sent, requester.throttled, requester.dropped) == (1, 0, 1)


def test_reset_lets_the_next_request_out_at_once() -> None:
    clock, send = Clock(), Sender()
    requester = KeyframeRequester(send, clock=clock)
    requester.request("join")
    clock.now += 0.01
    requester.reset()  # the source changed SSRC: the new one has never been asked
    assert requester.request("resync")
    assert send.calls == 2


# --------------------------------------------------------------------------------------------
# UpTrack and DownTrack: every request goes through the track's requester
# --------------------------------------------------------------------------------------------


def vp8_packet(seq: int, *, keyframe: bool, ssrc: int = 0x1234) -> bytes:
    # VP8 payload descriptor with S=1, partition 0; then the payload header's P bit
    # (0 for a keyframe)
    payload = b"\x10" + (b"\x00" if keyframe else b"\x01") + bytes(30)
    return rtp.HEADER.pack(0x80, 96, seq & 0xFFFF, seq * 3000, ssrc) + payload


class Track:
    """An UpTrack whose PLI path and clock are the test's."""

    def __init__(self, engine: fanout.Engine, codec: RTCRtpCodecParameters = VP8) -> None:
        self.sent: list[UpTrack] = []
        self.clock = Clock()
        kind = codec.mimeType.split("/")[0]
        self.uptrack = UpTrack(
            f"stream/{kind}/1",
            kind,
            codec,
            None,
            nack=False,
            send_pli=self._send_pli,
            send_nack=lambda _track, _lost: None,
            engine=engine,
        )
        if self.uptrack.requester is not None:
            # same PLI path, the test's clock
            self.uptrack.requester = KeyframeRequester(lambda: self._send_pli(self.uptrack), clock=self.clock)
        self.seq = 100

    def _send_pli(self, uptrack: UpTrack) -> bool:
        self.sent.append(uptrack)
        return True

    @property
    def requester(self) -> KeyframeRequester:
        assert self.uptrack.requester is not None
        return self.uptrack.requester

    def copy(self, ssrc: int) -> DownTrack:
        downtrack = DownTrack(
            self.uptrack,
            mid=str(ssrc),
            ssrc=ssrc,
            payload_type=96,
            rtx_ssrc=None,
            rtx_payload_type=None,
            extension=b"",
        )
        downtrack.start(None)  # no Output: the copy counts send errors, its state is what matters
        return downtrack

    def packet(self, *, keyframe: bool) -> None:
        self.seq += 1
        self.uptrack.receive(vp8_packet(self.seq, keyframe=keyframe))

    def wait_out_the_interval(self) -> None:
        self.clock.now += PLI_INTERVAL + 0.01


@pytest.fixture(params=ENGINES, ids=lambda e: e.name)
def engine(request: pytest.FixtureRequest) -> fanout.Engine:
    return request.param  # type: ignore[no-any-return]


def test_a_joining_copy_and_a_players_pli_meet_in_one_place(engine: fanout.Engine) -> None:
    track = Track(engine)
    first = track.copy(1)
    assert track.requester.requests["join"] == 1
    assert track.sent == [track.uptrack]
    second = track.copy(2)  # joins within the interval: counted, not sent again
    first.request_keyframe()  # the player's PLI, also within the interval
    assert track.requester.requests == {"join": 2, "resume": 0, "resync": 0, "player": 1, "retry": 0, "moved": 0}
    assert len(track.sent) == 1 and track.requester.throttled == 2
    assert first.keyframe_requests == 1 and second.keyframe_requests == 0
    track.wait_out_the_interval()
    second.request_keyframe()
    assert len(track.sent) == 2
    assert track.uptrack.stats().keyframe_requests == 2  # PLIs that went to the publisher
    assert track.uptrack.dump()["keyframeRequests"] == track.requester.dump()


def test_the_uptrack_alone_counts_the_copies_waiting(engine: fanout.Engine) -> None:
    track = Track(engine)
    uptrack = track.uptrack
    first, second = track.copy(1), track.copy(2)
    assert uptrack.pending == 2 and first.waiting and second.waiting
    track.packet(keyframe=False)
    assert uptrack.pending == 2 and uptrack.keyframes == 0
    track.packet(keyframe=True)  # both start on it: the started indices take the count down
    assert uptrack.pending == 0
    assert not first.waiting and not second.waiting
    assert uptrack.keyframes == 1
    track.packet(keyframe=True)  # nobody waits: no detection, nothing counted
    assert uptrack.keyframes == 1 and uptrack.pending == 0
    third = track.copy(3)
    assert uptrack.pending == 1
    third.stop()  # a waiting copy leaves
    assert uptrack.pending == 0 and third not in uptrack.downtracks
    first.stop()  # a started one leaves
    assert uptrack.pending == 0 and uptrack.downtracks == [second]


def test_pause_and_resume(engine: fanout.Engine) -> None:
    track = Track(engine)
    uptrack = track.uptrack
    waiting = track.copy(1)
    waiting.set_enabled(False)  # a paused copy cannot start, so it is not waiting for a keyframe
    assert uptrack.pending == 0 and not waiting.enabled
    track.packet(keyframe=True)
    assert waiting.waiting  # it did not start
    track.wait_out_the_interval()
    waiting.set_enabled(True)
    assert uptrack.pending == 1
    assert track.requester.requests["resume"] == 1 and len(track.sent) == 2
    track.packet(keyframe=True)
    assert uptrack.pending == 0 and not waiting.waiting

    waiting.set_enabled(False)  # a started copy pauses: nothing to wait for
    assert uptrack.pending == 0
    waiting.set_enabled(False)  # idempotent
    assert uptrack.pending == 0
    track.packet(keyframe=False)
    waiting.set_enabled(True)  # resumes at the next keyframe, with its numbering continued
    assert uptrack.pending == 1 and waiting.waiting
    assert track.requester.requests["resume"] == 2
    waiting.set_enabled(True)  # idempotent
    assert uptrack.pending == 1 and track.requester.requests["resume"] == 2
    track.packet(keyframe=True)
    assert uptrack.pending == 0 and not waiting.waiting


def test_a_new_source_restarts_the_started_copies_with_one_request(engine: fanout.Engine) -> None:
    track = Track(engine)
    uptrack = track.uptrack
    copies = [track.copy(1), track.copy(2)]
    track.packet(keyframe=True)
    assert uptrack.pending == 0
    late = track.copy(3)  # still waiting when the source changes
    paused = copies[1]
    paused.set_enabled(False)
    sent = len(track.sent)
    uptrack.reset_source()  # inside the interval, but the new SSRC has never been asked
    assert track.requester.requests["resync"] == 1
    assert len(track.sent) == sent + 1
    # the started, enabled copy waits again; the waiting one was counted already; the paused
    # one restarts when it resumes
    assert copies[0].waiting and late.waiting and not paused.waiting
    assert uptrack.pending == 2
    track.packet(keyframe=True)
    assert uptrack.pending == 0


def test_audio_has_no_keyframe_requests() -> None:
    track = Track(fanout.PYTHON, OPUS)
    uptrack = track.uptrack
    assert uptrack.requester is None
    copy = track.copy(1)
    assert uptrack.pending == 1
    assert not uptrack.request_keyframe("player")
    copy.request_keyframe()
    assert track.sent == []
    # every audio packet is a valid start
    uptrack.receive(rtp.HEADER.pack(0x80, 111, 1, 960, 0x55) + bytes(20))
    assert uptrack.pending == 0 and not copy.waiting
    assert uptrack.stats().keyframe_requests == 0
    assert uptrack.dump()["keyframeRequests"] is None


def test_a_closed_track_takes_no_copies(engine: fanout.Engine) -> None:
    track = Track(engine)
    copy = track.copy(1)
    track.uptrack.close()
    assert not copy.attached and track.uptrack.pending == 0 and track.uptrack.downtracks == []
    later = track.copy(2)
    assert not later.attached and track.uptrack.downtracks == []
    assert copy.sender_report() is None


# --------------------------------------------------------------------------------------------
# Publisher: the housekeeping tick retries while copies wait, through the same requester
# --------------------------------------------------------------------------------------------


async def test_the_tick_retries_while_copies_wait() -> None:
    registry = TrackRegistry()
    publisher = Publisher(PeerConfig(engine=fanout.PYTHON), "stream", registry=registry)
    try:
        uptrack = UpTrack(
            "stream/video/1",
            "video",
            VP8,
            None,
            nack=False,
            send_pli=publisher._send_pli,
            send_nack=publisher._send_nack,
            engine=fanout.PYTHON,
        )
        publisher.uptracks.append(uptrack)
        loop = asyncio.get_running_loop()
        publisher.tick(loop.time())
        assert uptrack.requester is not None
        assert uptrack.requester.total == 0  # nobody waits
        copy = DownTrack(uptrack, mid="0", ssrc=7, payload_type=96, rtx_ssrc=None, rtx_payload_type=None, extension=b"")
        copy.start(None)
        publisher.tick(loop.time())
        assert uptrack.requester.requests["join"] == 1
        assert uptrack.requester.requests["retry"] == 1
        # no source SSRC and no transport yet: nothing could be sent, and nothing was
        assert uptrack.requester.dropped == 2 and uptrack.requester.sent == 0
    finally:
        await publisher.close()
    assert uptrack.closed and not copy.attached
