"""A canned AWS endpoint for the benchmark: answers cost it almost no CPU, so the client is measured.

It serves, from memory, what replayer and the baseline ask of AWS:
- DynamoDB Streams and Kinesis: GetShardIterator, GetRecords (pages joined from records
  serialized once, at start), DescribeStream, DescribeStreamSummary, ListShards;
- S3: CreateBucket, PutObject (``If-None-Match: *`` honoured: 412 when the key exists),
  GetObject/HeadObject (``If-None-Match: ETAG`` answers 304), ListObjectsV2, multipart
  uploads, DeleteObject;
- SQS (JSON protocol): CreateQueue, GetQueueUrl, GetQueueAttributes, SendMessage(Batch),
  ReceiveMessage (long polls honoured), DeleteMessage(Batch), ChangeMessageVisibility(Batch),
  PurgeQueue;
- and a small control API under ``/_bench/``: ``POST /_bench/streams`` makes synthetic
  streams and answers the invocation records of their ranges, ``POST /_bench/fill`` puts
  bodies on a queue, ``GET /_bench/stats`` counts requests per operation and what is held.

Run it in its own process (so its CPU is never the client's), usually behind
bench/latency_proxy.py:

    python -m bench.endpoint --port 0 --delay-ms 20 [--shape a --queue bench --ranges-out R.jsonl]

prints one JSON line (``endpoint``, ``proxied`` when --delay-ms is given, ``queue_url`` and
``ranges`` when --shape is given), then serves until SIGTERM/SIGINT. Point clients at
``proxied`` with AWS_ENDPOINT_URL (any credentials, region us-east-1). Shapes: a = 50 ranges
x 1,000 on 10 shards, b = 50 x 1,000 on one shard, c = 10 x 10,000 on 10 shards (small records);
e = 300 x 1,000 on 10 shards, f = 1,000 x 100 on 50 shards, g = 300 x 1,000 on one shard
(records with both images, as NEW_AND_OLD_IMAGES streams carry); ``--kind kinesis`` makes
Kinesis streams instead of DynamoDB ones.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import hashlib
import itertools
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload
from xml.sax.saxutils import escape

import orjson

ACCOUNT = "123456789012"
REGION = "us-east-1"
# The records' creation time: this process's start, so no range is near its 24 h retention.
EPOCH = int(time.time())

# name -> (ranges, records per range, shards, record style): the benchmark's shapes (bench/run.py's)
SHAPES = {
    "a": (50, 1000, 10, "small"),
    "b": (50, 1000, 1, "small"),
    "c": (10, 10_000, 10, "small"),
    "e": (300, 1000, 10, "images"),
    "f": (1000, 100, 50, "images"),
    "g": (300, 1000, 1, "images"),
}
# Record styles: "small" (one image, ~450 bytes of JSON, one string padding most of it) and
# "images" (what a table streaming NEW_AND_OLD_IMAGES sends on an update: keys and both images,
# strings, numbers, string and number sets, binary, a map, a boolean; SizeBytes ~400).
STYLES = ("small", "images")


# ---------------------------------------------------------------- streams


class _Made(Sequence[bytes]):
    """A shard's records made when a page asks for them (a soak's million records are never all held)."""

    def __init__(self, make: Callable[[int], bytes], count: int) -> None:
        self._make, self._count = make, count

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...
    def __getitem__(self, index: int | slice) -> bytes | list[bytes]:
        if isinstance(index, slice):
            return [self._make(i) for i in range(*index.indices(self._count))]
        return self._make(index)


@dataclass
class Shard:
    shard_id: str
    sequence: Sequence[int]  # ascending
    records: Sequence[bytes]  # each record's JSON, as GetRecords carries it

    def index(self, seq: int, after: bool = False) -> int:
        import bisect

        return (bisect.bisect_right if after else bisect.bisect_left)(self.sequence, seq)


@dataclass
class Stream:
    kind: str  # dynamodb | kinesis
    name: str
    arn: str
    shards: list[Shard]
    batch: int = 100  # the BatchSize of the mapping reading it (a range's size)
    pages: dict[tuple[int, int, int], bytes] = field(default_factory=dict)
    lazy: bool = False  # records made per page, pages not kept


def _dynamodb_record(stream: str, seq: int, j: int) -> bytes:
    item = {
        "pk": {"S": f"order-{j}"},
        "total": {"N": str(j * 7)},
        "note": {"S": "x" * 160},
        "tags": {"SS": ["a", "b"]},
    }
    return orjson.dumps(
        {
            "eventID": hashlib.md5(f"{stream}{seq}".encode()).hexdigest(),
            "eventName": "INSERT",
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": REGION,
            "dynamodb": {
                "ApproximateCreationDateTime": EPOCH + j // 1000,
                "Keys": {"pk": item["pk"]},
                "NewImage": item,
                "SequenceNumber": str(seq),
                "SizeBytes": 250,
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            },
        }
    )


def _image_record(stream: str, seq: int, j: int) -> bytes:
    """A MODIFY record of a table streaming NEW_AND_OLD_IMAGES: keys, both images (~400 bytes)."""
    keys = {"pk": {"S": f"customer#{j % 9973:06d}"}, "sk": {"S": f"order#{j:010d}"}}
    old = {
        **keys,
        "status": {"S": "PAID"},
        "total": {"N": f"{(j * 7919) % 100_000}.{j % 100:02d}"},
        "items": {"N": str(1 + j % 9)},
        "tags": {"SS": ["gift", f"region-{j % 7}"]},
        "ratings": {"NS": [str(j % 11), "4.5"]},
        "digest": {"B": base64.b64encode(hashlib.md5(b"%d" % j).digest()).decode()},
        "shipTo": {"M": {"city": {"S": "Lyon"}, "zip": {"S": f"690{j % 10:02d}"}}},
        "gift": {"BOOL": j % 3 == 0},
        "updatedAt": {"S": _iso(EPOCH + j // 1000)},
    }
    new = {
        **old,
        "status": {"S": "SHIPPED"},
        "carrier": {"S": "colissimo"},
        "tracking": {"S": f"6A{j:011d}"},
        "updatedAt": {"S": _iso(EPOCH + j // 1000 + 1)},
    }
    return orjson.dumps(
        {
            "eventID": hashlib.md5(f"{stream}{seq}".encode()).hexdigest(),
            "eventName": "MODIFY",
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": REGION,
            "dynamodb": {
                "ApproximateCreationDateTime": EPOCH + j // 1000,
                "Keys": keys,
                "NewImage": new,
                "OldImage": old,
                "SequenceNumber": str(seq),
                "SizeBytes": 402,
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            },
        }
    )


def _kinesis_record(seq: int, j: int) -> bytes:
    data = base64.b64encode(orjson.dumps({"order": j, "total": j * 7, "note": "x" * 160})).decode()
    return orjson.dumps(
        {
            "SequenceNumber": str(seq),
            "ApproximateArrivalTimestamp": EPOCH + j / 1000,
            "Data": data,
            "PartitionKey": f"order-{j}",
        }
    )


def make_stream(
    kind: str, name: str, shards: int, records_per_shard: int, style: str = "small", lazy: bool = False
) -> Stream:
    """A stream of `shards` open shards holding `records_per_shard` records each (DynamoDB
    records of `style`: see STYLES); `lazy`: each page's records made when it is asked for."""
    if style not in STYLES:
        raise ValueError(f"record style {style!r}: one of {', '.join(STYLES)}")
    dynamodb_record = _image_record if style == "images" else _dynamodb_record
    if lazy:
        if kind != "dynamodb":
            raise ValueError("lazy streams are DynamoDB streams")
        arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}/stream/2025-11-26T00:00:00.000"
        lazy_shards = []
        for s in range(shards):
            base = 10**26 * (s + 1)
            seqs = range(base, base + records_per_shard * 100, 100)
            make = functools.partial(lambda seqs, i: dynamodb_record(name, seqs[i], i), seqs)
            lazy_shards.append(Shard(f"shardId-{EPOCH:020d}-{s:08x}", seqs, _Made(make, records_per_shard)))
        return Stream(kind, name, arn, lazy_shards, lazy=True)
    if kind == "dynamodb":
        arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}/stream/2025-11-26T00:00:00.000"
    else:
        arn = f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{name}"
    made = []
    for s in range(shards):
        if kind == "dynamodb":
            shard_id = f"shardId-{EPOCH:020d}-{s:08x}"  # 37 characters, as AWS's
            base = 10**26 * (s + 1)  # 27 digits
            seqs = [base + i * 100 for i in range(records_per_shard)]
            recs = [dynamodb_record(name, q, i) for i, q in enumerate(seqs)]
        else:
            shard_id = f"shardId-{s:012d}"
            base = 49 * 10**54 + s * 10**40  # 56 digits
            seqs = [base + i * 1000 for i in range(records_per_shard)]
            recs = [_kinesis_record(q, i) for i, q in enumerate(seqs)]
        made.append(Shard(shard_id, seqs, recs))
    return Stream(kind, name, arn, made)


