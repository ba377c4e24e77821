"""Where a range lives in an archive: folder and object names, derived only from the range.

Nothing a message says beyond the range itself (stream ARN, shard, start, end) reaches a
key, so a message can neither choose nor steer where its records are written.

Each segment is portable to every file system `file:` archives are synced to: anything
but ``A-Z a-z 0-9 _ . -`` is %-escaped (``:`` too: Windows refuses it; a DynamoDB stream
label's ``03:04:05`` becomes ``03%3A04%3A05``), as are a leading or trailing ``.`` and
Windows' device names (``CON``, ``NUL``, ``COM1``...). A segment longer than a file name
may be (255 bytes) becomes a stable hashed one: its first 200 characters, ``~``, then 32
hex digits of the SHA-256 of the whole name (``~`` is escaped anywhere else, so a hashed
segment never equals an escaped one). Archives written before 0.9 kept ``:`` and never
hashed (`legacy_range_path`): they are still read.
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
    "conflict_records",
    "legacy_range_path",
    "legacy_stream_path",
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

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_LEGACY_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")
_DEVICE = re.compile(r"(CON|PRN|AUX|NUL|COM[0-9]|LPT[0-9])(\..*)?", re.IGNORECASE)
_MAX_SEGMENT = 255  # bytes in a file name (NAME_MAX; NTFS: 255 characters)
_HASHED_KEEPS = 200  # characters of the escaped name a hashed segment keeps, for people


def _escape(value: str, unsafe: re.Pattern[str]) -> str:
    escaped = unsafe.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), value)
    if escaped.startswith("."):
        escaped = "%2E" + escaped[1:]
    return escaped or "%00"


def safe_segment(value: str) -> str:
    """One path segment that cannot climb, split or hide, and that every file system accepts.

    Stream ARNs are validated when parsed; this is the second wall, not the first.
    """
    escaped = _escape(value, _UNSAFE)
    if escaped.endswith("."):
        escaped = escaped[:-1] + "%2E"
    if _DEVICE.fullmatch(escaped):
        escaped = f"%{ord(escaped[0]):02X}{escaped[1:]}"
    if len(escaped) > _MAX_SEGMENT:
        escaped = f"{escaped[:_HASHED_KEEPS]}~{hashlib.sha256(value.encode()).hexdigest()[:32]}"
    return escaped


def stream_path(arn: StreamArn) -> str:
    """``kind/account/region/stream[/label]``: the folder holding one stream's ranges."""
    return "/".join(safe_segment(p) for p in _stream_parts(arn))


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


def legacy_stream_path(arn: StreamArn) -> str:
    """`stream_path` as 0.1.0 wrote it (``:`` kept, long names never hashed)."""
    return "/".join(_escape(p, _LEGACY_UNSAFE) for p in _stream_parts(arn))


def legacy_range_path(failure: Failure) -> str:
    """`range_path` as 0.1.0 wrote it: read, never written."""
    if failure.kind is StreamKind.KAFKA:
        return range_path(failure)  # 0.1.0 read no Kafka ranges: there is no older folder
    tail = (failure.shard_id, f"{failure.start}-{failure.end}")
    return "/".join((legacy_stream_path(failure.arn), *(_escape(p, _LEGACY_UNSAFE) for p in tail)))


def _stream_parts(arn: StreamArn) -> list[str]:
    parts = [arn.kind.value, arn.account, arn.region, arn.name]
    if arn.label is not None:
        parts.append(arn.label)
    return parts


def redrive_marker(target: str, *, legacy: bool = False) -> str:
    """``redriven/<target>.json``, relative to a range's folder: written once the range was re-driven
    (`legacy`: the name 0.1.0 gave it, which still counts)."""
    return f"{REDRIVEN}/{_escape(target, _LEGACY_UNSAFE) if legacy else safe_segment(target)}.json"


def conflict_records(sha256: str) -> str:
    """``records.<sha256>.jsonl.gz``: what an attempt read, kept beside a records object it contradicts."""
    return f"records.{sha256}.jsonl.gz"
