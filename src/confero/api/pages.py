"""The sample pages and the JavaScript SDK, served at /{App}/ (public, like the WebSocket).

`/{App}/js/webrtc_adaptor.js` is one source file written as an ES module. A page that loads it
with `<script type="module">` or `import` gets it as is; a page that loads it with a plain
`<script src>` (as Ant Media's tutorial does) gets the same code wrapped to define the global
`WebRTCAdaptor`. Browsers fetch module scripts in CORS mode and classic scripts in no-cors
mode, which is how the two are told apart (`?module` and `?classic` force either).

An application whose `webRoot` setting names a directory is served that directory instead, as
a single-page app: a path that names a file gets the file; any other path whose last segment
has no extension (or that a browser navigates to, asking for HTML) gets the directory's
index.html, so Circle's /{App}/{roomName} reaches its router. Paths with `..`, `\\` or a
segment starting with `.` are refused, and a file is served only if its real path is inside the
directory. index.html is never cached without revalidation; a file whose name carries a build
hash (`main.1a2b3c4d.js`) is immutable.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from aiohttp import web

from confero.domain.application import Application

WEB_ROOT = Path(__file__).resolve().parent.parent / "web"
SDK = "webrtc_adaptor.js"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_EXPORT = re.compile(r"^export\s+(?=(class|function|const|let|async)\b)", re.M)
_EXPORT_LIST = re.compile(r"^export\s*\{[^}]*\};?\s*$", re.M)
#: A build tool's content hash in a file name: `main.1a2b3c4d.js`, `chunk-5f6e7d8c9b.css`.
_HASHED = re.compile(r"[.-][0-9a-f]{8,}\.[A-Za-z0-9]+$")
#: Content types that must not depend on the host's mime.types.
CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".wasm": "application/wasm",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
    ".txt": "text/plain",
}


def classic_script(source: str) -> str:
    """The ES module as a classic script: no `export`, and its exports put on `window`."""
    names = re.findall(r"^export\s+(?:class|function|const|let|async function)\s+([A-Za-z_$][\w$]*)", source, re.M)
    body = _EXPORT_LIST.sub("", _EXPORT.sub("", source))
    assign = "\n".join(f"  globalThis.{name} = {name};" for name in names)
    return f"(function () {{\n{body}\n{assign}\n}})();\n"


def _resolve(relative: str, root: Path = WEB_ROOT) -> Path | None:
    path = (root / relative).resolve()
    if root not in path.parents or not path.is_file():
        return None
    return path


def content_type(path: Path) -> str:
    return CONTENT_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def safe_relative(relative: str) -> bool:
    """A request path that can only name something under the root it is joined to."""
    if "\\" in relative or "\x00" in relative or relative.startswith("/"):
        return False
    return not any(part == ".." or part.startswith(".") for part in relative.split("/"))


def serve_web_root(root: Path, relative: str, request: web.Request) -> web.StreamResponse:
    """`relative` under `root` as a single-page app (see the module's docstring)."""
    if not safe_relative(relative):
        raise web.HTTPNotFound(text="no such page")
    root = root.resolve()
    name = relative.rsplit("/", 1)[-1]
    path = _resolve(relative + "index.html" if relative.endswith("/") or not relative else relative, root)
    if path is None:
        navigating = "." not in name or "text/html" in request.headers.get("Accept", "")
        path = _resolve("index.html", root) if navigating else None
        if path is None:
            raise web.HTTPNotFound(text=f"no page {relative!r}")
    cache = "public, max-age=31536000, immutable" if _HASHED.search(path.name) else "no-cache"
    return web.FileResponse(
        path,
        headers={"Content-Type": content_type(path), "Cache-Control": cache, "X-Content-Type-Options": "nosniff"},
    )


def page_handler(applications: Mapping[str, Application]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        app = applications.get(request.match_info["app"])
        if app is None:
            raise web.HTTPNotFound(text=f"no application {request.match_info['app']!r}")
        web_root = app.app_settings.webRoot
        if web_root:
            return serve_web_root(Path(web_root), request.match_info.get("path", ""), request)
        relative = request.match_info.get("path", "") or "index.html"
        if relative.endswith("/"):
            relative += "index.html"
        path = _resolve(relative)
        if path is None:
            raise web.HTTPNotFound(text=f"no page {relative!r}")
        if path.name == SDK and path.parent.name == "js":
            wants_module = "module" in request.query or (
                "classic" not in request.query and request.headers.get("Sec-Fetch-Mode") == "cors"
            )
            text = path.read_text()
            return web.Response(
                text=text if wants_module else classic_script(text),
                content_type="text/javascript",
                headers={"Cache-Control": "no-cache", "Vary": "Sec-Fetch-Mode"},
            )
        return web.FileResponse(path, headers={"Content-Type": content_type(path), "Cache-Control": "no-cache"})

    return handler


def add_page_routes(router: web.UrlDispatcher, applications: Mapping[str, Application]) -> None:
    handler = page_handler(applications)
    router.add_get("/{app}", _redirect)
    router.add_get("/{app}/", handler)
    router.add_get(r"/{app}/{path:(?!rest/|websocket(?:/|$)).+}", handler)


async def _redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(f"/{request.match_info['app']}/")
