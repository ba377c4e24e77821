"""`/healthz`, `/readyz`, `/metrics` and `/status` for the long-running service (aiohttp's low-level
server, on the service's loop).

Whoever can reach the port may read these, and nothing more; nor can they exhaust the process:
at most `max_connections` connections are open (past that, the oldest is closed to make room:
requests take milliseconds, so the oldest is an idle or half-sent one), a connection that has not
sent a whole request within `idle_seconds` is closed (slow headers), and so is a keep-alive one idle
that long. `/status` answers from a cache at most `status_cache_seconds` old (one set of AWS calls
at a time, whatever the request rate), and is not served at all without a `status` callable.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from replayer import logs

__all__ = ["DEFAULT_IDLE_SECONDS", "DEFAULT_MAX_CONNECTIONS", "DEFAULT_STATUS_CACHE_SECONDS", "HttpServer"]

log = logs.get_logger("replayer.observe")

DEFAULT_MAX_CONNECTIONS = 64  # probes and a scraper need a handful; far below any descriptor limit
DEFAULT_IDLE_SECONDS = 5.0  # to send a whole request, or between two on a keep-alive connection
DEFAULT_STATUS_CACHE_SECONDS = 5.0
_MAX_HEADER_BYTES = 4096  # a request line or a header field; ours are short


class _CappedServer(web.Server):
    """aiohttp's low-level server, holding at most `max_connections` connections: a new one
    closes the oldest (in accept order) past the cap."""

    def __init__(self, handler: Any, *, max_connections: int, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.max_connections = max(1, max_connections)
        self._open: dict[RequestHandler, None] = {}  # in accept order
        self.evicted = 0

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self._open[handler] = None
        while len(self._open) > self.max_connections:
            oldest = next(iter(self._open))
            del self._open[oldest]
            self.evicted += 1
            oldest.force_close()

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        self._open.pop(handler, None)
        super().connection_lost(handler, exc)


class HttpServer:
    """Liveness (`alive()`), readiness (`ready()`) and a Prometheus registry, over HTTP.

    /healthz: 200 while the service's tasks are alive (503 once one has crashed).
    /readyz: 200 while the queue answers and the service is not stopping (503 otherwise).
    /metrics: the registry in Prometheus text format.
    /status: what is pending (`replayer.status`), as JSON, when a `status` callable is given;
    gathered at most once per `status_cache_seconds`, however many ask.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        alive: Callable[[], bool],
        ready: Callable[[], bool],
        host: str = "0.0.0.0",
        port: int = 8080,
        status: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        status_cache_seconds: float = DEFAULT_STATUS_CACHE_SECONDS,
    ) -> None:
        self.registry = registry
        self._alive = alive
        self._ready = ready
        self.host = host
        self.port = port
        self._status = status
        self.max_connections = max_connections
        self.idle_seconds = idle_seconds
        self.status_cache_seconds = status_cache_seconds
        # (time.monotonic() when gathered, HTTP status, the body): a failed gathering is kept as long
        self._cached: tuple[float, int, bytes] | None = None
        self._gathering: asyncio.Task[tuple[float, int, bytes]] | None = None
        self._routes: dict[str, Callable[[web.BaseRequest], Awaitable[web.Response]]] = {
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/metrics": self._metrics,
        }
        if status is not None:
            self._routes["/status"] = self._status_json
        self._server: _CappedServer | None = None
        self._runner: web.ServerRunner | None = None

    async def start(self) -> int:
        """Listen; return the port (the one chosen by the system when `port` is 0)."""
        self._server = _CappedServer(
            self._handle,
            max_connections=self.max_connections,
            keepalive_timeout=self.idle_seconds,  # from the connection's start too: slow headers
            max_line_size=_MAX_HEADER_BYTES,
            max_field_size=_MAX_HEADER_BYTES,
            access_log=None,
        )
        self._runner = web.ServerRunner(self._server, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        addresses = self._runner.addresses
        if addresses:
            self.port = int(addresses[0][1])
        log.info(
            "http_listening", host=self.host, port=self.port, max_connections=self.max_connections,
            idle_seconds=self.idle_seconds, status=self._status is not None,
        )  # fmt: skip
        return self.port

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._server.connections) if self._server is not None else 0

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._gathering is not None:
            self._gathering.cancel()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        route = self._routes.get(request.path)
        if route is None:
            return web.Response(status=404, text="not found\n")
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, text="only GET\n", headers={"Allow": "GET, HEAD"})
        return await route(request)

    async def _healthz(self, request: web.BaseRequest) -> web.Response:
        if self._alive():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="a service task has stopped\n")

    async def _readyz(self, request: web.BaseRequest) -> web.Response:
        if self._ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")

    async def _metrics(self, request: web.BaseRequest) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _status_json(self, request: web.BaseRequest) -> web.Response:
        cached = self._cached
        if cached is None or time.monotonic() - cached[0] >= self.status_cache_seconds:
            if self._gathering is None or self._gathering.done():  # one gathering, however many ask
                self._gathering = asyncio.ensure_future(self._gather())
            cached = await asyncio.shield(self._gathering)
        _, status, body = cached
        return web.Response(status=status, body=body, content_type="application/json")

    async def _gather(self) -> tuple[float, int, bytes]:
        assert self._status is not None
        try:
            document, status = await self._status(), 200
        except Exception as exc:  # kept as long as an answer: a failing gathering is not redone per request
            log.warning("status_failed", error=str(exc))
            document, status = {"error": f"{type(exc).__name__}: {exc}"}, 503
        self._cached = (time.monotonic(), status, (json.dumps(document, indent=2) + "\n").encode())
        return self._cached
