"""A workload of ranges on real emulated streams, and the check that the archive holds each exactly once."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from replayer.archive.layout import MANIFEST, RECORDS, range_path
from replayer.parse import parse_record
from tests.support.aws import DynamoTable, KinesisStream, client, json_objects, keys, queue_counts, send

# ---- what was sent, and what the archive must hold


@dataclass
class Range:
    """One range put on the queue: its invocation record and the stream records it names."""

    record: dict[str, Any]
    sequences: list[str]
    contents: dict[str, str]  # sequence number -> a distinctive value of the record (DDB pk / Kinesis data)

    @property
    def folder(self) -> str:
        return range_path(parse_record(self.record))


@dataclass
class Workload:
    ranges: list[Range] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)  # message bodies that must be quarantined
    allow: list[str] = field(default_factory=list)

    @property
    def records(self) -> int:
        return sum(len(r.sequences) for r in self.ranges)


def ddb_ranges(table: DynamoTable, n: int, size: int, *, payload: str = "x") -> list[Range]:
    table.put(n * size, payload=payload)
    records = table.stream_records()
    out = []
    for i in range(0, n * size, size):
        chunk = records[i : i + size]
        out.append(
            Range(
                table.invocation_record(i, i + size - 1, records),
                [r["dynamodb"]["SequenceNumber"] for r in chunk],
                {r["dynamodb"]["SequenceNumber"]: r["dynamodb"]["Keys"]["pk"]["S"] for r in chunk},
            )
        )
    return out


def kinesis_ranges(stream: KinesisStream, n: int, size: int) -> list[Range]:
    puts = stream.put(n * size)
    records = stream.stream_records()
    out = []
    for i in range(0, n * size, size):
        out.append(
            Range(
                stream.invocation_record(i, i + size - 1, records),
                [p["SequenceNumber"] for p in puts[i : i + size]],
                {p["SequenceNumber"]: base64.b64encode(p["Data"]).decode() for p in puts[i : i + size]},
            )
        )
    return out


def build_workload(endpoint: str, *, tables: int, streams: int, ranges_each: int, size: int) -> Workload:
    work = Workload()
    for _ in range(tables):
        table = DynamoTable(endpoint)
        work.ranges += ddb_ranges(table, ranges_each, size)
        work.allow.append(table.stream_arn)
    for _ in range(streams):
        stream = KinesisStream(endpoint)
        work.ranges += kinesis_ranges(stream, ranges_each, size)
        work.allow.append(stream.stream_arn)
    outsider = DynamoTable(endpoint)  # a real stream the configuration does not allow
    outsider.put(1)
    work.bad = [
        "{not json",
        json.dumps({"Records": [{"eventSource": "aws:kinesis"}]}),
        json.dumps(outsider.invocation_record(0, 0)),
    ]
    return work


def send_workload(endpoint: str, queue: str, work: Workload) -> None:
    bodies: list[Any] = [r.record for r in work.ranges[:-2]]
    # The last two ranges travel together, in one SNS Lambda event: one message, two ranges.
    bodies.append(
        {
            "Records": [
                {"EventSource": "aws:sns", "Sns": {"Message": json.dumps(r.record)}} for r in work.ranges[-2:]
            ]
        }
    )
    send(endpoint, queue, *bodies, *work.bad)


def archived_records(endpoint: str, bucket: str, key: str) -> list[dict[str, Any]]:
    body = client("s3", endpoint).get_object(Bucket=bucket, Key=key)["Body"].read()
    return [json.loads(line) for line in gzip.decompress(body).decode().splitlines()]


def sequence_of(record: dict[str, Any]) -> str:
    if "dynamodb" in record:
        return str(record["dynamodb"]["SequenceNumber"])
    return str(record["kinesis"]["sequenceNumber"])


def content_of(record: dict[str, Any]) -> str:
    if "dynamodb" in record:
        return str(record["dynamodb"]["Keys"]["pk"]["S"])
    return str(record["kinesis"]["data"])


def check_archive(
    endpoint: str, bucket: str, prefix: str, work: Workload, created: Callable[[str], int] | None
) -> int:
    """Every range archived, complete and equal to the stream; nothing else there. Records lost."""
    expected = {f"{prefix}/{r.folder}/{name}" for r in work.ranges for name in (RECORDS, MANIFEST)}
    present = set(keys(endpoint, bucket, prefix + "/"))
    assert present == expected, (sorted(present - expected), sorted(expected - present))
    lost = 0
    for r in work.ranges:
        key = f"{prefix}/{r.folder}/{RECORDS}"
        got = archived_records(endpoint, bucket, key)
        assert [sequence_of(g) for g in got] == r.sequences
        assert {sequence_of(g): content_of(g) for g in got} == r.contents
        lost += len(set(r.sequences) - {sequence_of(g) for g in got})
        manifest = json.loads(
            client("s3", endpoint)
            .get_object(Bucket=bucket, Key=f"{prefix}/{r.folder}/{MANIFEST}")["Body"]
            .read()
        )
        assert manifest["archived"]["records"] == len(r.sequences)
        if created is not None:  # exactly once: one PUT created each object, any other found it there
            assert created(f"/{bucket}/{key}") == 1, key
            assert created(f"/{bucket}/{prefix}/{r.folder}/{MANIFEST}") == 1
    return lost


def quarantined(endpoint: str, bucket: str, prefix: str) -> list[dict[str, Any]]:
    return list(json_objects(endpoint, bucket, prefix).values())


def emptied(endpoint: str, queue: str) -> bool:
    return queue_counts(endpoint, queue) == (0, 0)
