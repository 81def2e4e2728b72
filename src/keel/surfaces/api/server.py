"""Serve the HTTP API with uvicorn in a background thread (for the daemon and for tests).

server = serve(door, port=7717)    # binds 127.0.0.1 on that port (0 = any free one)
server.url, server.port            # where it listens
server.stop()                      # ends event streams, then shuts uvicorn down

The same server answers MCP (streamable HTTP) at /mcp; everything else goes to the API app.
Both sit behind one gate that checks the Host header and the bearer token.
uvicorn runs with lifespan off, so the MCP session manager runs around `serve()` on the server
thread's event loop, and `stop()` ends MCP sessions before uvicorn's graceful shutdown.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import uvicorn

from ...errors import KeelError
from ...ops.door import Door
from ..mcp.server import McpHttp
from .app import OPENAPI, SCOPE_CALLER, Gate, allowed_hosts, check_host, create_app


class ApiServer:
    """A uvicorn server for the API, running in a thread of its own."""

    def __init__(self, door: Door, host: str = "127.0.0.1", port: int = 0):
        check_host(host)
        self.door = door
        self.host = host
        self._sock = _bind(host, port)
        self.port: int = self._sock.getsockname()[1]
        self.app = create_app(door)
        self.mcp = McpHttp(door, SCOPE_CALLER, host)
        gated = Gate(self.mcp.mount(self.app), door, allowed_hosts(self.port), [OPENAPI])
        self.config = uvicorn.Config(
            gated,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=3,
        )
        self.server = uvicorn.Server(self.config)
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 15.0) -> ApiServer:
        """Start serving; returns once the server accepts connections."""
        self._thread = threading.Thread(target=self._run, name="keel-api", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise KeelError(f"the API server did not start: {self._failure!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise KeelError(f"the API server did not start within {timeout:g}s")
            time.sleep(0.01)
        return self

    def _run(self) -> None:
        try:
            with asyncio.Runner(loop_factory=self.config.get_loop_factory()) as runner:
                runner.run(self._serve())
        except BaseException as exc:  # reported by start(); a thread cannot raise
            self._failure = exc
        finally:
            self._sock.close()

    async def _serve(self) -> None:
        await self.mcp.serve(self.server.serve(sockets=[self._sock]))

    def stop(self, timeout: float = 10.0) -> None:
        """End open event streams, stop accepting, let requests in flight finish."""
        self.app.state.stopping.set()
        self.mcp.close()
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self.server.force_exit = True
                self._thread.join(timeout)
        else:
            self._sock.close()

    def __enter__(self) -> ApiServer:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _bind(host: str, port: int) -> socket.socket:
    if not isinstance(port, int) or not 0 <= port < 65536:
        raise KeelError(f"the API port must be a number from 0 to 65535, got {port!r}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise KeelError(f"the API cannot listen on {host}:{port}: {reason}") from None
    return sock


def serve(door: Door, host: str = "127.0.0.1", port: int = 0) -> ApiServer:
    """Start the API and MCP for `door` in a background thread; `.stop()` it when done."""
    return ApiServer(door, host, port).start()
