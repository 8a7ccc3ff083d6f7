"""KeyframeRequester: the one owner of a published video track's keyframe requests.

Every reason to ask the publisher for a keyframe meets here: a copy joining the track, a copy
resuming after a pause, the source restarting with a new SSRC, a player's PLI or FIR, the
housekeeping tick while copies still wait, and a player that moved to a new address. The requester counts each request by its reason,
applies the track's rate limit (one PLI per `PLI_INTERVAL`), and is the only caller of the
function that sends the PLI. Nothing here runs per packet.
"""

from __future__ import annotations

import time
from collections.abc import Callable

PLI_INTERVAL = 0.3  # at most one PLI per track in this many seconds

#: Why a keyframe was requested.
#: join: a copy attached to the track and waits for its first keyframe;
#: resume: a paused copy was enabled again and restarts at the next keyframe;
#: resync: the source changed SSRC, so every started copy restarts at the next keyframe;
#: player: a player sent PLI or FIR for its copy;
#: retry: the housekeeping tick, while some copy still waits;
#: moved: a player's address changed, and what was sent to the old one is lost.
REASONS = ("join", "resume", "resync", "player", "retry", "moved")


class KeyframeRequester:
    """Rate limit, counters and the PLI path of one published video track.

    `send()` sends one PLI to the publisher and returns False when it could not (no source
    SSRC or no transport yet); such a request does not start the rate limit's interval.
    `clock` returns seconds (monotonic); tests pass a fake one.
    """

    __slots__ = ("_clock", "_interval", "_last", "_send", "dropped", "owed", "requests", "sent", "throttled")

    def __init__(
        self,
        send: Callable[[], bool],
        *,
        interval: float = PLI_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._interval = interval
        self._clock = clock
        self._last: float | None = None
        self.requests: dict[str, int] = dict.fromkeys(REASONS, 0)
        self.sent = 0  # PLIs sent to the publisher
        self.throttled = 0  # requests inside the interval after the last PLI
        self.owed = False  # a throttled request is waiting for the interval to end
        self.dropped = 0  # requests that found nothing to send on

    def request(self, reason: str) -> bool:
        """Ask for a keyframe; True when a PLI went to the publisher."""
        if reason not in self.requests:
            raise ValueError(f"unknown keyframe request reason {reason!r}")
        self.requests[reason] += 1
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            self.throttled += 1
            self.owed = True  # sent by settle() once the interval is over, not dropped
            return False
        return self._send_pli(now)

    def settle(self) -> bool:
        """Send the request the rate limit held back, once its interval is over (the housekeeping
        tick calls this). Requests held back in one interval make one PLI; True if it was sent."""
        if not self.owed:
            return False
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            return False
        return self._send_pli(now)

    def _send_pli(self, now: float) -> bool:
        """One PLI to the publisher; it pays what is owed, and starts the interval if it went out."""
        self.owed = False
        if not self._send():
            self.dropped += 1
            return False
        self._last = now
        self.sent += 1
        return True

    def reset(self) -> None:
        """The source restarted (new SSRC): its first request goes out at once."""
        self._last = None

    @property
    def total(self) -> int:
        """Requests of every reason, sent or not."""
        return sum(self.requests.values())

    def dump(self) -> dict[str, object]:
        return {
            "requests": dict(self.requests),
            "sent": self.sent,
            "throttled": self.throttled,
            "owed": self.owed,
            "dropped": self.dropped,
        }
