"""An application's own pages (`webRoot`): files, the single-page fallback, content types,
caching and what must never be served (paths out of the directory, hidden files)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from confero.server import Server

pytestmark = pytest.mark.integration

APP = "WebRTCAppEE"
INDEX = "<!doctype html><title>spa</title><div id=root></div>"


@pytest.fixture
def site(server: Server, tmp_path: Path) -> Path:
    """A built single-page app, set as APP's webRoot; a secret beside it that must stay unread."""
    root = tmp_path / "site"
    (root / "static" / "js").mkdir(parents=True)
    (root / "index.html").write_text(INDEX)
    (root / "static" / "js" / "main.1a2b3c4d.js").write_text("console.log('main');")
    (root / "static" / "js" / "worker.js").write_text("self.x = 1;")
    (root / "manifest.json").write_text('{"name": "spa"}')
    (root / "logo.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (root / ".env").write_text("SECRET=1")
    (tmp_path / "secret.txt").write_text("outside the web root")
    (root / "escape.txt").symlink_to(tmp_path / "secret.txt")
    server.settings.app(APP).webRoot = str(root)
    return root


async def get(http: aiohttp.ClientSession, path: str, **headers: str) -> tuple[int, str, aiohttp.ClientResponse]:
    """GET a path sent exactly as written (no client-side normalisation of `..` or escapes)."""
    base = http._base_url
    assert base is not None
    async with http.get(URL(str(base.origin()) + path, encoded=True), headers=headers) as resp:
        return resp.status, await resp.text(), resp


async def test_files_and_their_types(site: Path, http: aiohttp.ClientSession) -> None:
    for path, ctype in (
        (f"/{APP}/", "text/html"),
        (f"/{APP}/index.html", "text/html"),
        (f"/{APP}/static/js/main.1a2b3c4d.js", "text/javascript"),
        (f"/{APP}/static/js/worker.js", "text/javascript"),
        (f"/{APP}/manifest.json", "application/json"),
        (f"/{APP}/logo.svg", "image/svg+xml"),
    ):
        status, body, resp = await get(http, path)
        assert status == 200, path
        assert resp.content_type == ctype, path
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        relative = path.removeprefix(f"/{APP}/") or "index.html"
        assert body == (site / relative).read_text(), path


async def test_single_page_fallback(site: Path, http: aiohttp.ClientSession) -> None:
    """A path naming no file is the app's own route (Circle's /{App}/{roomName}): index.html."""
    for path in (f"/{APP}/room1", f"/{APP}/some/deeper/route", f"/{APP}/room.with.dots"):
        status, body, resp = await get(http, path, Accept="text/html,application/xhtml+xml")
        assert (status, body, resp.content_type) == (200, INDEX, "text/html"), path
    status, body, _ = await get(http, f"/{APP}/room1")  # no Accept: still a route, it has no extension
    assert (status, body) == (200, INDEX)
    # A missing asset is a 404, not the page in its place (a script tag would run HTML).
    status, body, _ = await get(http, f"/{APP}/static/js/missing.js", Accept="*/*")
    assert status == 404 and body != INDEX


async def test_caching(site: Path, http: aiohttp.ClientSession) -> None:
    _, _, index = await get(http, f"/{APP}/room1")
    assert index.headers["Cache-Control"] == "no-cache"
    _, _, hashed = await get(http, f"/{APP}/static/js/main.1a2b3c4d.js")
    assert "immutable" in hashed.headers["Cache-Control"]
    _, _, plain = await get(http, f"/{APP}/static/js/worker.js")
    assert plain.headers["Cache-Control"] == "no-cache"
    status, _, _ = await get(http, f"/{APP}/static/js/worker.js", **{"If-None-Match": plain.headers["ETag"]})
    assert status == 304


@pytest.mark.parametrize(
    "path",
    [
        "..%2fsecret.txt",
        "%2e%2e/secret.txt",
        "%2e%2e%2fsecret.txt",
        "static/..%2f..%2fsecret.txt",
        "..%5csecret.txt",
        "%2fetc%2fpasswd",
        ".env",
        "static/%2e%2e/.env",
        "escape.txt",
        "..",
    ],
)
async def test_nothing_outside_the_root(site: Path, http: aiohttp.ClientSession, path: str) -> None:
    status, body, _ = await get(http, f"/{APP}/{path}")
    assert "outside the web root" not in body and "SECRET" not in body
    assert status == 404, (path, status, body)


async def test_other_applications_and_routes_unchanged(site: Path, http: aiohttp.ClientSession) -> None:
    status, body, _ = await get(http, "/LiveApp/")  # Confero's own pages
    assert status == 200 and body != INDEX
    status, _, _ = await get(http, "/NoSuchApp/room1")
    assert status == 404
    async with http.get(f"/{APP}/rest/v2/broadcasts/list/0/10") as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
    async with http.get(f"/{APP}", allow_redirects=False) as resp:
        assert resp.status == 302 and resp.headers["Location"] == f"/{APP}/"


async def test_web_root_is_not_changed_over_rest(site: Path, http: aiohttp.ClientSession) -> None:
    path = f"/rest/v2/applications/settings/{APP}"
    async with http.get(path) as resp:
        current = await resp.json()
    assert current["webRoot"] == str(site)
    async with http.post(path, json={**current, "webRoot": "/"}) as resp:
        assert resp.status == 400, await resp.text()
    async with http.post(path, json=current) as resp:  # the same value, sent back whole, is fine
        assert resp.status == 200, await resp.text()
