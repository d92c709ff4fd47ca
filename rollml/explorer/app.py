"""The explorer's web app: the page (plain HTML/CSS/JS, no CDN, nothing fetched from outside) and its JSON,
over a `ChainIndex`.

    GET /                      the page (static/index.html); it polls api/state and redraws
    GET /api/state             `ChainIndex.snapshot()` after a refresh (at most one chain read per
                               `min_interval` seconds, however many pages poll)
    GET /api/nft/{id}.png      the image a GanNFT token carries (its posted output decoded)
    GET /api/output/{id}.png   the image output of result `id` (404 unless it is an image)
    GET /static/{file}         the page's script and style sheet

`ExplorerSite.get(path)` answers those paths with a `rollml.core.http.Response` and knows no web framework,
so any server can mount it under a prefix: every URL the page uses is relative. `create_app` wraps it as an
ASGI app (FastAPI), which `rollml explorer` serves with uvicorn; `mount(server, chain, deployment)` puts it
on an agent's `--http` server under `/explorer/`.
`serve_in_thread` runs an ASGI app on a background thread (tests, or next to an agent's loop).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from rollml.core.chain import Chain, ChainError
from rollml.core.deploy import Deployment
from rollml.core.devnet import free_port
from rollml.core.http import HttpServer, Request, Response
from rollml.explorer.index import ChainIndex, output_png

STATIC = Path(str(resources.files("rollml.explorer") / "static"))
STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
MIN_INTERVAL = 0.5  # seconds between two chain reads of api/state
_PNG = re.compile(r"^/api/(nft|output)/(\d+)\.png$")


class ExplorerSite:
    """The explorer's pages for one deployment on one chain, by path (see the module docstring)."""

    def __init__(self, chain: Chain, deployment: Deployment, min_interval: float = MIN_INTERVAL) -> None:
        self.index = ChainIndex(chain, deployment)
        self.min_interval = min_interval
        self._lock = threading.Lock()
        self._at = 0.0
        self._state: dict[str, Any] | None = None
        self._static = {p.name: p for p in STATIC.iterdir() if p.suffix in STATIC_TYPES}

    def state(self) -> dict[str, Any]:
        """The snapshot, refreshed from the chain unless the last one is younger than `min_interval`."""
        with self._lock:
            if self._state is None or time.monotonic() - self._at >= self.min_interval:
                self.index.refresh()
                self._state = self.index.snapshot()
                self._at = time.monotonic()
            return self._state

    def get(self, path: str) -> Response:
        """The answer to GET `path` (relative to where the site is mounted; "" is the page)."""
        if path in ("", "/", "/index.html"):
            return self._file("index.html")
        if path == "/api/state":
            try:
                return Response.json(self.state())
            except ChainError as exc:  # the endpoint: down, or not this deployment's chain any more
                return Response.json({"error": f"{self.index.chain.url}: {' '.join(str(exc).split())}"}, 502)
            except Exception as exc:  # anything else is one line on the page too, never a dead poller
                return Response.json({"error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"}, 500)
        if path.startswith("/static/"):
            return self._file(path.removeprefix("/static/"))
        match = _PNG.match(path)
        if match:
            kind, number = match.group(1), int(match.group(2))
            if kind == "nft":
                output, what = self.index.nft_output(number), f"token {number}"
            else:
                output, what = self.index.result_output(number), f"result {number}"
            image = output_png(output) if output else None
            if image is None:
                return Response.text(f"no image for {what}\n", 404)
            return Response(200, image, "image/png")
        return Response.text(f"no such page: {path}\n", 404)

    def _file(self, name: str) -> Response:
        found = self._static.get(name)  # only the files shipped in static/: no path is ever joined
        if found is None:
            return Response.text(f"no such file: {name}\n", 404)
        return Response(200, found.read_bytes(), STATIC_TYPES[found.suffix] + "; charset=utf-8")


def create_app(chain: Chain, deployment: Deployment, min_interval: float = MIN_INTERVAL) -> Any:
    """The explorer of `deployment` on `chain` as an ASGI app (FastAPI). ChainError if the deployment is not
    on that chain."""
    from fastapi import FastAPI
    from fastapi import Response as AsgiResponse

    site = ExplorerSite(chain, deployment, min_interval)
    app = FastAPI(title="rollml explorer", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.site = site

    @app.get("/{path:path}", include_in_schema=False)
    def answer(path: str) -> AsgiResponse:
        page = site.get("/" + path)
        # images never change (outputs are immutable); everything else is live
        cache = "max-age=3600" if page.content_type == "image/png" else "no-store"
        return AsgiResponse(
            page.body, page.status, media_type=page.content_type, headers={"Cache-Control": cache}
        )

    return app


MOUNT = "/explorer/"


def mount(server: HttpServer, chain: Chain, deployment: Deployment) -> ExplorerSite:
    """Serve the explorer on `server` (an agent's `--http`) under `/explorer/`."""
    site = ExplorerSite(chain, deployment)

    def answer(request: Request) -> Response:
        return site.get("/" + request.path.removeprefix(MOUNT))

    server.route(MOUNT, answer)
    server.route(MOUNT.rstrip("/"), lambda request: Response(301, b"", headers=(("Location", MOUNT),)))
    return site


@contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int | None = None) -> Iterator[str]:
    """Serve the ASGI `app` with uvicorn on a background thread; yields its base URL, stops it on exit."""
    import uvicorn

    port = port or free_port(host)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name=f"explorer:{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the explorer server did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
