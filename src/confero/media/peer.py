"""Peer: one server-side RTCPeerConnection with offer/answer, trickle ICE, state and close().

Publisher and Subscriber build on it. A Peer reports upwards only through the callbacks it was
given (`on_connected()`, `on_closed(reason)`, `on_data(data)`); it never knows which stream,
room or client owns it. `on_closed` is called exactly once, with the first reason, whether the
owner closed the peer or ICE/DTLS ended it. Failures are the typed errors of `media/types.py`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceCandidate,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.sdp import candidate_from_sdp

from confero.media.aiortc_hooks import IcePolicy, remote_addresses, reset_ice_policy, set_ice_policy
from confero.media.fanout import Engine, select
from confero.media.types import BadCandidate, LocalCandidate, SdpError

logger = logging.getLogger(__name__)

OnConnected = Callable[[], None]
OnClosed = Callable[[str], None]
OnData = Callable[[str | bytes], None]

MAX_PENDING_CANDIDATES = 64
MAX_DATA_BACKLOG = 256


@dataclass(frozen=True)
class IceServer:
    """A STUN or TURN server for the server's own peers (its URLs and, for TURN, credentials)."""

    urls: tuple[str, ...]
    username: str = ""
    credential: str = ""


def _no_ice_servers() -> tuple[IceServer, ...]:
    return ()


@dataclass
class PeerConfig:
    """What every server peer shares: ICE gathering policy, the announced address and the
    STUN/TURN servers, asked for per peer (TURN credentials are time-limited)."""

    ice: IcePolicy = field(default_factory=IcePolicy)
    announced_address: str | None = None
    ice_servers: Callable[[], tuple[IceServer, ...]] = _no_ice_servers
    max_bitrate: int = 2_500_000
    engine: Engine = field(default_factory=select)
    #: Seconds without media from a connected peer that expects some before it is closed
    #: ("media_timeout"); 0 never. Sampled on the housekeeping tick, never per packet.
    media_timeout: float = 0.0


_CANDIDATE_RE = re.compile(r"^(a=candidate:\S+ \d+ \S+ \d+ )(\S+)( \d+ typ host.*)$", re.M)


def _noop(*args: object) -> None:
    pass


