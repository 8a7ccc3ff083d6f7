"""Peer: one server-side RTCPeerConnection with offer/answer, trickle ICE, state and close().

Publisher and Subscriber build on it. A Peer reports upwards only through the callbacks it was
given (`on_closed`, `on_connected`); it never knows which stream, room or client owns it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

from confero.media import aiortc_hooks, fanout
from confero.media.aiortc_hooks import IcePolicy

logger = logging.getLogger(__name__)


class MediaError(Exception):
    """An SDP or ICE input the media plane cannot use; `reason` names it for the caller."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class LocalCandidate:
    """A server ICE candidate for trickling: m-line index, mid and the `candidate:` line."""

    index: int
    mid: str | None
    candidate: str


@dataclass
class PeerConfig:
    """What every server peer shares: ICE gathering policy and the announced address."""

    ice: IcePolicy = field(default_factory=IcePolicy)
    announced_address: str | None = None
    max_bitrate: int = 2_500_000
    engine: fanout.Engine = field(default_factory=fanout.select)


_CANDIDATE_RE = re.compile(r"^(a=candidate:\S+ \d+ \S+ \d+ )(\S+)( \d+ typ host.*)$", re.M)


class Peer:
    """Base of Publisher and Subscriber: owns one RTCPeerConnection."""

    role = "peer"

    def __init__(
        self,
        config: PeerConfig,
        name: str,
        *,
        on_closed: Callable[[Peer, str], None] | None = None,
        on_connected: Callable[[Peer], None] | None = None,
        on_data: Callable[[Peer, str | bytes], None] | None = None,
    ) -> None:
        self.config = config
        self.name = name
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.closed = False
        self.connected = False
        self.close_reason = ""
        self._on_closed = on_closed
        self._on_connected = on_connected
        self._close_task: asyncio.Task[None] | None = None
        self._closed_done = asyncio.Event()
        self._remote_set = False
        self._pending_candidates: list[tuple[str, str | None, int | None]] = []
        self.pc.on("connectionstatechange", self._connection_state_changed)
        self._on_data = on_data
        self.data_channel: Any = None
        self._data_backlog: list[str | bytes] = []
        self.data_sent = 0
        self.data_received = 0
        self.data_dropped = 0

    # -- state ---------------------------------------------------------------------------

    def _connection_state_changed(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and not self.connected:
            self.connected = True
            if self._on_connected is not None:
                self._on_connected(self)
        elif state in ("failed", "closed") and not self.closed:
            logger.info("%s %s: connection %s", self.role, self.name, state)
            self.close_soon("ice_failed" if state == "failed" else "closed")

    def close_soon(self, reason: str) -> None:
        """Close from a synchronous callback (ICE failure); the task is tracked and awaited."""
        if self.closed or self._close_task is not None:
            return
        self._close_task = asyncio.get_running_loop().create_task(self.close(reason))

    async def close(self, reason: str = "closed") -> None:
        """Idempotent: release the children (subclass hook), then the peer connection.

        A second caller waits until the first one has finished.
        """
        if self.closed:
            await self._closed_done.wait()
            return
        self.closed = True
        self.close_reason = reason
        try:
            self._close_children()
            await self.pc.close()
        finally:
            callback, self._on_closed, self._on_connected = self._on_closed, None, None
            self._on_data = None
            self._data_backlog.clear()
            self._closed_done.set()
            if callback is not None:
                callback(self, reason)

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
        if self._on_data is not None and not self.closed:
            self._on_data(self, data)

    def _flush_data(self) -> None:
        backlog, self._data_backlog = self._data_backlog, []
        for data in backlog:
            self.send_data(data)

    def send_data(self, data: str | bytes) -> bool:
        """Send on the data channel; queued (up to 256 messages) until it opens."""
        channel = self.data_channel
        if channel is None or self.closed or channel.readyState in ("closing", "closed"):
            self.data_dropped += 1
            return False
        if channel.readyState != "open":
            if len(self._data_backlog) < 256:
                self._data_backlog.append(data)
            else:
                self.data_dropped += 1
            return False
        channel.send(data)
        self.data_sent += 1
        return True

    # -- SDP -----------------------------------------------------------------------------

    async def _set_remote(self, sdp: str, kind: str) -> None:
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
        except Exception as exc:  # aiortc raises ValueError, InvalidStateError, and others
            raise MediaError("notSetRemoteDescription", str(exc)) from exc
        self._remote_set = True
        for candidate, mid, index in self._pending_candidates:
            await self._add_candidate(candidate, mid, index)
        self._pending_candidates.clear()

    async def _set_local(self, description: RTCSessionDescription) -> None:
        token = aiortc_hooks.set_ice_policy(self.config.ice)
        try:
            await self.pc.setLocalDescription(description)
        except Exception as exc:
            raise MediaError("notSetLocalDescription", str(exc)) from exc
        finally:
            aiortc_hooks.reset_ice_policy(token)

    def local_sdp(self) -> str:
        description = self.pc.localDescription
        assert description is not None
        sdp = description.sdp
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
        """Trickled remote candidate; queued until the remote description is set."""
        if self.closed:
            return
        if not self._remote_set:
            if len(self._pending_candidates) < 64:
                self._pending_candidates.append((candidate, mid, index))
            return
        await self._add_candidate(candidate, mid, index)

    async def _add_candidate(self, candidate: str, mid: str | None, index: int | None) -> None:
        text = candidate.strip()
        if text.startswith("a="):
            text = text[2:]
        if text.startswith("candidate:"):
            text = text[len("candidate:") :]
        if not text:
            return  # end-of-candidates
        try:
            parsed = candidate_from_sdp(text)
        except (ValueError, IndexError) as exc:
            raise MediaError("invalid_candidate", str(exc)) from exc
        if parsed.protocol.lower() != "udp" or parsed.ip.endswith(".local"):
            return  # aiortc speaks UDP only; mDNS names would need multicast lookups
        parsed.sdpMid = mid
        parsed.sdpMLineIndex = index
        try:
            await self.pc.addIceCandidate(parsed)
        except Exception as exc:
            raise MediaError("invalid_candidate", str(exc)) from exc

    def dump(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "connectionState": self.pc.connectionState,
            "closed": self.closed,
            "data": {"sent": self.data_sent, "received": self.data_received, "dropped": self.data_dropped},
        }
