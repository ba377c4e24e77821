"""A small HTTP proxy the tests put between replayer and the emulator.

It forwards every request unchanged unless a rule matches; a rule can answer with an
AWS error, rewrite the emulator's JSON answer, add latency, or drop the connection.
This is how the tests make conditions the emulator cannot (trimmed data, expired
iterators, throttling, empty pages, closed shards) without touching replayer's code.

`Chaos` adds seeded random faults on every call that no rule takes: latency, connection
resets before or after the call reached the emulator, answers cut off mid-body, timeouts,
HTTP 500/503 and each service's own throttling error, in the protocol each service
speaks (JSON for DynamoDB Streams, Kinesis, SQS and Lambda, XML for S3). It counts what
it injected, by service and kind.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from tests.support import ROOT

__all__ = [
    "FAULT_KINDS",
    "Chaos",
    "FaultProxy",
    "Forwarded",
    "Request",
    "Rule",
    "aws_error",
    "record_proof",
    "service_error",
    "trimmed_iterators",
]


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

    @property
    def service(self) -> str:
        """The AWS service the request is signed for (`s3`, `sqs`, `lambda`, `kinesis`, `dynamodb`...).

        DynamoDB Streams calls are signed as `dynamodb`; they are told apart by X-Amz-Target.
        """
        target = self.headers.get("x-amz-target", "")
        if target.startswith("DynamoDBStreams_"):
            return "dynamodbstreams"
        if m := _CREDENTIAL_SCOPE.search(self.headers.get("authorization", "")):
            return m["service"]
        return "unknown"

    def json(self) -> Any:
        return json.loads(self.body or b"{}")

    def with_json(self, **changes: Any) -> Request:
        """The same request with top-level JSON fields changed (None removes a field)."""
        body = {**self.json(), **changes}
        body = {k: v for k, v in body.items() if v is not None}
        return Request(self.method, self.path, self.headers, json.dumps(body).encode())


_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/]+/[0-9]{8}/[^/]+/(?P<service>[a-z0-9-]+)/aws4_request")


@dataclass(frozen=True)
class Forwarded:
    """A request the emulator answered: which service and operation, its decoded path, the status."""

    service: str
    operation: str
    method: str
    path: str
    status: int


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    cut: bool = False  # send the headers and half the body, then close: an answer cut off mid-way
    drip: float = 0.0  # send the headers, then the body one byte every `drip` seconds


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
    # Forward first, then drop the connection (the call took effect; the caller never hears).
    drop_after: bool = False
    # Forward first, then send only half of the answer's body.
    cut: bool = False
    # Forward first, then send the answer's body one byte every `drip` seconds (a stalling peer).
    drip: float = 0.0
    # An answer given verbatim: (status, headers, body) - for errors in XML (S3) or REST-JSON (Lambda).
    reply: tuple[int, dict[str, str], bytes] | None = None

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


def trimmed_iterators() -> Rule:
    """What DynamoDB Streams answers for a range past its retention: every AT_SEQUENCE_NUMBER iterator
    is refused with TrimmedDataAccessException."""
    return Rule(
        lambda r: (
            r.operation == "GetShardIterator" and r.json().get("ShardIteratorType") == "AT_SEQUENCE_NUMBER"
        ),
        respond=(400, {"__type": "TrimmedDataAccessException", "message": "trimmed"}),
    )


def slow_shard(stream_arn: str) -> Callable[[Request], bool]:
    """Matches the DynamoDB Streams GetShardIterator calls for one stream."""
    return lambda r: r.operation == "GetShardIterator" and r.json().get("StreamArn") == stream_arn


# The fault kinds `Chaos` injects, in a stable order (the proof table lists them so).
FAULT_KINDS = ("latency", "reset", "reset_after", "cut", "timeout", "http500", "http503", "throttle")

# Each service's throttling error: (status, code). S3 says SlowDown with a 503.
_THROTTLE = {
    "dynamodbstreams": (400, "LimitExceededException"),
    "kinesis": (400, "ProvisionedThroughputExceededException"),
    "sqs": (400, "RequestThrottled"),
    "lambda": (429, "TooManyRequestsException"),
    "s3": (503, "SlowDown"),
}


def service_error(
    service: str, status: int, code: str, message: str = "injected by the test proxy"
) -> tuple[int, dict[str, str], bytes]:
    """An error answer in the protocol `service` speaks: XML for S3, JSON (with X-Amzn-ErrorType) otherwise."""
    if service == "s3":
        body = f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'
        return status, {"Content-Type": "application/xml"}, body.encode()
    headers = {"Content-Type": "application/x-amz-json-1.0", "X-Amzn-ErrorType": code}
    if service == "sqs":  # SQS's JSON protocol names its error codes in this header too
        headers["x-amzn-query-error"] = f"{code};{'Sender' if status < 500 else 'Receiver'}"
    return status, headers, json.dumps({"__type": code, "message": message}).encode()


def _always(_: Request) -> bool:
    return True


class Chaos:
    """Seeded random faults: each request not taken by a rule is faulted with probability `rate`.

    `rates` overrides `rate` per service; `kinds` are drawn from uniformly (see FAULT_KINDS); `limits` caps a kind's total count
    (e.g. the slow `timeout`); `services` restricts faults to those services (default: all);
    `spare(request)` True exempts a request. `timeout_seconds` should exceed the client's
    read timeout: the proxy then holds the request that long and closes without answering.
    `counts[(service, kind)]` says what was injected. Each service draws from its own seeded
    generator: its n-th call meets the same fault in every run (which call is n-th may vary
    with the interleaving of concurrent calls).
    """

    def __init__(
        self,
        seed: int,
        *,
        rate: float = 0.2,
        rates: dict[str, float] | None = None,
        kinds: Iterable[str] = FAULT_KINDS,
        limits: dict[str, int] | None = None,
        services: Iterable[str] | None = None,
        spare: Callable[[Request], bool] | None = None,
        latency: tuple[float, float] = (0.02, 0.3),
        timeout_seconds: float = 3.5,
    ) -> None:
        self.kinds = tuple(kinds)
        unknown = set(self.kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
        self.rate = rate
        self.rates = dict(rates or {})
        self.limits = dict(limits or {})
        self.services = frozenset(services) if services is not None else None
        self.spare = spare
        self.latency = latency
        self.timeout_seconds = timeout_seconds
        self.enabled = True
        self.counts: Counter[tuple[str, str]] = Counter()
        self.seed = seed
        self._random: dict[str, random.Random] = {}
        self._lock = threading.Lock()

    def by_kind(self) -> dict[str, int]:
        totals: Counter[str] = Counter()
        for (_, kind), n in self.counts.items():
            totals[kind] += n
        return {kind: totals[kind] for kind in FAULT_KINDS if totals[kind]}

    def by_service(self) -> dict[str, int]:
        totals: Counter[str] = Counter()
        for (service, _), n in self.counts.items():
            totals[service] += n
        return dict(sorted(totals.items()))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def pick(self, request: Request) -> Rule | None:
        """The fault for this request (a one-off Rule), or None to forward it untouched."""
        service = request.service
        if not self.enabled or (self.services is not None and service not in self.services):
            return None
        if self.spare is not None and self.spare(request):
            return None
        with self._lock:
            # One generator per service: its n-th call meets the same fault whatever the interleaving.
            rng = self._random.setdefault(service, random.Random(f"{self.seed}:{service}"))
            if rng.random() >= self.rates.get(service, self.rate):
                return None
            kinds = [k for k in self.kinds if self.limits.get(k) is None or self._used(k) < self.limits[k]]
            if not kinds:
                return None
            kind = rng.choice(kinds)
            pause = rng.uniform(*self.latency)
            self.counts[(service, kind)] += 1
        return self._rule(kind, service, pause)

    def _used(self, kind: str) -> int:
        return sum(n for (_, k), n in self.counts.items() if k == kind)

    def _rule(self, kind: str, service: str, pause: float) -> Rule:
        if kind == "latency":
            return Rule(_always, delay=pause)
        if kind == "reset":
            return Rule(_always, drop=True)
        if kind == "reset_after":
            return Rule(_always, drop_after=True)
        if kind == "cut":
            return Rule(_always, cut=True)
        if kind == "timeout":
            return Rule(_always, delay=self.timeout_seconds, drop=True)
        if kind == "http500":
            code = {"s3": "InternalError", "lambda": "ServiceException"}.get(service, "InternalFailure")
            return Rule(_always, reply=service_error(service, 500, code))
        if kind == "http503":
            return Rule(_always, reply=service_error(service, 503, "ServiceUnavailable"))
        status, code = _THROTTLE.get(service, (400, "ThrottlingException"))
        return Rule(_always, reply=service_error(service, status, code))


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], OSError):
            return  # a client that went away (a killed process, its own timeout): not the proxy's fault
        super().handle_error(request, client_address)


@dataclass
class FaultProxy:
    upstream: str
    rules: list[Rule] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    chaos: Chaos | None = None
    # Every request that reached the emulator, in the order the emulator answered them.
    forwarded: list[Forwarded] = field(default_factory=list)

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
                if len(body) < length:  # the client went away mid-request: AWS would never act on it
                    self.close_connection = True
                    return
                request = Request(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                response = proxy._serve(request)
                if response is None:
                    self.close_connection = True
                    self.connection.close()
                    return
                try:
                    self.send_response(response.status)
                    for k, v in response.headers.items():
                        if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(response.body)))
                    self.end_headers()
                    if response.drip:
                        self.wfile.flush()
                        for i in range(len(response.body)):
                            self.wfile.write(response.body[i : i + 1])
                            self.wfile.flush()
                            time.sleep(response.drip)
                        return
                    if response.cut:
                        self.wfile.write(response.body[: len(response.body) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.close()
                        return
                    self.wfile.write(response.body)
                except OSError:  # the client gave up (its own timeout) before the answer
                    self.close_connection = True

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
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
            rule = next((r for r in self.rules if r.take(request)), None)
        if rule is None and self.chaos is not None:
            rule = self.chaos.pick(request)
        return rule

    def created(self, path_suffix: str = "") -> Counter[str]:
        """S3 objects the emulator created through this proxy (PUT answered 200), by path."""
        with self._lock:
            return Counter(
                f.path
                for f in self.forwarded
                if f.service == "s3"
                and f.method == "PUT"
                and f.status == 200
                and f.path.endswith(path_suffix)
            )

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
            if rule.reply is not None:
                status, headers, body = rule.reply
                return Response(status, dict(headers), body)
        if rule is not None and rule.modify_request is not None:
            request = rule.modify_request(request)
        response = self._forward(request)
        with self._lock:
            self.forwarded.append(
                Forwarded(
                    request.service,
                    request.operation,
                    request.method,
                    unquote(urlsplit(request.path).path),
                    response.status,
                )
            )
        if rule is not None and rule.drop_after:
            return None
        if rule is not None and rule.rewrite is not None:
            rewritten = rule.rewrite(request, json.loads(response.body or b"{}"))
            headers = {k: v for k, v in response.headers.items() if k.lower() != "x-amz-crc32"}
            response = Response(response.status, headers, json.dumps(rewritten).encode())
        if rule is not None and rule.cut:
            response = Response(response.status, response.headers, response.body, cut=True)
        if rule is not None and rule.drip:
            response = Response(response.status, response.headers, response.body, drip=rule.drip)
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


PROOF_DIR = ROOT / ".cache" / "reliability"


def record_proof(name: str, figures: dict[str, Any]) -> Path:
    """Keep a test's figures for docs/reliability.md: `.cache/reliability/<name>.json`, and print them (-s)."""
    PROOF_DIR.mkdir(parents=True, exist_ok=True)
    path = PROOF_DIR / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    print(f"\nproof {name}: {json.dumps(figures, sort_keys=True)}")
    return path
