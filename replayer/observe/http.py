"""`/healthz`, `/readyz` and `/metrics` for the long-running service (aiohttp, on the service's loop)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from replayer import logs

__all__ = ["HttpServer"]

log = logs.get_logger("replayer.observe")


class HttpServer:
    """Liveness (`alive()`), readiness (`ready()`) and a Prometheus registry, over HTTP.

    /healthz: 200 while the service's tasks are alive (503 once one has crashed).
    /readyz: 200 while the queue answers and the service is not stopping (503 otherwise).
    /metrics: the registry in Prometheus text format.
    /status: what is pending (`replayer.status`), as JSON, when a `status` callable is given.
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
    ) -> None:
        self.registry = registry
        self._alive = alive
        self._ready = ready
        self.host = host
        self.port = port
        self._status = status
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        """Listen; return the port (the one chosen by the system when `port` is 0)."""
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        if self._status is not None:
            app.router.add_get("/status", self._status_json)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        addresses = self._runner.addresses
        if addresses:
            self.port = int(addresses[0][1])
        log.info("http_listening", host=self.host, port=self.port)
        return self.port

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        if self._alive():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="a service task has stopped\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self._ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _status_json(self, request: web.Request) -> web.Response:
        assert self._status is not None
        document = await self._status()
        return web.Response(text=json.dumps(document, indent=2) + "\n", content_type="application/json")
