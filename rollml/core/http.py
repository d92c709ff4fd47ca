"""A small HTTP server for the daemons' endpoints (`--http HOST:PORT`): routes by path, served from a thread.

The agents mount `/metrics` and `/healthz` on it (`rollml.agent.metrics`); other read-only pages (an
explorer) can mount their routes on the same server with `route()`. Handlers take the request's path and
query and answer `Response`s; an exception in a handler is a 500 with one line, never a dead server.

    server = HttpServer("127.0.0.1", 9100)
    server.route("/healthz", lambda req: Response.json({"ok": True}))
    server.start()          # serves from a daemon thread until server.stop()
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Request:
    path: str
    query: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()  # more headers, e.g. a redirect's Location

    @classmethod
    def json(cls, data: Any, status: int = 200) -> Response:
        return cls(status, json.dumps(data, default=str).encode(), "application/json")

    @classmethod
    def text(cls, text: str, status: int = 200) -> Response:
        return cls(status, text.encode())


Handler = Callable[[Request], Response]


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT` or `PORT` (on 127.0.0.1) as (host, port); ValueError with the expected form otherwise."""
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise ValueError(f"expected PORT or HOST:PORT for the HTTP address, got {text!r}")
    return host or "127.0.0.1", number


class HttpServer:
    """Routes (exact paths, or prefixes ending in `/`) served by a ThreadingHTTPServer in a daemon thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.routes: dict[str, Handler] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def route(self, path: str, handler: Handler) -> None:
        """Serve `path` (a prefix when it ends in `/`) with `handler`."""
        self.routes[path] = handler

    def handler_for(self, path: str) -> Handler | None:
        if path in self.routes:
            return self.routes[path]
        prefixes = [p for p in self.routes if p.endswith("/") and path.startswith(p)]
        return self.routes[max(prefixes, key=len)] if prefixes else None

    def answer(self, raw_path: str) -> Response:
        url = urllib.parse.urlsplit(raw_path)
        handler = self.handler_for(url.path)
        if handler is None:
            return Response.text(f"no such page: {url.path}\n", 404)
        try:
            return handler(Request(url.path, urllib.parse.parse_qs(url.query)))
        except Exception as exc:  # a failing page must not take the server down
            return Response.text(f"error: {type(exc).__name__}: {exc}\n", 500)

    def start(self) -> HttpServer:
        """Listen (OSError if the port is taken) and serve from a daemon thread; `port` is the bound one."""
        server = self

        class Handle(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                response = server.answer(self.path)
                self.send_response(response.status)
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(response.body)))
                for name, value in response.headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(response.body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # scrapes every few seconds would drown the agent's own log

        self._server = ThreadingHTTPServer((self.host, self.port), Handle)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="rollml-http", daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
