"""Where a range lives in an archive: folder and object names, derived only from the range.

Nothing a message says beyond the range itself (stream ARN, shard, start, end) reaches a
key, so a message can neither choose nor steer where its records are written.
"""

from __future__ import annotations

import re

from replayer.model import Failure, StreamArn

__all__ = [
    "LOSS_REPORT",
    "MANIFEST",
    "RECORDS",
    "REDRIVEN",
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
    """``kind/account/region/stream[/label]/shard/start-end``: the range's archive folder."""
    tail = (failure.shard_id, f"{failure.start}-{failure.end}")
    return "/".join((stream_path(failure.arn), *(safe_segment(p) for p in tail)))


def redrive_marker(target: str) -> str:
    """``redriven/<target>.json``, relative to a range's folder: written once the range was re-driven."""
    return f"{REDRIVEN}/{safe_segment(target)}.json"
