"""A small HTTP proxy the tests put between replayer and the emulator.

It forwards every request unchanged unless a rule matches; a rule can answer with an
AWS error, rewrite the emulator's JSON answer, add latency, or drop the connection.
This is how the tests make conditions the emulator cannot (trimmed data, expired
iterators, throttling, empty pages, closed shards) without touching replayer's code.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

__all__ = ["FaultProxy", "Request", "Rule", "aws_error"]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def operation(self) -> str:
        """`GetRecords` for JSON-protocol calls (X-Amz-Target), else `METHOD path`."""
        target = self.headers.get("x-amz-target", "")
        return target.rpartition(".")[2] if target else f"{self.method} {self.path}"

    def json(self) -> Any:
        return json.loads(self.body or b"{}")

    def with_json(self, **changes: Any) -> Request:
        """The same request with top-level JSON fields changed (None removes a field)."""
        body = {**self.json(), **changes}
        body = {k: v for k, v in body.items() if v is not None}
        return Request(self.method, self.path, self.headers, json.dumps(body).encode())


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Rule:
    """When `match(request)`: act `times` times (None: always).

    One of: `respond` (status, body dict) for an AWS-style error or answer;
    `modify_request(request) -> request` before forwarding and/or
    `rewrite(request, json_body) -> json_body` on the upstream answer; `drop` the
    connection; or only `delay` seconds before forwarding.
    """

    match: Callable[[Request], bool]
    respond: tuple[int, dict[str, Any]] | None = None
    rewrite: Callable[[Request, Any], Any] | None = None
    modify_request: Callable[[Request], Request] | None = None
    drop: bool = False
    delay: float = 0.0
    times: int | None = None
    hits: int = 0

    def take(self, request: Request) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if not self.match(request):
            return False
        self.hits += 1
        return True


def aws_error(
    code: str, message: str = "injected by the test proxy", status: int = 400
) -> tuple[int, dict[str, Any]]:
    return status, {"__type": code, "message": message}


def op(name: str) -> Callable[[Request], bool]:
    return lambda r: r.operation == name


@dataclass
class FaultProxy:
    upstream: str
    rules: list[Rule] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        up = urlsplit(self.upstream)
        self._host, self._port = up.hostname or "127.0.0.1", up.port or 80
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Request(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                response = proxy._serve(request)
                if response is None:
                    self.close_connection = True
                    self.connection.close()
                    return
                self.send_response(response.status)
                for k, v in response.headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                self.wfile.write(response.body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.seen.clear()

    def count(self, operation: str) -> int:
        return sum(1 for s in self.seen if s == operation)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _rule_for(self, request: Request) -> Rule | None:
        with self._lock:
            self.seen.append(request.operation)
            return next((r for r in self.rules if r.take(request)), None)

    def _serve(self, request: Request) -> Response | None:
        rule = self._rule_for(request)
        if rule is not None:
            if rule.delay:
                time.sleep(rule.delay)
            if rule.drop:
                return None
            if rule.respond is not None:
                status, payload = rule.respond
                return Response(
                    status, {"Content-Type": "application/x-amz-json-1.0"}, json.dumps(payload).encode()
                )
        if rule is not None and rule.modify_request is not None:
            request = rule.modify_request(request)
        response = self._forward(request)
        if rule is not None and rule.rewrite is not None:
            rewritten = rule.rewrite(request, json.loads(response.body or b"{}"))
            headers = {k: v for k, v in response.headers.items() if k.lower() != "x-amz-crc32"}
            response = Response(response.status, headers, json.dumps(rewritten).encode())
        return response

    def _forward(self, request: Request) -> Response:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=60)
        try:
            headers = {k: v for k, v in request.headers.items() if k not in ("connection", "content-length")}
            conn.request(request.method, request.path, body=request.body, headers=headers)
            upstream = conn.getresponse()
            body = upstream.read()
            return Response(upstream.status, dict(upstream.getheaders()), body)
        finally:
            conn.close()
