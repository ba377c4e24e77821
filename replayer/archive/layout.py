"""Where a range lives in an archive: folder and object names, derived only from the range.

Nothing a message says beyond the range itself (stream ARN, shard, start, end) reaches a
key, so a message can neither choose nor steer where its records are written.
"""

from __future__ import annotations

import hashlib
import re

from replayer.model import KAFKA_SELF_MANAGED, Failure, StreamArn, StreamKind, parse_stream_arn

__all__ = [
    "LOSS_REPORT",
    "MANIFEST",
    "RECORDS",
    "REDRIVEN",
    "kafka_source_path",
    "range_path",
    "redrive_marker",
    "safe_segment",
    "stream_path",
]

RECORDS = "records.jsonl.gz"
MANIFEST = "invocation.json"  # written last: its presence means the range is complete
LOSS_REPORT = "loss-report.json"
REDRIVEN = "redriven"  # beside the records: one marker per function a range was re-driven to

_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")


def safe_segment(value: str) -> str:
    """One path segment that cannot climb, split or hide: anything unusual is %-escaped.

    Stream ARNs are validated when parsed; this is the second wall, not the first.
    """
    escaped = _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), value)
    if escaped.startswith("."):
        escaped = "%2E" + escaped[1:]
    return escaped or "%00"


def stream_path(arn: StreamArn) -> str:
    """``kind/account/region/stream[/label]``: the folder holding one stream's ranges."""
    parts = [arn.kind.value, arn.account, arn.region, arn.name]
    if arn.label is not None:
        parts.append(arn.label)
    return "/".join(safe_segment(p) for p in parts)


def range_path(failure: Failure) -> str:
    """``kind/account/region/stream[/label]/shard/start-end``: the range's archive folder
    (Kafka: ``kafka/.../topic/partition/first-last``, see `kafka_source_path`)."""
    if failure.kind is StreamKind.KAFKA:
        parts = (str(failure.topic), str(failure.partition), f"{failure.start}-{failure.end}")
        return "/".join((kafka_source_path(failure.stream_arn), *(safe_segment(p) for p in parts)))
    tail = (failure.shard_id, f"{failure.start}-{failure.end}")
    return "/".join((stream_path(failure.arn), *(safe_segment(p) for p in tail)))


_MAX_SERVERS_SEGMENT = 128  # longer server lists are named by their digest (keys stay short)


def kafka_source_path(source: str) -> str:
    """A Kafka cluster's folder: ``kafka/account/region/cluster/uuid`` for MSK (as `stream_path`),
    ``kafka/self-managed/host:port,host:port`` for a self-managed cluster (its servers, as named)."""
    if not source.startswith(KAFKA_SELF_MANAGED):
        parsed = parse_stream_arn(source)
        if parsed is None or parsed.kind is not StreamKind.KAFKA:
            raise ValueError(f"not a Kafka source: {source!r}")
        return stream_path(parsed)
    servers = source[len(KAFKA_SELF_MANAGED) :]
    if len(servers) > _MAX_SERVERS_SEGMENT:
        servers = "servers-" + hashlib.sha256(servers.encode()).hexdigest()[:32]
    return "/".join(safe_segment(p) for p in (StreamKind.KAFKA.value, "self-managed", servers))


def redrive_marker(target: str) -> str:
    """``redriven/<target>.json``, relative to a range's folder: written once the range was re-driven."""
    return f"{REDRIVEN}/{safe_segment(target)}.json"
