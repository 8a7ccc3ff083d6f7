"""The sample pages and the JavaScript SDK, served at /{App}/ (public, like the WebSocket).

`/{App}/js/webrtc_adaptor.js` is one source file written as an ES module. A page that loads it
with `<script type="module">` or `import` gets it as is; a page that loads it with a plain
`<script src>` (as Ant Media's tutorial does) gets the same code wrapped to define the global
`WebRTCAdaptor`. Browsers fetch module scripts in CORS mode and classic scripts in no-cors
mode, which is how the two are told apart (`?module` and `?classic` force either).
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from aiohttp import web

WEB_ROOT = Path(__file__).resolve().parent.parent / "web"
SDK = "webrtc_adaptor.js"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_EXPORT = re.compile(r"^export\s+(?=(class|function|const|let|async)\b)", re.M)
_EXPORT_LIST = re.compile(r"^export\s*\{[^}]*\};?\s*$", re.M)


def classic_script(source: str) -> str:
    """The ES module as a classic script: no `export`, and its exports put on `window`."""
    names = re.findall(r"^export\s+(?:class|function|const|let|async function)\s+([A-Za-z_$][\w$]*)", source, re.M)
    body = _EXPORT_LIST.sub("", _EXPORT.sub("", source))
    assign = "\n".join(f"  globalThis.{name} = {name};" for name in names)
    return f"(function () {{\n{body}\n{assign}\n}})();\n"


def _resolve(relative: str) -> Path | None:
    path = (WEB_ROOT / relative).resolve()
    if WEB_ROOT not in path.parents or not path.is_file():
        return None
    return path


def page_handler(applications: Mapping[str, object]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.match_info["app"] not in applications:
            raise web.HTTPNotFound(text=f"no application {request.match_info['app']!r}")
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
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if path.suffix in (".js", ".mjs"):
            content_type = "text/javascript"
        return web.FileResponse(path, headers={"Content-Type": content_type, "Cache-Control": "no-cache"})

    return handler


def add_page_routes(router: web.UrlDispatcher, applications: Mapping[str, object]) -> None:
    handler = page_handler(applications)
    router.add_get("/{app}", _redirect)
    router.add_get("/{app}/", handler)
    router.add_get(r"/{app}/{path:(?!rest/|websocket$).+}", handler)


async def _redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(f"/{request.match_info['app']}/")
