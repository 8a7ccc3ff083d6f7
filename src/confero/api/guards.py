"""REST protection: every /rest request passes its application's address and JWT checks first.

The WebSocket endpoint and the pages are public; only REST paths are guarded.

Behind a reverse proxy, `forwarded_headers` makes the client's address and scheme those the proxy
reports in X-Forwarded-For / X-Forwarded-Proto, but only when the peer is one of the trusted
proxies: from anyone else the headers are ignored, so the REST address filter (which runs after
it) never believes a forwarded address it was not told to. `https_redirect` sends a page asked
over plain HTTP to the HTTPS port.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Mapping, Sequence

from aiohttp import web
from aiohttp.typedefs import Middleware

from confero.domain.application import Application
from confero.errors import ConferoError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def rest_application(path: str) -> str | None:
    """The application a REST path belongs to: /{App}/rest/... or /rest/v2/applications/.../{App}."""
    parts = path.strip("/").split("/")
    if len(parts) >= 2 and parts[1] == "rest":
        return parts[0]
    if len(parts) >= 5 and parts[:3] == ["rest", "v2", "applications"]:
        return parts[-1]
    return None


def is_rest(path: str) -> bool:
    parts = path.strip("/").split("/")
    return parts[0] == "rest" or (len(parts) > 1 and parts[1] == "rest")


def parse_address(text: str) -> Address | None:
    """An address as a peer or a X-Forwarded-For hop gives it: bare, with a zone, [v6]:port or v4:port."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted(address: Address, trusted: Sequence[Network]) -> bool:
    return any(address.version == n.version and address in n for n in trusted)


def forwarded_client(peer: Address, hops: Sequence[str], trusted: Sequence[Network]) -> Address:
    """The client behind trusted proxies: walking X-Forwarded-For from the right (the hop nearest
    us), the first address that is not a trusted proxy; the peer itself when the peer is not
    trusted, and the last good hop when a hop does not parse."""
    current = peer
    for hop in reversed(hops):
        if not is_trusted(current, trusted):
            break
        address = parse_address(hop)
        if address is None:
            break
        current = address
    return current


def forwarded_headers(trusted: Sequence[Network]) -> Middleware:
    """Believe X-Forwarded-For / X-Forwarded-Proto from a trusted proxy only."""
    trusted = tuple(trusted)

    @web.middleware
    async def forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = parse_address(request.remote or "")
        if peer is None or not is_trusted(peer, trusted):
            return await handler(request)
        remote, scheme = request.remote or "", request.scheme
        hops = [h for value in request.headers.getall("X-Forwarded-For", []) for h in value.split(",") if h.strip()]
        if hops:
            remote = str(forwarded_client(peer, hops, trusted))
        proto = request.headers.get("X-Forwarded-Proto", "").split(",")[-1].strip().lower()
        if proto in ("http", "https"):
            scheme = proto
        if remote != request.remote or scheme != request.scheme:
            request = request.clone(remote=remote, scheme=scheme)
        return await handler(request)

    return forwarded


def https_redirect(tls_port: Callable[[], int]) -> Middleware:
    """A page (GET/HEAD, neither REST nor a WebSocket) asked over plain HTTP: 302 to the HTTPS port."""

    @web.middleware
    async def redirect(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            request.secure
            or request.method not in ("GET", "HEAD")
            or is_rest(request.path)
            or request.headers.get("Upgrade", "").lower() == "websocket"
        ):
            return await handler(request)
        try:
            location = request.url.with_scheme("https").with_port(tls_port())
        except ValueError:
            raise web.HTTPBadRequest(text="bad Host header") from None
        raise web.HTTPFound(location)

    return redirect


def rest_guard(
    applications: Mapping[str, Application], refusal_response: Callable[[ConferoError], web.Response]
) -> Middleware:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        name = rest_application(request.path)
        app = applications.get(name) if name is not None else None
        if app is not None:
            try:
                app.access.check_rest_access(request.remote or "", request.headers.get("Authorization", ""))
            except ConferoError as exc:
                return refusal_response(exc)
        return await handler(request)

    return guard
