"""The only module that touches aiortc and aioice internals.

aiortc has no public API for forwarding RTP (its receivers always decode), so Confero hooks
a handful of private attributes. Every hook lives here, is pinned to the versions below and is
covered by `tests/unit/test_aiortc_hooks.py`, so an upgrade that moves one fails loudly.

Hooks, by purpose (see docs/architecture.md for the packet's walk):

* ICE gathering policy: which local addresses and UDP ports server peers bind
  (`aioice.ice.get_host_addresses`, `Connection.get_component_candidates`), scoped by a
  context variable so that client peers in the same process (tests) keep their own policy.
  With a port range, the STUN/TURN candidates (`server_ice_servers`) are gathered after the
  host ones as aioice gathers them. A TURN allocation of a server peer that fails is logged (`aioice.ice.relayed_candidate`:
  aioice drops the error and the relay candidate silently).
* Receive taps on an `RTCDtlsTransport`: decrypted RTP goes to a plain callback instead of
  aiortc's parse/jitter-buffer/decoder pipeline (`_handle_rtp_data`), and once the pair is
  nominated, SRTP is taken straight from the socket callback (`datagram_received`) so RTP never
  waits on aioice's queue. RTCP is observed (`_handle_rtcp_data`) and then left to aiortc.
* Address changes: a datagram from an address that is not the nominated pair's starts one
  connectivity check to it (rate-limited); when it succeeds the pair is nominated
  (`Connection.check_complete`), and every tap of the connection moves its send path there.
* Send side: SRTP protect with the transport's session and `sendto` on the nominated pair's
  socket, synchronously (no await per packet); and the fan-out engine's `Output` (the socket's
  descriptor, the remote address, libsrtp's session and `srtp_protect`) for the compiled path.
* Senders: their own RTCP loops silenced (`_run_rtcp`) so that the Subscriber sends one
  compound SR packet for all of them; their CNAME.
* Small accessors: negotiated codecs and header extensions of a transceiver, sender SSRCs,
  restricting a transceiver to one codec.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import aioice.ice
import aioice.stun
import aioice.utils
import pylibsrtp
from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpTransceiver
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import RtcpByePacket

logger = logging.getLogger(__name__)

PINNED = {"aiortc": "1.16.0", "aioice": "0.13.0", "pylibsrtp": "1.0.0"}


def check_versions() -> None:
    """Refuse to run on aiortc/aioice versions whose internals were not verified."""
    for name, wanted in PINNED.items():
        found = metadata.version(name)
        if found != wanted:
            raise RuntimeError(
                f"confero's media hooks are verified on {name}=={wanted}, found {found}; "
                "run the hook tests before changing the pin"
            )


# --------------------------------------------------------------------------------------------
# ICE gathering policy
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IcePolicy:
    """Where a server peer gathers host candidates.

    `addresses` None means aioice's default (every non-loopback interface address).
    """

    addresses: tuple[str, ...] | None = None
    port_range: tuple[int, int] | None = None
    #: SO_RCVBUF/SO_SNDBUF of media sockets (the kernel caps it at net.core.rmem_max/wmem_max):
    #: room for a few hundred ms of packets while the event loop is busy elsewhere.
    socket_buffer: int = 4 << 20
    #: ICE consent (RFC 7675) of server peers: a check every `consent_interval` seconds (+-20%),
    #: closed when none was answered for `consent_interval * consent_failures` seconds.
    #: None: aioice's own (5 s, 6 failures).
    consent_interval: float | None = None
    consent_failures: int = 6


_policy: contextvars.ContextVar[IcePolicy | None] = contextvars.ContextVar("confero_ice_policy", default=None)
_original_get_host_addresses = aioice.ice.get_host_addresses
_original_get_component_candidates = aioice.ice.Connection.get_component_candidates
#: What runs when no policy is set: whatever was installed before ours (a test client's own).
_fallback_get_host_addresses = _original_get_host_addresses


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    policy = _policy.get()
    if policy is None or policy.addresses is None:
        return _fallback_get_host_addresses(use_ipv4, use_ipv6)
    return [a for a in policy.addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]


async def _get_component_candidates(
    self: aioice.ice.Connection,
    component: int,
    addresses: list[str],
    timeout: int = 5,  # noqa: ASYNC109  (aioice's signature: the method this replaces)
) -> list[Candidate]:
    policy = _policy.get()
    if policy is None:
        return await _original_get_component_candidates(self, component, addresses, timeout)
    if policy.consent_interval is not None:
        self._confero_consent = (policy.consent_interval, policy.consent_failures)  # type: ignore[attr-defined]  # read by _query_consent
    if policy.port_range is None:
        gathered: list[Candidate] = await _original_get_component_candidates(self, component, addresses, timeout)
        _size_buffers(self, policy.socket_buffer)
        return gathered
    low, high = policy.port_range
    loop = asyncio.get_running_loop()
    candidates: list[Candidate] = []
    host_protocols: list[aioice.ice.StunProtocol] = []
    for address in addresses:
        ports = list(range(low, high + 1))
        start = random.randrange(len(ports))
        for port in ports[start:] + ports[:start]:
            try:
                _, protocol = await loop.create_datagram_endpoint(
                    lambda: aioice.ice.StunProtocol(self), local_addr=(address, port)
                )
                break
            except OSError:
                continue
        else:
            logger.warning("no free UDP port in %d-%d on %s", low, high, address)
            continue
        host, bound_port = protocol.transport.get_extra_info("sockname")[:2]
        protocol.local_candidate = Candidate(
            foundation=candidate_foundation("host", "udp", host),
            component=component,
            transport="udp",
            priority=candidate_priority(component, "host"),
            host=host,
            port=bound_port,
            type="host",
        )
        self._protocols.append(protocol)
        candidates.append(protocol.local_candidate)
        host_protocols.append(protocol)
    candidates += await _server_candidates(self, component, host_protocols, timeout)
    _size_buffers(self, policy.socket_buffer)
    return candidates


async def _server_candidates(
    self: aioice.ice.Connection,
    component: int,
    host_protocols: list[aioice.ice.StunProtocol],
    timeout: float,  # noqa: ASYNC109  (aioice's gathering timeout, passed on)
) -> list[Candidate]:
    """The server-reflexive (STUN) and relayed (TURN) candidates, as aioice's own
    `get_component_candidates` gathers them after its host ones: in parallel, each given up
    after `timeout` seconds (a failed TURN allocation is logged by `_relayed_candidate`)."""
    tasks: list[asyncio.Task[tuple[Candidate, aioice.ice.StunProtocol | None]]] = []
    if self.stun_server:
        for protocol in host_protocols:
            if ":" not in protocol.local_candidate.host:  # aioice's STUN is IPv4 only
                tasks.append(asyncio.create_task(aioice.ice.server_reflexive_candidate(protocol, self.stun_server)))
    if self.turn_server:
        tasks.append(
            asyncio.create_task(
                aioice.ice.relayed_candidate(
                    component=component,
                    hide_related_address=self._transport_policy == aioice.ice.TransportPolicy.RELAY,
                    protocol_factory=lambda: aioice.ice.StunProtocol(self),
                    turn_server=self.turn_server,
                    turn_username=self.turn_username,
                    turn_password=self.turn_password,
                    turn_ssl=self.turn_ssl,
                    turn_transport=self.turn_transport,
                )
            )
        )
    if not tasks:
        return []
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    candidates = []
    for task in done:
        if task.exception() is None:
            candidate, relay_protocol = task.result()
            candidates.append(candidate)
            if relay_protocol is not None:
                self._protocols.append(relay_protocol)
    return candidates


_original_relayed_candidate = aioice.ice.relayed_candidate


async def _relayed_candidate(**kwargs: Any) -> Any:
    """aioice's `relayed_candidate`; for a server peer, why no relay candidate came (a refused
    credential, a TLS certificate not trusted, no answer) is logged before aioice drops it."""
    try:
        return await _original_relayed_candidate(**kwargs)
    except Exception as exc:
        if _policy.get() is not None:
            host, port = kwargs["turn_server"]
            scheme = "turns" if kwargs["turn_ssl"] else "turn"
            logger.warning(
                "server_ice_servers: no relay candidate from %s:%s:%s?transport=%s: %s",
                scheme,
                host,
                port,
                kwargs["turn_transport"],
                exc or type(exc).__name__,
            )
        raise


def _size_buffers(connection: aioice.ice.Connection, size: int) -> None:
    for protocol in connection._protocols:
        sock = protocol.transport.get_extra_info("socket") if protocol.transport else None
        if sock is None:
            continue
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, size)
            except OSError:
                pass


_original_query_consent = aioice.ice.Connection.query_consent


async def _query_consent(self: aioice.ice.Connection) -> None:
    # aioice race: connect() can see ICE_COMPLETED after close() began and then start the
    # consent loop on a closed connection, where it would run forever. Never start it then.
    if self._closing or self._closed:
        return
    consent: tuple[float, int] | None = getattr(self, "_confero_consent", None)
    if consent is None:
        await _original_query_consent(self)
        return
    await _consent_loop(self, *consent)


async def _consent_loop(self: aioice.ice.Connection, interval: float, max_failures: int) -> None:
    """aioice's `query_consent` with a server peer's own interval and failure count.

    Consent is lost when no check was answered for `interval * max_failures` seconds. Each check
    is retransmitted (STUN's back-off) for up to one interval, so a lost datagram or an event
    loop that stalls under load (the answer waits in the socket and is read before any timer)
    does not count as a lost peer; only silence for the whole window does. Each check goes to
    the pair nominated at that moment (the peer may have moved).
    """
    assert self.remote_password is not None
    loop = asyncio.get_running_loop()
    window = interval * max_failures
    answered = loop.time()
    while True:
        await asyncio.sleep(interval * (0.8 + 0.4 * random.random()))
        for pair in list(self._nominated.values()):
            answered = max(answered, self.__dict__.get("_confero_answered", answered))
            remaining = answered + window - loop.time()
            if remaining <= 0:
                break
            request = self.build_request(pair, nominate=False)
            try:
                await asyncio.wait_for(
                    pair.protocol.request(request, pair.remote_addr, integrity_key=self.remote_password.encode("utf8")),
                    timeout=min(remaining, interval),
                )
                answered = loop.time()
            except (TimeoutError, aioice.stun.TransactionError):
                pass
        answered = max(answered, self.__dict__.get("_confero_answered", answered))  # a probe's answer
        if loop.time() - answered >= window:
            logger.info("ICE consent expired: no check answered for %.1f s", window)
            self._query_consent_task = None
            await self.close()
            return


_original_check_complete = aioice.ice.Connection.check_complete

#: Seconds between two connectivity checks to the same unknown address of a peer.
PROBE_INTERVAL = 1.0
#: At most this many unknown addresses of one peer are checked per 10 PROBE_INTERVALs, counted
#: since its last move (datagrams with forged sources cannot make a connection grow unbounded).
MAX_PROBES = 4
#: A peer that answered at a new address is moved there once nothing came from its current
#: address for this long (a peer with two working paths does not flap between them).
MOVE_QUIET = 1.0


def _check_complete(self: aioice.ice.Connection, pair: aioice.ice.CandidatePair) -> None:
    before = self._nominated.get(pair.component)
    _original_check_complete(self, pair)
    after = self._nominated.get(pair.component)
    if after is not None and after is not before and before is not None:
        logger.info("ICE: the peer moved from %s to %s", before.remote_addr, after.remote_addr)
        for callback in list(getattr(self, "_confero_on_move", ())):
            callback(after)


def on_pair_moved(connection: aioice.ice.Connection, callback: Callable[[Any], None]) -> Callable[[], None]:
    """Call `callback(pair)` when component 1's nominated pair changes; returns the undo."""
    callbacks: list[Callable[[Any], None]] = connection.__dict__.setdefault("_confero_on_move", [])
    callbacks.append(callback)

    def undo() -> None:
        if callback in callbacks:
            callbacks.remove(callback)

    return undo


def probe_address(
    connection: aioice.ice.Connection, protocol: Any, addr: tuple[str, int], heard: Callable[[], int]
) -> None:
    """A datagram came from `addr`, which is not the peer's nominated address (its network
    changed, or its NAT rebound): check that address with ICE (at most once per PROBE_INTERVAL)
    and, when the peer answers with its credentials and nothing came from its current address
    (`heard()` counts those datagrams) for MOVE_QUIET seconds, move the connection there."""
    if connection._closing or connection._closed or connection.remote_password is None:
        return
    probes: dict[tuple[str, int], float] = connection.__dict__.setdefault("_confero_probes", {})
    now = asyncio.get_running_loop().time()
    if now - probes.get(addr, -PROBE_INTERVAL) < PROBE_INTERVAL:
        return
    for old in [a for a, at in probes.items() if now - at > 10 * PROBE_INTERVAL]:
        del probes[old]
    if len(probes) >= MAX_PROBES:
        return
    probes[addr] = now
    component = protocol.local_candidate.component
    remote = next((c for c in connection._remote_candidates if c._network_host == addr[0] and c.port == addr[1]), None)
    added = remote is None
    if remote is None:
        remote = Candidate(
            foundation=aioice.utils.random_string(10),
            component=component,
            transport="udp",
            priority=candidate_priority(component, "prflx"),
            host=addr[0],
            port=addr[1],
            type="prflx",
        )
        connection._remote_candidates.append(remote)
    pair = connection._find_pair(protocol, remote)
    if pair is None:
        pair = aioice.ice.CandidatePair(protocol, remote)
        connection._check_list.append(pair)
    if pair.task is not None or pair.state == aioice.ice.CandidatePair.State.IN_PROGRESS:
        return
    pair.task = asyncio.ensure_future(_probe(connection, pair, heard, added))


async def _probe(
    connection: aioice.ice.Connection, pair: aioice.ice.CandidatePair, heard: Callable[[], int], added: bool
) -> None:
    try:
        await _check_and_move(connection, pair, heard)
    finally:
        pair.task = None
        if added and connection._nominated.get(pair.component) is not pair:
            # nobody answered there (or the peer stayed put): forget the address again
            if pair in connection._check_list:
                connection._check_list.remove(pair)
            if pair.remote_candidate in connection._remote_candidates:
                connection._remote_candidates.remove(pair.remote_candidate)


async def _check_and_move(
    connection: aioice.ice.Connection, pair: aioice.ice.CandidatePair, heard: Callable[[], int]
) -> None:
    assert connection.remote_password is not None
    loop = asyncio.get_running_loop()
    started, count = loop.time(), heard()
    request = connection.build_request(pair, nominate=connection.ice_controlling)
    try:
        _, addr = await pair.protocol.request(
            request, pair.remote_addr, integrity_key=connection.remote_password.encode("utf8"), retransmissions=2
        )
    except aioice.stun.TransactionError:
        return
    if addr != pair.remote_addr:
        return
    connection.check_state(pair, aioice.ice.CandidatePair.State.SUCCEEDED)
    connection.__dict__["_confero_answered"] = loop.time()  # an answer with its credentials: consent
    # The peer answered at the new address with its credentials. Move once its current
    # address has been quiet for MOVE_QUIET (a peer with two working paths stays put).
    for _ in range(5):
        await asyncio.sleep(max(0.0, started + MOVE_QUIET - loop.time()))
        if connection._closing or connection._closed or connection._nominated.get(pair.component) is pair:
            return
        if heard() == count:
            pair.nominated = True
            connection.check_complete(pair)
            connection.__dict__.get("_confero_probes", {}).clear()  # a fresh start at the new address
            return
        started, count = loop.time(), heard()


def install_ice_patches() -> None:
    """Route aioice's gathering through the context's IcePolicy (idempotent).

    Also stops aioice from starting consent checks on a connection that is already closing.
    """
    global _fallback_get_host_addresses
    if getattr(aioice.ice.get_host_addresses, "_confero_patched", False):
        return
    _fallback_get_host_addresses = aioice.ice.get_host_addresses
    _get_host_addresses._confero_patched = True  # type: ignore[attr-defined]
    aioice.ice.get_host_addresses = _get_host_addresses
    aioice.ice.relayed_candidate = _relayed_candidate
    aioice.ice.Connection.get_component_candidates = _get_component_candidates  # type: ignore[method-assign]
    aioice.ice.Connection.query_consent = _query_consent  # type: ignore[method-assign]
    aioice.ice.Connection.check_complete = _check_complete  # type: ignore[method-assign]


def set_ice_policy(policy: IcePolicy | None) -> contextvars.Token[IcePolicy | None]:
    """Apply `policy` to peers created from the current context (and tasks it spawns)."""
    return _policy.set(policy)


def ice_patches_installed() -> bool:
    return bool(getattr(aioice.ice.get_host_addresses, "_confero_patched", False))


def reset_ice_policy(token: contextvars.Token[IcePolicy | None]) -> None:
    _policy.reset(token)


# --------------------------------------------------------------------------------------------
# SRTP without pylibsrtp's per-call overhead
# --------------------------------------------------------------------------------------------


def srtp_function(session: pylibsrtp.Session, name: str) -> Callable[[bytes], bytes]:
    """`session.protect` (or unprotect...) calling libsrtp directly with reused buffers.

    pylibsrtp allocates a length cell and type-checks on every call; reusing the session's own
    buffer and one length cell saved about a third of the cost per packet when it was measured.
    Raises pylibsrtp.Error like the original. Not thread-safe, like the session itself.
    """
    from pylibsrtp._binding import ffi, lib

    function = getattr(lib, f"srtp_{name}")
    srtp = session._srtp[0]
    cdata = session._cdata
    buffer = session._buffer
    trailer = {"protect": 16 + 128, "protect_rtcp": 4 + 16 + 128}.get(name, 0)
    size = len(buffer) - trailer
    length = ffi.new("int *")
    error = pylibsrtp.Error
    errors: list[str] = list(getattr(pylibsrtp, "ERRORS", []))

    def process(data: bytes) -> bytes:
        n = len(data)
        if n > size:
            raise error("packet is too long")
        buffer[0:n] = data
        length[0] = n
        rc = function(srtp, cdata, length)
        if rc:
            raise error(errors[rc] if rc < len(errors) else f"srtp error {rc}")
        return buffer[0 : length[0]]  # type: ignore[no-any-return]  # cffi's buffer slices are bytes

    process.session = session  # type: ignore[attr-defined]  # keeps the buffers alive
    return process


def srtp_output(
    engine: Any, session: pylibsrtp.Session, fd: int, sendto: Callable[[bytes, Any], None], addr: Any
) -> Any:
    """The fan-out engine's Output: RTP protected with `session`, sent to `addr`.

    The compiled engine sends on (a dup of) descriptor `fd` and calls libsrtp itself, with the
    session's `srtp_t` and the address of `srtp_protect` inside pylibsrtp's own libsrtp; the
    pure-Python engine calls `sendto`.
    """
    if engine.compiled:
        from pylibsrtp._binding import ffi, lib

        return engine.Output(
            fd,
            addr[0],
            addr[1],
            int(ffi.cast("uintptr_t", session._srtp[0])),
            int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_protect"))),
            session,
        )
    return engine.Output(srtp_function(session, "protect"), sendto, addr)


def retarget_output(engine: Any, output: Any, transport: Any, sendto: Callable[[bytes, Any], None], addr: Any) -> None:
    """Move an Output made by `srtp_output` to another socket and remote address."""
    if engine.compiled:
        output.retarget(transport.get_extra_info("socket").fileno(), addr[0], addr[1])
    else:
        output.retarget(sendto, addr)


# --------------------------------------------------------------------------------------------
# Transports of a peer connection
# --------------------------------------------------------------------------------------------


def remote_addresses(pc: RTCPeerConnection) -> list[tuple[str, int]]:
    """The remote addresses of `pc`'s nominated ICE pairs (where its packets go now)."""
    found: list[tuple[str, int]] = []
    for dtls in dtls_transports(pc):
        for pair in dtls.transport._connection._nominated.values():
            addr = (pair.remote_addr[0], pair.remote_addr[1])
            if addr not in found:
                found.append(addr)
    return found


def dtls_transports(pc: RTCPeerConnection) -> list[RTCDtlsTransport]:
    """The distinct DTLS transports of `pc` (one with BUNDLE)."""
    seen: list[RTCDtlsTransport] = []
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport
        if dtls is not None and dtls not in seen:
            seen.append(dtls)
    sctp = pc.sctp
    if sctp is not None and sctp.transport not in seen:
        seen.append(sctp.transport)
    return seen


class TransportTap:
    """Receive taps and a synchronous send path on one `RTCDtlsTransport`.

    * `on_rtp(bytes)` gets every decrypted RTP packet (never RTCP); aiortc's receivers never see
      them. Before the pair is nominated they come through aiortc's DTLS loop; afterwards
      straight from the socket callback.
    * `on_rtcp(bytes)` sees every decrypted RTCP compound packet before aiortc handles it.
    * `send_rtcp(bytes)` protects and sends without awaiting; it drops silently until DTLS is
      connected (`ready`). RTP leaves through the fan-out engine's Output (`rtp_output`).
    """

    def __init__(
        self,
        dtls: RTCDtlsTransport,
        *,
        on_rtp: Callable[[bytes], None] | None = None,
        on_rtcp: Callable[[bytes], None] | None = None,
        on_ready: Callable[[], None] | None = None,
        on_moved: Callable[[], None] | None = None,
    ) -> None:
        self.dtls = dtls
        self._on_moved = on_moved
        self.ready = False
        self._on_rtp = on_rtp
        self._on_rtcp = on_rtcp
        self._on_ready = on_ready
        self._protect: Callable[[bytes], bytes] | None = None
        self._protect_rtcp: Callable[[bytes], bytes] | None = None
        self._sendto: Callable[[bytes, Any], None] | None = None
        self._addr: tuple[str, int] | None = None
        self._protocol: Any = None
        self._connection: Any = None
        self._undo_move: Callable[[], None] | None = None
        self._pair_transport: Any = None
        self._output: Any = None
        self._engine: Any = None
        self.send_errors = 0
        self.srtp_errors = 0
        self.heard = 0  # datagrams from the peer's current address

        if on_rtp is not None:

            async def handle_rtp_data(data: bytes, arrival_time_ms: int) -> None:
                callback = self._on_rtp  # None once closed: drop, never back to aiortc
                if callback is not None:
                    callback(data)

            dtls._handle_rtp_data = handle_rtp_data  # type: ignore[method-assign]

        original_rtcp = dtls._handle_rtcp_data

        async def handle_rtcp_data(data: bytes) -> None:
            if self._on_rtcp is not None:
                try:
                    self._on_rtcp(data)
                except Exception:  # a bad RTCP packet never takes the transport down
                    logger.exception("RTCP handler failed")
            await original_rtcp(data)

        dtls._handle_rtcp_data = handle_rtcp_data  # type: ignore[method-assign]
        dtls.on("statechange", self._statechange)
        if dtls.state == "connected":
            self._connected()

    def _statechange(self) -> None:
        if self.dtls.state == "connected":
            self._connected()
        elif self.dtls.state in ("closed", "failed"):
            self.close()

    def _connected(self) -> None:
        if self.ready:
            return
        connection = self.dtls.transport._connection
        pair = connection._nominated.get(1)
        tx = self.dtls._tx_srtp
        if pair is None or tx is None:
            logger.warning("DTLS connected without a nominated pair or SRTP session")
            return
        self._protect = srtp_function(tx, "protect")
        self._protect_rtcp = srtp_function(tx, "protect_rtcp")
        self._connection = connection
        self._use_pair(pair)
        self._undo_move = on_pair_moved(connection, self._moved)
        self.ready = True
        if self._on_ready is not None:
            self._on_ready()

    def _use_pair(self, pair: Any) -> None:
        """Send on `pair` and watch its socket (SRTP taken straight from it when tapped)."""
        self._pair_transport = pair.protocol.transport
        self._sendto = self._pair_transport.sendto
        self._addr = pair.remote_addr
        if self._protocol is not pair.protocol:
            self._watch(pair.protocol)

    def _moved(self, pair: Any) -> None:
        """The peer's address changed and ICE nominated the new pair: follow it."""
        if not self.ready:
            return
        self._use_pair(pair)
        if self._output is not None and not self._output.closed and self._sendto is not None:
            retarget_output(self._engine, self._output, self._pair_transport, self._sendto, self._addr)
        if self._on_moved is not None:
            self._on_moved()

    def _watch(self, protocol: Any) -> None:
        """Datagrams on the nominated socket: SRTP straight to `on_rtp` (when tapped), a
        datagram from another address starts a check of it (`probe_address`), the rest goes
        to aioice as before."""
        self._unwatch()
        original = protocol.datagram_received
        connection = self._connection
        tap = self

        def heard() -> int:
            return tap.heard

        on_rtp = self._on_rtp
        srtp_error = pylibsrtp.Error
        unprotect = srtp_function(self.dtls._rx_srtp, "unprotect") if on_rtp is not None else None

        def datagram_received(data: bytes, addr: tuple[Any, ...]) -> None:
            current = tap._addr
            if current is not None and (addr[1] != current[1] or addr[0] != current[0]):
                probe_address(connection, protocol, (addr[0], addr[1]), heard)
            else:
                tap.heard += 1
            if unprotect is not None:
                b0 = data[0]
                if 127 < b0 < 192 and not (191 < data[1] < 224):
                    try:
                        plain = unprotect(data)
                    except srtp_error:
                        tap.srtp_errors += 1
                        return
                    on_rtp(plain)  # type: ignore[misc]
                    return
            original(data, addr)

        protocol.datagram_received = datagram_received
        self._protocol = protocol

    def _unwatch(self) -> None:
        if self._protocol is not None:
            # Give the socket back to aioice (the instance attribute shadows the class method).
            self._protocol.__dict__.pop("datagram_received", None)
        self._protocol = None

    def send_rtcp(self, packet: bytes) -> None:
        if self._sendto is None:
            return
        try:
            self._sendto(self._protect_rtcp(packet), self._addr)  # type: ignore[misc]
        except (pylibsrtp.Error, OSError, AttributeError, RuntimeError):
            self.send_errors += 1

    def rtp_sender(self) -> tuple[Callable[[bytes], bytes], Callable[[bytes, Any], None], Any] | None:
        """(protect, sendto, addr): the send path as plain callables."""
        if self._sendto is None or self._protect is None:
            return None
        return self._protect, self._sendto, self._addr

    def rtp_output(self, engine: Any) -> Any:
        """The fan-out engine's Output for this transport (one per tap, closed with it), or None
        before DTLS is connected.

        The compiled engine gets what it needs to send without Python: the nominated socket's
        descriptor (it dup()s it), the remote address, libsrtp's `srtp_t` of the transmit
        session and the address of `srtp_protect` in pylibsrtp's own libsrtp.
        """
        if self._output is not None and not self._output.closed and isinstance(self._output, engine.Output):
            return self._output
        sender = self.rtp_sender()
        if sender is None:
            return None
        if self._output is not None:
            self._output.close()
        sock = self._pair_transport.get_extra_info("socket")
        self._engine = engine
        self._output = srtp_output(engine, self.dtls._tx_srtp, sock.fileno(), sender[1], sender[2])
        return self._output

    def close(self) -> None:
        """Drop references; the transport itself is closed by its peer connection."""
        self.ready = False
        if self._undo_move is not None:
            self._undo_move()
            self._undo_move = None
        self._sendto = None
        self._protect = None
        self._protect_rtcp = None
        self._pair_transport = None
        if self._output is not None:
            self._output.close()
            self._output = None
        self._on_rtp = None
        self._on_rtcp = None
        self._on_ready = None
        self._on_moved = None
        self._unwatch()


# --------------------------------------------------------------------------------------------
# Transceivers, senders
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Negotiated:
    """What a transceiver agreed on: its first codec, RTX for it, and header extension ids."""

    codec: RTCRtpCodecParameters | None
    rtx_payload_type: int | None
    extensions: dict[str, int]
    mid: str | None


def negotiated(transceiver: RTCRtpTransceiver) -> Negotiated:
    codecs = list(transceiver._codecs)
    media = [c for c in codecs if c.mimeType.lower() != f"{transceiver.kind}/rtx"]
    codec = media[0] if media else None
    rtx = None
    if codec is not None:
        for c in codecs:
            if c.mimeType.lower().endswith("/rtx") and c.parameters.get("apt") == codec.payloadType:
                rtx = c.payloadType
    extensions = {e.uri: e.id for e in transceiver._headerExtensions}
    return Negotiated(codec, rtx, extensions, transceiver.mid)


def payload_types(transceiver: RTCRtpTransceiver) -> dict[int, RTCRtpCodecParameters]:
    """Negotiated codecs by payload type, in the remote's order of preference."""
    return {c.payloadType: c for c in transceiver._codecs if c.payloadType is not None}


def restrict_codecs(transceiver: RTCRtpTransceiver, keep: Iterable[int]) -> None:
    """Keep only the codecs with payload types in `keep` (before an answer is created).

    Keeping none declines the m-line: aiortc cannot answer with port 0, and an m-line without
    formats is invalid SDP (aiortc's own parser rejects it), so the transceiver keeps one
    codec and is made inactive instead.
    """
    wanted = set(keep)
    kept = [c for c in transceiver._codecs if c.payloadType in wanted]
    if not kept:
        kept = transceiver._codecs[:1]
        transceiver.direction = "inactive"
    transceiver._codecs = kept


def never_decode(receiver: RTCRtpReceiver) -> None:
    """Stop aiortc from keeping a decoder thread for a receiver whose packets are forwarded.

    `receive()` starts one thread per receiver; Confero's taps mean it never gets a frame, so it
    is stopped right after it starts (its RTCP task and routing stay).
    """
    original = receiver.receive

    async def receive(parameters: Any) -> None:
        await original(parameters)
        receiver._RTCRtpReceiver__stop_decoder()  # type: ignore[attr-defined]

    receiver.receive = receive  # type: ignore[method-assign]


def sender_ssrcs(sender: RTCRtpSender) -> tuple[int, int]:
    return sender._ssrc, sender._rtx_ssrc


def take_over_rtcp(sender: RTCRtpSender) -> None:
    """Silence this sender's own RTCP loop; its owner sends the sender reports.

    aiortc runs one task per sender that wakes about once a second to build and send an SR and
    an SDES: for a player of a room of 8 that is 14 task wake-ups and sends per second. The
    Subscriber sends one compound packet with every sender's SR instead. The replacement loop
    marks itself started like aiortc's, waits until cancelled, and then sends BYE and marks
    itself exited, so that `sender.stop()` behaves as before. Call before the sender starts.
    """
    started = sender._RTCRtpSender__rtcp_started  # type: ignore[attr-defined]
    exited = sender._RTCRtpSender__rtcp_exited  # type: ignore[attr-defined]

    async def run_rtcp() -> None:
        started.set()
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            pass
        await sender._send_rtcp([RtcpByePacket(sources=[sender._ssrc])])
        exited.set()

    sender._run_rtcp = run_rtcp  # type: ignore[method-assign]


def set_msid(sender: RTCRtpSender, stream_id: str) -> None:
    """The MediaStream id the sender's m-line names in `a=msid` (aiortc gives every peer
    connection one random id). The track id is the sender's track's own (`IdleTrack(track_id=)`)."""
    sender._stream_id = stream_id


def sender_cname(sender: RTCRtpSender) -> str | None:
    """The CNAME aiortc gave this sender (its peer connection's), once the sender started."""
    return sender._RTCRtpSender__cname  # type: ignore[attr-defined, no-any-return]


class IdleTrack(MediaStreamTrack):
    """A track that never yields: its sender's RTP loop waits instead of polling every 20 ms.

    Forwarded packets bypass the sender; it exists for its SSRC, SDP and RTCP (SR, BYE).
    """

    def __init__(self, kind: str, track_id: str = "") -> None:
        super().__init__()
        self.kind = kind
        if track_id:
            self._id = track_id  # what the offer's `a=msid` names as the track
        self._never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def recv(self) -> Any:
        await self._never
        raise RuntimeError("unreachable")

    def stop(self) -> None:
        super().stop()
        if not self._never.done():
            self._never.cancel()
