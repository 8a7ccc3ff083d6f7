"""Ant Media's own sample pages, unchanged, laid out as an Ant Media application serves them.

An Ant Media application (`/{App}/`) serves its sample pages beside `js/` (the SDK's ES modules)
and `js/external/`, `css/external/` (the libraries the pages load). Everything here comes from
the npm registry, unchanged (`package.json`): the pages and the SDK from
`@antmedia/webrtc_adaptor` 2.16.2 (`src/main/webapp/`, `dist/es/`), and jQuery, Bootstrap 4,
Popper, notify.js and webrtc-adapter under the file names the pages ask for. The site is copied
into a folder of the test's own, which Confero serves as the application's `webRoot`.

StreamApp's pages that the npm package leaves out (`conference.html`, `player.html`,
`datachannel.html`, ...) are in no registry. Point `CONFERO_STREAMAPP_WEBAPP` at a StreamApp
`src/main/webapp` folder (tag `ams-v2.16.2`) to lay its pages over the same site; the tests that
drive them are skipped without it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NODE = ROOT / "node_modules"
SDK = NODE / "@antmedia" / "webrtc_adaptor"

#: js/external/<name> (as the pages load them) <- an npm file.
EXTERNAL_JS = {
    "adapter-latest.js": "webrtc-adapter/out/adapter.js",
    "jquery-3.7.1.min.js": "jquery/dist/jquery.min.js",
    "jquery-3.7.1.slim.min.js": "jquery/dist/jquery.slim.min.js",
    "popper.min.js": "popper.js/dist/umd/popper.min.js",
    "bootstrap.min.js": "bootstrap/dist/js/bootstrap.min.js",
    "bootstrap.bundle.min.js": "bootstrap/dist/js/bootstrap.bundle.min.js",
    "notify.min.js": "notifyjs-browser/dist/notify.js",
}
EXTERNAL_CSS = {"bootstrap4/bootstrap.min.css": "bootstrap/dist/css/bootstrap.min.css"}

#: What some pages load from a CDN (the tests have no Internet) <- the same library from npm.
CDN = {
    "https://cdn.jsdelivr.net/npm/chart.js": "chart.js/dist/chart.umd.min.js",
}

STREAMAPP_ENV = "CONFERO_STREAMAPP_WEBAPP"


async def route_cdn(context: object) -> None:
    """Answer the pages' CDN requests with the npm copies (`CDN`), unchanged."""

    def answer(body: bytes) -> Callable[[object], Awaitable[None]]:
        async def fulfil(route: object) -> None:
            await route.fulfill(body=body, content_type="text/javascript")  # type: ignore[attr-defined]

        return fulfil

    for url, source in CDN.items():
        await context.route(url, answer((NODE / source).read_bytes()))  # type: ignore[attr-defined]


def streamapp_dir() -> Path | None:
    value = os.environ.get(STREAMAPP_ENV, "")
    return Path(value) if value and Path(value, "conference.html").exists() else None


def build_site(target: Path) -> Path:
    """Lay the sample site out in `target` (created) and return it."""
    webapp = SDK / "src" / "main" / "webapp"
    if not (webapp / "conference-room.html").exists():
        raise FileNotFoundError("Ant Media's SDK package is missing: run `npm ci` in the repository root")
    shutil.copytree(webapp, target, dirs_exist_ok=True)
    streamapp = streamapp_dir()
    if streamapp is not None:
        for page in streamapp.glob("*.html"):
            shutil.copy(page, target / page.name)
        for sub in ("css", "images"):
            if (streamapp / sub).is_dir():
                shutil.copytree(streamapp / sub, target / sub, dirs_exist_ok=True)
    js = target / "js"
    for module in (SDK / "dist" / "es").glob("*.js"):
        shutil.copy(module, js / module.name)
    external = js / "external"
    external.mkdir(parents=True, exist_ok=True)
    for name, source in EXTERNAL_JS.items():
        shutil.copy(NODE / source, external / name)
    css = target / "css" / "external"
    for name, source in EXTERNAL_CSS.items():
        (css / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(NODE / source, css / name)
    return target