def _iso(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def invocation_records(stream: Stream, ranges: int, size: int) -> list[dict[str, Any]]:
    """`ranges` invocation records of `size` records each, spread round-robin over the shards."""
    out = []
    per_shard: Counter[int] = Counter()
    for r in range(ranges):
        s = r % len(stream.shards)
        shard = stream.shards[s]
        first = per_shard[s] * size
        per_shard[s] += 1
        seqs = shard.sequence[first : first + size]
        if len(seqs) < size:
            raise ValueError(f"shard {s} holds too few records for {ranges} ranges of {size}")
        info = {
            "shardId": shard.shard_id,
            "startSequenceNumber": str(seqs[0]),
            "endSequenceNumber": str(seqs[-1]),
            "approximateArrivalOfFirstRecord": _iso(EPOCH),
            "approximateArrivalOfLastRecord": _iso(EPOCH + 1),
            "batchSize": size,
            "streamArn": stream.arn,
        }
        out.append(
            {
                "requestContext": {
                    "requestId": f"bench-{stream.name}-{r}",
                    "functionArn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:bench",
                    "condition": "RetryAttemptsExhausted",
                    "approximateInvokeCount": 3,
                },
                "responseContext": {
                    "statusCode": 200,
                    "executedVersion": "$LATEST",
                    "functionError": "Unhandled",
                },
                "version": "1.0",
                "timestamp": _iso(EPOCH + 2),
                ("DDBStreamBatchInfo" if stream.kind == "dynamodb" else "KinesisBatchInfo"): info,
            }
        )
    return out


# ---------------------------------------------------------------- SQS


@dataclass
class Message:
    message_id: str
    body: str
    md5: str
    sent: int
    visible_at: float = 0.0
    receives: int = 0
    receipt: str = ""


@dataclass
class Queue:
    name: str
    url: str
    visibility: int = 30
    messages: dict[str, Message] = field(default_factory=dict)  # by message id, in sending order
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def visible(self, now: float) -> list[Message]:
        return [m for m in self.messages.values() if m.visible_at <= now]


class AwsError(Exception):
    def __init__(self, status: int, code: str, message: str = "") -> None:
        super().__init__(message or code)
        self.status, self.code, self.message = status, code, message or code


# ---------------------------------------------------------------- the server


class Endpoint:
    def __init__(self) -> None:
        self.streams: dict[str, Stream] = {}
        self.buckets: dict[str, dict[str, tuple[bytes, dict[str, str]]]] = {}
        self.uploads: dict[str, dict[int, bytes]] = {}
        self.queues: dict[str, Queue] = {}
        self.counts: Counter[str] = Counter()
        self.base_url = ""
        self._ids = itertools.count(1)

    # -- control

    def add_streams(self, spec: dict[str, Any]) -> list[dict[str, Any]]:
        kind = spec.get("kind", "dynamodb")
        ranges, size, shards = int(spec["ranges"]), int(spec["records"]), int(spec["shards"])
        per_shard = -(-ranges // shards) * size
        stream = make_stream(
            kind, spec["name"], shards, per_shard, spec.get("style", "small"), bool(spec.get("lazy"))
        )
        stream.batch = size
        self.streams[stream.arn] = stream
        self.streams[stream.name] = stream
        return invocation_records(stream, ranges, size)

    def queue(self, name: str) -> Queue:
        if name not in self.queues:
            self.queues[name] = Queue(name, f"{self.base_url}/{ACCOUNT}/{name}")
        return self.queues[name]

    def _queue_of(self, body: dict[str, Any]) -> Queue:
        name = str(body.get("QueueUrl", "")).rstrip("/").rsplit("/", 1)[-1]
        if name not in self.queues:
            raise AwsError(
                400, "AWS.SimpleQueueService.NonExistentQueue", "The specified queue does not exist."
            )
        return self.queues[name]

    def send(self, queue: Queue, body: str) -> Message:
        message = Message(
            f"{next(self._ids):08d}-bench",
            body,
            hashlib.md5(body.encode()).hexdigest(),
            int(time.time() * 1000),
        )
        queue.messages[message.message_id] = message
        queue.arrived.set()
        return message

    def stats(self) -> dict[str, Any]:
        return {
            "requests": dict(self.counts),
            "objects": {b: len(o) for b, o in self.buckets.items()},
            "queues": {
                q.name: {"messages": len(q.messages), "visible": len(q.visible(time.monotonic()))}
                for q in self.queues.values()
            },
        }

    # -- HTTP

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if line:
                        k, _, v = line.partition(":")
                        headers[k.strip().lower()] = v.strip()
                if headers.get("expect", "").lower() == "100-continue":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    body = await _read_chunked(reader)
                else:
                    body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                status, extra, payload = await self.dispatch(method, target, headers, body)
                reason = {200: "OK", 204: "No Content", 304: "Not Modified"}.get(status, "Error")
                out = [f"HTTP/1.1 {status} {reason}"]
                extra.setdefault("Content-Type", "application/x-amz-json-1.0")
                extra["Content-Length"] = str(len(payload))
                out += [f"{k}: {v}" for k, v in extra.items()]
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
                if method != "HEAD":
                    writer.write(payload)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:  # the server closing on a long poll: nothing to tell anyone
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def dispatch(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        amz_target = headers.get("x-amz-target")
        try:
            if amz_target:
                service, _, op = amz_target.partition(".")
                self.counts[f"{service.split('_')[0]}.{op}"] += 1
                request = orjson.loads(body) if body else {}
                if service.startswith("DynamoDBStreams"):
                    return 200, {}, self.streams_op("dynamodb", op, request)
                if service.startswith("Kinesis"):
                    return (
                        200,
                        {"Content-Type": "application/x-amz-json-1.1"},
                        self.streams_op("kinesis", op, request),
                    )
                if service == "AmazonSQS":
                    return 200, {}, await self.sqs_op(op, request)
                raise AwsError(400, "UnknownOperationException", amz_target)
            path, _, query = target.partition("?")
            if path.startswith("/_bench/"):
                return self.control(method, path, body)
            if path.startswith("/2015-03-31/event-source-mappings"):
                return self.mappings(path, urllib.parse.parse_qs(query))
            return self.s3_op(
                method, urllib.parse.unquote(path), urllib.parse.parse_qs(query, True), headers, body
            )
        except AwsError as exc:
            if amz_target:
                error = {"__type": f"com.amazonaws.bench#{exc.code}", "message": exc.message}
                return exc.status, {"x-amzn-query-error": f"{exc.code};Sender"}, orjson.dumps(error)
            xml = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{exc.code}</Code><Message>{escape(exc.message)}</Message></Error>"
            return exc.status, {"Content-Type": "application/xml"}, xml.encode()

    def control(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        self.counts[f"bench.{path}"] += 1
        if path == "/_bench/streams" and method == "POST":
            return 200, {}, orjson.dumps({"ranges": self.add_streams(orjson.loads(body))})
        if path == "/_bench/fill" and method == "POST":
            spec = orjson.loads(body)
            queue = self.queue(spec["queue"])
            for text in spec["bodies"]:
                self.send(queue, text)
            return 200, {}, orjson.dumps({"queue_url": queue.url, "messages": len(queue.messages)})
        if path == "/_bench/stats":
            return 200, {}, orjson.dumps(self.stats())
        if path.startswith("/_bench/manifests/"):  # ranges archived complete under a prefix
            bucket, _, prefix = path.removeprefix("/_bench/manifests/").partition("/")
            names = self.buckets.get(bucket, {})
            done = sum(1 for k in names if k.startswith(prefix) and k.endswith("/invocation.json"))
            return 200, {}, orjson.dumps({"manifests": done})
        if path.startswith("/_bench/depth/"):  # cheap enough to poll: messages not yet deleted
            queue = self.queues.get(path.removeprefix("/_bench/depth/"))
            return 200, {}, orjson.dumps({"messages": len(queue.messages) if queue else None})
        if path == "/_bench/forget" and method == "POST":  # a soak's objects: keys and ETags kept, bodies not
            for objects in self.buckets.values():
                for key, (data, meta) in objects.items():
                    if data:
                        objects[key] = (b"", meta)
            return 200, {}, b"{}"
        if path == "/_bench/reset" and method == "POST":
            self.buckets = {b: {} for b in self.buckets}
            self.counts.clear()
            return 200, {}, b"{}"
        raise AwsError(404, "NotFound", path)

    # -- Lambda: the event source mappings replayer looks up (one per stream, unfiltered)

    def mappings(self, path: str, query: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
        self.counts["lambda.ListEventSourceMappings"] += 1
        arn = query.get("EventSourceArn", [""])[0]
        function = query.get("FunctionName", [f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:bench"])[0]
        stream = self.streams.get(arn)
        found = (
            [
                {
                    "UUID": hashlib.md5(arn.encode()).hexdigest(),
                    "EventSourceArn": arn,
                    "FunctionArn": function,
                    "BatchSize": stream.batch,
                    "State": "Enabled",
                    "StartingPosition": "TRIM_HORIZON",
                }
            ]
            if stream is not None
            else []
        )
        return 200, {"Content-Type": "application/json"}, orjson.dumps({"EventSourceMappings": found})

    # -- streams

    def _stream(self, request: dict[str, Any]) -> Stream:
        key = request.get("StreamArn") or request.get("StreamARN") or request.get("StreamName")
        if key not in self.streams:
            raise AwsError(400, "ResourceNotFoundException", f"stream {key} not found")
        return self.streams[key]

    def _shard(self, stream: Stream, shard_id: str) -> int:
        for i, shard in enumerate(stream.shards):
            if shard.shard_id == shard_id:
                return i
        raise AwsError(400, "ResourceNotFoundException", f"shard {shard_id} not found")

    def streams_op(self, kind: str, op: str, request: dict[str, Any]) -> bytes:
        if op == "GetRecords":
            return self._get_records(kind, request)
        if op == "GetShardIterator":
            stream = self._stream(request)
            s = self._shard(stream, request["ShardId"])
            shard = stream.shards[s]
            how = request["ShardIteratorType"]
            seq = request.get("SequenceNumber") or request.get("StartingSequenceNumber")
            if how == "AT_SEQUENCE_NUMBER":
                pos = shard.index(int(seq))
            elif how == "AFTER_SEQUENCE_NUMBER":
                pos = shard.index(int(seq), after=True)
            elif how == "TRIM_HORIZON":
                pos = 0
            else:
                pos = len(shard.sequence)
            return orjson.dumps({"ShardIterator": f"{stream.name}|{s}|{pos}"})
        stream = self._stream(request)
        shards = [
            {
                "ShardId": sh.shard_id,
                "SequenceNumberRange": {
                    "StartingSequenceNumber": str(sh.sequence[0]) if sh.sequence else "0"
                },
                **(
                    {"HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": str(2**128 - 1)}}
                    if kind == "kinesis"
                    else {}
                ),
            }
            for sh in stream.shards
        ]
        if op == "DescribeStream":
            key = "StreamArn" if kind == "dynamodb" else "StreamARN"
            return orjson.dumps(
                {
                    "StreamDescription": {
                        key: stream.arn,
                        "StreamStatus": "ENABLED" if kind == "dynamodb" else "ACTIVE",
                        "Shards": shards,
                        "HasMoreShards": False,
                        "StreamViewType": "NEW_AND_OLD_IMAGES",
                        "RetentionPeriodHours": 24,
                    }
                }
            )
        if op == "DescribeStreamSummary":
            return orjson.dumps(
                {
                    "StreamDescriptionSummary": {
                        "StreamName": stream.name,
                        "StreamARN": stream.arn,
                        "StreamStatus": "ACTIVE",
                        "RetentionPeriodHours": 24,
                        "StreamCreationTimestamp": EPOCH,
                        "OpenShardCount": len(shards),
                    }
                }
            )
        if op == "ListShards":
            return orjson.dumps({"Shards": shards})
        raise AwsError(400, "UnknownOperationException", op)

    def _get_records(self, kind: str, request: dict[str, Any]) -> bytes:
        try:
            name, s, pos = str(request["ShardIterator"]).rsplit("|", 2)
            stream, shard_index, start = self.streams[name], int(s), int(pos)
            shard = stream.shards[shard_index]
        except (KeyError, ValueError, IndexError):
            raise AwsError(400, "ExpiredIteratorException", "iterator expired or invalid") from None
        limit = min(int(request.get("Limit") or 1000), 1000 if kind == "dynamodb" else 10_000)
        key = (shard_index, start, limit)
        page = stream.pages.get(key)
        if page is None:
            end = min(start + limit, len(shard.records))
            behind = (
                b',"MillisBehindLatest":%d' % (0 if end >= len(shard.records) else 1000)
                if kind == "kinesis"
                else b""
            )
            page = b'{"Records":[%b],"NextShardIterator":"%b|%d|%d"%b}' % (
                b",".join(shard.records[start:end]),
                name.encode(),
                shard_index,
                end,
                behind,
            )
            if len(stream.pages) > 4096:
                stream.pages.clear()
            if not stream.lazy:
                stream.pages[key] = page
        return page

    # -- SQS

    async def sqs_op(self, op: str, request: dict[str, Any]) -> bytes:
        if op == "CreateQueue":
            queue = self.queue(request["QueueName"])
            queue.visibility = int(request.get("Attributes", {}).get("VisibilityTimeout", queue.visibility))
            return orjson.dumps({"QueueUrl": queue.url})
        if op == "GetQueueUrl":
            if request["QueueName"] not in self.queues:
                raise AwsError(400, "AWS.SimpleQueueService.NonExistentQueue", "no such queue")
            return orjson.dumps({"QueueUrl": self.queues[request["QueueName"]].url})
        queue = self._queue_of(request)
        now = time.monotonic()
        if op == "GetQueueAttributes":
            visible = len(queue.visible(now))
            return orjson.dumps(
                {
                    "Attributes": {
                        "ApproximateNumberOfMessages": str(visible),
                        "ApproximateNumberOfMessagesNotVisible": str(len(queue.messages) - visible),
                        "VisibilityTimeout": str(queue.visibility),
                        "QueueArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{queue.name}",
                    }
                }
            )
        if op == "SendMessage":
            m = self.send(queue, request["MessageBody"])
            return orjson.dumps({"MessageId": m.message_id, "MD5OfMessageBody": m.md5})
        if op == "SendMessageBatch":
            sent = []
            for entry in request["Entries"]:
                m = self.send(queue, entry["MessageBody"])
                sent.append({"Id": entry["Id"], "MessageId": m.message_id, "MD5OfMessageBody": m.md5})
            return orjson.dumps({"Successful": sent, "Failed": []})
        if op == "ReceiveMessage":
            return await self._receive(queue, request)
        if op in ("DeleteMessage", "ChangeMessageVisibility"):
            self._settle(queue, op, request)
            return b"{}"
        if op in ("DeleteMessageBatch", "ChangeMessageVisibilityBatch"):
            done = []
            for entry in request["Entries"]:
                self._settle(queue, op.removesuffix("Batch"), entry)
                done.append({"Id": entry["Id"]})
            return orjson.dumps({"Successful": done, "Failed": []})
        if op == "PurgeQueue":
            queue.messages.clear()
            return b"{}"
        raise AwsError(400, "UnsupportedOperation", op)

    def _settle(self, queue: Queue, op: str, request: dict[str, Any]) -> None:
        message_id = str(request["ReceiptHandle"]).split(":", 1)[0]
        message = queue.messages.get(message_id)
        if message is None:
            return  # already deleted: SQS answers success too
        if op == "DeleteMessage":
            del queue.messages[message_id]
        else:
            message.visible_at = time.monotonic() + int(request["VisibilityTimeout"])
            if int(request["VisibilityTimeout"]) == 0:
                queue.arrived.set()

    async def _receive(self, queue: Queue, request: dict[str, Any]) -> bytes:
        wanted = min(int(request.get("MaxNumberOfMessages") or 1), 10)
        wait = int(request.get("WaitTimeSeconds") or 0)
        timeout = int(request.get("VisibilityTimeout") or queue.visibility)
        deadline = time.monotonic() + wait
        while True:
            now = time.monotonic()
            ready = queue.visible(now)[:wanted]
            if ready or now >= deadline:
                break
            queue.arrived.clear()
            hidden = [m.visible_at for m in queue.messages.values() if m.visible_at > now]
            nap = min([deadline - now, *(v - now for v in hidden)])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(queue.arrived.wait(), max(nap, 0.001))
        out = []
        for m in ready:
            m.receives += 1
            m.visible_at = now + timeout
            m.receipt = f"{m.message_id}:{m.receives}"
            out.append(
                {
                    "MessageId": m.message_id,
                    "ReceiptHandle": m.receipt,
                    "MD5OfBody": m.md5,
                    "Body": m.body,
                    "Attributes": {"ApproximateReceiveCount": str(m.receives), "SentTimestamp": str(m.sent)},
                }
            )
        return orjson.dumps({"Messages": out} if out else {})

    # -- S3 (path style: /bucket/key)

    def s3_op(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        bucket, _, key = path.lstrip("/").partition("/")
        xml = {"Content-Type": "application/xml"}
        if not key:
            self.counts[f"s3.{method} bucket"] += 1
            if method == "PUT":
                self.buckets.setdefault(bucket, {})
                return 200, xml, b""
            objects = self._bucket(bucket)
            prefix = query.get("prefix", [""])[0]
            after = query.get("continuation-token", query.get("start-after", [""]))[0]
            limit = int(query.get("max-keys", ["1000"])[0])
            names = sorted(k for k in objects if k.startswith(prefix) and k > after)
            page, more = names[:limit], len(names) > limit
            contents = "".join(
                f"<Contents><Key>{escape(k)}</Key><Size>{len(objects[k][0])}</Size><ETag>{objects[k][1]['ETag']}</ETag>"
                "<LastModified>2025-11-26T00:00:00.000Z</LastModified><StorageClass>STANDARD</StorageClass></Contents>"
                for k in page
            )
            token = f"<NextContinuationToken>{escape(page[-1])}</NextContinuationToken>" if more else ""
            return (
                200,
                xml,
                (
                    f"<?xml version='1.0' encoding='UTF-8'?><ListBucketResult><Name>{bucket}</Name><Prefix>{escape(prefix)}</Prefix>"
                    f"<KeyCount>{len(page)}</KeyCount><MaxKeys>{limit}</MaxKeys><IsTruncated>{str(more).lower()}</IsTruncated>"
                    f"{token}{contents}</ListBucketResult>"
                ).encode(),
            )
        objects = self._bucket(bucket)
        if "uploads" in query and method == "POST":
            self.counts["s3.CreateMultipartUpload"] += 1
            upload = f"up-{next(self._ids)}"
            self.uploads[upload] = {}
            return (
                200,
                xml,
                (
                    f"<InitiateMultipartUploadResult><Bucket>{bucket}</Bucket><Key>{escape(key)}</Key>"
                    f"<UploadId>{upload}</UploadId></InitiateMultipartUploadResult>"
                ).encode(),
            )
        if "uploadId" in query:
            upload = query["uploadId"][0]
            if upload not in self.uploads:
                raise AwsError(404, "NoSuchUpload", upload)
            if method == "PUT":
                self.counts["s3.UploadPart"] += 1
                self.uploads[upload][int(query["partNumber"][0])] = body
                return 200, {"ETag": f'"{hashlib.md5(body).hexdigest()}"'}, b""
            if method == "DELETE":
                self.counts["s3.AbortMultipartUpload"] += 1
                del self.uploads[upload]
                return 204, {}, b""
            self.counts["s3.CompleteMultipartUpload"] += 1
            parts = self.uploads.pop(upload)
            data = b"".join(parts[n] for n in sorted(parts))
            self._put(objects, key, data, headers)
            return (
                200,
                xml,
                (
                    f"<CompleteMultipartUploadResult><Bucket>{bucket}</Bucket><Key>{escape(key)}</Key>"
                    f"<ETag>{objects[key][1]['ETag']}</ETag></CompleteMultipartUploadResult>"
                ).encode(),
            )
        if method == "PUT":
            self.counts["s3.PutObject"] += 1
            self._put(objects, key, body, headers)
            return 200, {"ETag": objects[key][1]["ETag"]}, b""
        if method in ("GET", "HEAD"):
            self.counts[f"s3.{'GetObject' if method == 'GET' else 'HeadObject'}"] += 1
            if key not in objects:
                raise AwsError(404, "NoSuchKey", key)
            data, meta = objects[key]
            if headers.get("if-none-match") == meta["ETag"]:
                return 304, {"ETag": meta["ETag"]}, b""
            return 200, dict(meta), data
        if method == "DELETE":
            self.counts["s3.DeleteObject"] += 1
            objects.pop(key, None)
            return 204, {}, b""
        raise AwsError(405, "MethodNotAllowed", method)

    def _bucket(self, bucket: str) -> dict[str, tuple[bytes, dict[str, str]]]:
        if bucket not in self.buckets:
            raise AwsError(404, "NoSuchBucket", bucket)
        return self.buckets[bucket]

    def _put(
        self, objects: dict[str, tuple[bytes, dict[str, str]]], key: str, data: bytes, headers: dict[str, str]
    ) -> None:
        if headers.get("if-none-match") == "*" and key in objects:
            raise AwsError(
                412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold"
            )
        meta = {
            "ETag": f'"{hashlib.md5(data).hexdigest()}"',
            "Content-Type": headers.get("content-type", "binary/octet-stream"),
        }
        if "content-encoding" in headers and headers["content-encoding"] != "aws-chunked":
            meta["Content-Encoding"] = headers["content-encoding"]
        objects[key] = (data, meta)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


# ---------------------------------------------------------------- running it


@dataclass
class Running:
    """An endpoint (and its latency proxy) started as processes of their own by `start`."""

    endpoint: str
    proxied: str
    process: subprocess.Popen[str]
    info: dict[str, Any]

    def cpu(self) -> float:
        """CPU seconds the endpoint and its proxy used so far."""
        pids = [self.process.pid, *([self.info["proxy_pid"]] if "proxy_pid" in self.info else [])]
        return sum(_proc_cpu(pid) for pid in pids)

    def close(self) -> None:
        self.process.terminate()  # it stops its proxy
        self.process.wait(timeout=10)


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(delay_ms: float | None = 20.0, *args: str) -> Running:
    """Start `python -m bench.endpoint [--delay-ms DELAY] ARGS...` and wait for its address line."""
    root = Path(__file__).resolve().parent.parent
    delay = ["--delay-ms", str(delay_ms)] if delay_ms is not None else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.endpoint", *delay, *args],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=10)
        raise RuntimeError("bench.endpoint exited before answering")
    info = orjson.loads(line)
    return Running(info["endpoint"], info.get("proxied", info["endpoint"]), proc, info)


async def _serve(args: argparse.Namespace) -> None:
    endpoint = Endpoint()
    server = await asyncio.start_server(endpoint.handle, args.host, args.port, limit=1 << 20)
    port = server.sockets[0].getsockname()[1]
    endpoint.base_url = f"http://{args.host}:{port}"
    endpoint.buckets.setdefault("bench", {})
    info: dict[str, Any] = {"endpoint": endpoint.base_url, "pid": os.getpid()}
    proxy = None
    if args.delay_ms is not None:
        here = Path(__file__).resolve().parent
        proxy = subprocess.Popen(
            [
                sys.executable,
                str(here / "latency_proxy.py"),
                "--upstream",
                f"{args.host}:{port}",
                "--delay-ms",
                str(args.delay_ms),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proxy.stdout is not None
        info["proxied"] = f"http://127.0.0.1:{proxy.stdout.readline().strip()}"
        info["proxy_pid"] = proxy.pid
    if args.shape:
        ranges, size, shards, style = SHAPES[args.shape]
        made = endpoint.add_streams(
            {
                "kind": args.kind,
                "name": f"bench-{args.shape}",
                "ranges": ranges,
                "records": size,
                "shards": shards,
                "style": style,
            }
        )
        lines = [orjson.dumps(r).decode() for r in made]
        if args.ranges_out:
            Path(args.ranges_out).write_text("\n".join(lines) + "\n")
            info["ranges"] = str(args.ranges_out)
        if args.queue:
            queue = endpoint.queue(args.queue)
            for text in lines:
                endpoint.send(queue, text)
            info["queue_url"] = queue.url
        info["records"] = ranges * size
    print(orjson.dumps(info).decode(), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    if proxy is not None:
        proxy.terminate()
        proxy.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, help="also start bench/latency_proxy.py with this delay")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="make this shape's streams at start")
    parser.add_argument("--kind", choices=["dynamodb", "kinesis"], default="dynamodb")
    parser.add_argument("--queue", help="with --shape: a queue holding the shape's invocation records")
    parser.add_argument("--ranges-out", type=Path, help="with --shape: write its invocation records here")
    args = parser.parse_args()
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