class Peer:
    """Base of Publisher and Subscriber: owns one RTCPeerConnection."""

    role = "peer"

    def __init__(
        self,
        config: PeerConfig,
        name: str,
        *,
        on_connected: OnConnected | None = None,
        on_closed: OnClosed | None = None,
        on_data: OnData | None = None,
    ) -> None:
        self.config = config
        self.name = name
        servers = [RTCIceServer(list(s.urls), s.username or None, s.credential or None) for s in config.ice_servers()]
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self._closed = False
        self._connected = False
        self.close_reason = ""
        self._on_connected: OnConnected = on_connected or _noop
        self._on_closed: OnClosed = on_closed or _noop
        self._on_data: OnData = on_data or _noop
        self._close_task: asyncio.Task[None] | None = None
        self._closed_done = asyncio.Event()
        self._remote_set = False
        self._pending_candidates: list[RTCIceCandidate] = []
        self.pc.on("connectionstatechange", self._connection_state_changed)
        self.data_channel: Any = None
        self._data_backlog: list[str | bytes] = []
        self.data_sent = 0
        self.data_received = 0
        self.data_dropped = 0
        self.candidates_failed = 0
        self.rtcp_received = 0  # RTCP compound packets from the remote side
        self._activity = -1  # the last sample of the subclass's receive counters
        self._activity_at = 0.0  # when that sample changed (or media stopped being expected)

    # -- state ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """ICE and DTLS came up (stays True once it was)."""
        return self._connected

    @property
    def closed(self) -> bool:
        return self._closed

    def closed_meanwhile(self) -> bool:
        """`closed`, read again after an await (a type checker keeps what it saw before one)."""
        return self._closed

    def _connection_state_changed(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and not self._connected and not self._closed:
            self._connected = True
            self._call("on_connected", self._on_connected)
        elif state in ("failed", "closed") and not self._closed:
            logger.info("%s %s: connection %s", self.role, self.name, state)
            self.close_soon("ice_failed" if state == "failed" else "closed")

    def check_activity(self, now: float, activity: int, *, expecting: bool = True) -> None:
        """On the housekeeping tick: `activity` is a counter of what came in (packets); when it
        has not moved for `media_timeout` seconds while media was `expecting`, close the peer
        ("media_timeout") as if ICE had failed: its owner hears of it through `on_closed`."""
        if self._closed or not self._connected:
            return
        if activity != self._activity or not expecting or not self._activity_at:
            self._activity = activity
            self._activity_at = now
            return
        timeout = self.config.media_timeout
        if 0 < timeout <= now - self._activity_at:
            logger.info("%s %s: no media for %.1f s", self.role, self.name, now - self._activity_at)
            self.close_soon("media_timeout")

    def idle_seconds(self) -> float:
        """Seconds since media last came in, as the housekeeping tick saw it (0 until the peer
        connected and media was expected; a quarter-second resolution)."""
        if not self._activity_at or self._closed:
            return 0.0
        return max(0.0, time.monotonic() - self._activity_at)

    def _call(self, what: str, callback: Callable[..., None], *args: object) -> None:
        """Run an owner's callback; its failure is logged, never raised into aiortc or close()."""
        try:
            callback(*args)
        except Exception:
            logger.exception("%s %s: %s callback failed", self.role, self.name, what)

    def close_soon(self, reason: str) -> None:
        """Close from a synchronous callback (ICE failure); the task is tracked and awaited."""
        if self._closed or self._close_task is not None:
            return
        self._close_task = asyncio.get_running_loop().create_task(self.close(reason))

    async def close(self, reason: str = "closed") -> None:
        """Idempotent: release the children (subclass hook), then the peer connection; then
        `on_closed(reason)`, once. A second caller waits until the first one has finished."""
        if self._closed:
            await self._closed_done.wait()
            return
        self._closed = True
        self.close_reason = reason
        try:
            self._close_children()
            await self.pc.close()
        finally:
            callback = self._on_closed
            self._on_closed = self._on_connected = self._on_data = _noop
            self._data_backlog.clear()
            self._pending_candidates.clear()
            self._closed_done.set()
            self._call("on_closed", callback, reason)

    def _close_children(self) -> None:
        """Subclasses detach their tracks here, before the peer connection closes."""

    # -- data channel ----------------------------------------------------------------------

    def attach_channel(self, channel: Any) -> None:
        """Use `channel` for this peer's data: messages in go to `on_data`, `send_data` goes out."""
        self.data_channel = channel
        channel.on("message", self._data_message)
        channel.on("open", self._flush_data)
        if channel.readyState == "open":
            self._flush_data()

    def _data_message(self, data: str | bytes) -> None:
        self.data_received += 1
        if not self._closed:
            self._call("on_data", self._on_data, data)

    def _flush_data(self) -> None:
        backlog, self._data_backlog = self._data_backlog, []
        for data in backlog:
            self.send_data(data)

    def send_data(self, data: str | bytes) -> bool:
        """Send on the data channel; queued (up to 256 messages) until it opens. False when
        the message was not sent now (queued, or dropped)."""
        channel = self.data_channel
        if channel is None or self._closed or channel.readyState in ("closing", "closed"):
            self.data_dropped += 1
            return False
        if channel.readyState != "open":
            if len(self._data_backlog) < MAX_DATA_BACKLOG:
                self._data_backlog.append(data)
            else:
                self.data_dropped += 1
            return False
        channel.send(data)
        self.data_sent += 1
        return True

    # -- SDP -----------------------------------------------------------------------------

    async def _set_remote(self, sdp: str, kind: str) -> None:
        if not sdp.lstrip().startswith("v=0"):  # aiortc's parser takes anything, even no SDP at all
            raise SdpError(f"the {kind} is not an SDP description", side="remote")
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
        except Exception as exc:  # aiortc raises ValueError, InvalidStateError, and others
            raise SdpError(f"the {kind} could not be applied: {exc}", side="remote") from exc
        self._remote_set = True
        pending, self._pending_candidates = self._pending_candidates, []
        for candidate in pending:
            if not self._has_mline(candidate.sdpMid, candidate.sdpMLineIndex):
                self.candidates_failed += 1
                continue
            try:
                await self.pc.addIceCandidate(candidate)
            except Exception as exc:  # it parsed when it arrived; the description decides now
                self.candidates_failed += 1
                logger.info("%s %s: queued candidate not added: %s", self.role, self.name, exc)

    async def _set_local(self, description: RTCSessionDescription) -> None:
        token = set_ice_policy(self.config.ice)
        try:
            await self.pc.setLocalDescription(description)
        except Exception as exc:
            raise SdpError(f"our {description.type} could not be applied: {exc}", side="local") from exc
        finally:
            reset_ice_policy(token)

    def local_sdp(self) -> str:
        description: RTCSessionDescription | None = self.pc.localDescription  # None before the first
        if description is None:
            return ""
        sdp: str = description.sdp
        if self.config.announced_address:
            sdp = _CANDIDATE_RE.sub(rf"\g<1>{self.config.announced_address}\g<3>", sdp)
        return sdp

    def local_candidates(self) -> list[LocalCandidate]:
        """The gathered candidates of the first m-line (the BUNDLE transport), for trickling."""
        out: list[LocalCandidate] = []
        index = -1
        mid: str | None = None
        for line in self.local_sdp().splitlines():
            if line.startswith("m="):
                index += 1
                mid = None
            elif line.startswith("a=mid:"):
                mid = line[6:]
            elif line.startswith("a=candidate:") and index == 0:
                out.append(LocalCandidate(index, mid, line[2:]))
        return out

    # -- ICE -----------------------------------------------------------------------------

    async def add_candidate(self, candidate: str, mid: str | None, index: int | None) -> None:
        """A trickled remote candidate; queued until the remote description is set.

        An empty one (end-of-candidates), a TCP one and an mDNS name are ignored: aiortc speaks
        UDP only, and mDNS would need multicast lookups. Raises BadCandidate for one that
        does not parse or that aiortc refuses.
        """
        if self._closed:
            return
        parsed = parse_candidate(candidate)
        if parsed is None:
            return
        if mid is None and index is None:
            raise BadCandidate("a candidate needs an m-line: a mid or an index")
        parsed.sdpMid = mid
        parsed.sdpMLineIndex = index
        if not self._remote_set:
            if len(self._pending_candidates) < MAX_PENDING_CANDIDATES:
                self._pending_candidates.append(parsed)
            return
        if not self._has_mline(mid, index):
            raise BadCandidate(f"the candidate's m-line (mid {mid}, index {index}) is not in the session")
        try:
            await self.pc.addIceCandidate(parsed)
        except Exception as exc:
            raise BadCandidate(f"the candidate could not be added: {exc}") from exc

    def _has_mline(self, mid: str | None, index: int | None) -> bool:
        """The remote description has an m-line with this mid, or this index (as aiortc matches)."""
        description: RTCSessionDescription | None = self.pc.remoteDescription
        if description is None:
            return False
        mids: list[str | None] = []
        for line in description.sdp.splitlines():
            if line.startswith("m="):
                mids.append(None)
            elif line.startswith("a=mid:") and mids:
                mids[-1] = line[6:].strip()
        return (mid is not None and mid in mids) or (index is not None and 0 <= index < len(mids))

    def remote_addresses(self) -> list[tuple[str, int]]:
        """Where the peer is now (its nominated ICE pairs' remote addresses)."""
        return remote_addresses(self.pc)

    def dump(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "connectionState": self.pc.connectionState,
            "remote": [f"{host}:{port}" for host, port in self.remote_addresses()],
            "closed": self._closed,
            "data": {"sent": self.data_sent, "received": self.data_received, "dropped": self.data_dropped},
        }


def parse_candidate(candidate: str) -> RTCIceCandidate | None:
    """The `candidate:` line (with or without "a=" and "candidate:") as aiortc's candidate;
    None for one to ignore (end-of-candidates, TCP, mDNS). Raises BadCandidate."""
    text = candidate.strip()
    if text.startswith("a="):
        text = text[2:]
    if text.startswith("candidate:"):
        text = text[len("candidate:") :]
    if not text:
        return None  # end-of-candidates
    if len(text.split()) < 8:
        raise BadCandidate(f"not a candidate line: {candidate!r}")
    try:
        parsed = candidate_from_sdp(text)
    except (ValueError, IndexError, AssertionError) as exc:
        raise BadCandidate(f"not a candidate line: {candidate!r}") from exc
    if parsed.protocol.lower() != "udp" or parsed.ip.endswith(".local"):
        return None
    try:
        ipaddress.ip_address(parsed.ip)
    except ValueError as exc:
        raise BadCandidate(f"not an IP address: {parsed.ip!r}") from exc
    if not 0 < parsed.port < 65536:
        raise BadCandidate(f"not a UDP port: {parsed.port}")
    return parsed
