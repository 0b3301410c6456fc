"""Images (or any bytes) served over HTTP on loopback, for tests of remote fetching.

``ImageServer`` answers ``GET`` from a table of routes and records every request; a
path that is not in the table gets 404.  It needs nothing beyond the standard library::

    from vlmguard_plugins.testing import ImageServer, Route

    routes = {"/cat.png": png_bytes, "/away": Route.redirect("http://169.254.169.254/")}
    with ImageServer(routes) as server:
        load_image(server.url_for("/cat.png"), url_policy=URLPolicy(allow_remote=True, ...))
        assert server.paths == ["/cat.png"]
"""

from __future__ import annotations

import contextlib
import mimetypes
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ._lifecycle import Startable
from .received import ReceivedRequest

__all__ = ["ImageServer", "Route"]


@dataclass(frozen=True)
class Route:
    """One answer of an :class:`ImageServer`: a status, headers and a body."""

    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def file(cls, body: bytes, content_type: str = "application/octet-stream") -> Route:
        """Answer 200 with ``body`` and its ``Content-Type`` and ``Content-Length``."""
        return cls(200, body, {"Content-Type": content_type})

    @classmethod
    def redirect(cls, location: str, status: int = 302) -> Route:
        """Answer a redirect to ``location``."""
        return cls(status, b"", {"Location": location})


class ImageServer(Startable):
    """An HTTP server on loopback answering ``GET`` from ``routes``, in a daemon thread.

    Args:
        routes: path to the answer: a :class:`Route`, or bytes served with the
            ``Content-Type`` the path's extension implies (``/cat.png``: ``image/png``).
        host / port: where to listen; port 0 picks a free port.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`.  Routes may be
    added while it runs.  :attr:`requests` records every request, in order.
    """

    def __init__(
        self,
        routes: Mapping[str, Route | bytes] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.routes: dict[str, Route] = {}
        for path, answer in (routes or {}).items():
            self.add(path, answer)
        self.host = host
        self.port = port
        self.requests: list[ReceivedRequest] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    def add(self, path: str, answer: Route | bytes) -> None:
        """Answer ``GET path`` with ``answer`` from now on."""
        if isinstance(answer, bytes):
            content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
            answer = Route.file(answer, content_type)
        self.routes[path] = answer

    @property
    def url(self) -> str:
        """The root URL, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{self.host}:{self.port}"

    def url_for(self, path: str) -> str:
        """The full URL of ``path``."""
        return f"{self.url}{path}"

    @property
    def paths(self) -> list[str]:
        """The paths requested so far, in order."""
        return [request.path for request in self.requests]

    def start(self) -> ImageServer:
        """Start listening (returns once it accepts connections)."""
        if self._httpd is not None:
            return self
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                server._answer(self)

            def log_message(self, *args: object) -> None:
                pass  # a test's output is its assertions, not an access log

        self._httpd = ThreadingHTTPServer((self.host, self.port), Handler)
        self.port = self._httpd.server_address[1]
        threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name=f"images-{self.port}", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd = None

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        received = ReceivedRequest(
            method=handler.command,
            path=handler.path,
            headers={k.lower(): v for k, v in handler.headers.items()},
        )
        with self._lock:
            self.requests.append(received)
        route = self.routes.get(handler.path, Route(404))
        # The client may hang up first (a size or time limit doing its job).
        with contextlib.suppress(OSError):
            handler.send_response(route.status)
            for name, value in route.headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(route.body)))
            handler.end_headers()
            handler.wfile.write(route.body)
