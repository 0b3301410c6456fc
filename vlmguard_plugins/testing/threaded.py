"""Serve any ASGI app with uvicorn on loopback, from a background thread.

The one runner behind every test server here (and the gateway's own tests)::

    from vlmguard_plugins.testing import run_in_thread

    with run_in_thread(app) as url:      # e.g. "http://127.0.0.1:41234"
        httpx.get(f"{url}/healthz")

Requires ``uvicorn`` (``pip install 'vlmguard-plugins[server]'``).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import uvicorn

__all__ = ["ServerThread", "dead_base_url", "run_in_thread"]


class ServerThread:
    """One uvicorn server for ``app`` on ``host:port``, run in a daemon thread.

    Args:
        app: any ASGI application.
        host / port: where to listen; port 0 picks a free port, kept across restarts
            (a stopped server can start again on the same port, as a replica that
            goes down and comes back).
        lifespan: ``"on"`` runs the app's startup and shutdown events.
        graceful_shutdown_s: how long requests still running get when stopping.
        log_level: ``"info"`` turns uvicorn's access log on (to test what it records).
    """

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        lifespan: str = "on",
        graceful_shutdown_s: float = 5.0,
        log_level: str = "warning",
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.lifespan = lifespan
        self.graceful_shutdown_s = graceful_shutdown_s
        self.log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        """The root URL, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> str:
        """Start listening; returns the URL once the server accepts connections."""
        import uvicorn

        if self.running:
            return self.url
        # create_server sets SO_REUSEADDR, so a restart may take the same port back.
        sock = socket.create_server((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level=self.log_level,
            access_log=self.log_level in ("info", "debug", "trace"),
            lifespan=self.lifespan,  # type: ignore[arg-type]
            # Annotated as int by uvicorn, but used as an asyncio timeout: fractions work.
            timeout_graceful_shutdown=self.graceful_shutdown_s,  # type: ignore[arg-type]
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [sock]},
            name=f"uvicorn-{self.port}",
            daemon=True,
        )
        thread.start()
        deadline = time.monotonic() + 30.0
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                sock.close()
                raise RuntimeError(f"the server on {self.host}:{self.port} did not start")
            time.sleep(0.005)
        self._server, self._thread, self._socket = server, thread, sock
        return self.url

    def stop(self) -> None:
        """Stop listening and wait for the thread to end."""
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=self.graceful_shutdown_s + 10.0)
        if self._socket is not None:
            self._socket.close()
        self._server, self._thread, self._socket = None, None, None


@contextmanager
def run_in_thread(
    app: Any,
    *,
    host: str = "127.0.0.1",
    graceful_shutdown_s: float = 5.0,
    log_level: str = "warning",
) -> Iterator[str]:
    """Serve ``app`` on a free port of ``host`` for a ``with`` block; yields its URL."""
    server = ServerThread(
        app, host=host, graceful_shutdown_s=graceful_shutdown_s, log_level=log_level
    )
    try:
        yield server.start()
    finally:
        server.stop()


def dead_base_url(host: str = "127.0.0.1") -> str:
    """A ``base_url`` on a loopback port where nothing listens (a replica that is down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
    return f"http://{host}:{port}/v1"
