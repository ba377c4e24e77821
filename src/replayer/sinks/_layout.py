"""Archive layout shared by the S3 and file sinks: keys derived only from the range."""

from __future__ import annotations

import re
import zlib
from datetime import UTC, datetime
from typing import Any

from replayer import __version__
from replayer.model import Failure, OutcomeKind, StreamArn
from replayer.readers import ReadResult
from replayer.wire import dumps

__all__ = [
    "INVOCATION",
    "LOSS_REPORT",
    "RECORDS",
    "REDRIVEN",
    "invocation_document",
    "loss_report_document",
    "range_path",
    "records_object",
    "redrive_marker",
    "safe_segment",
    "stream_path",
]

RECORDS = "records.jsonl.gz"
INVOCATION = "invocation.json"
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


def range_path(failure: Failure) -> str:
    """``kind/account/region/stream[/label]/shard/start-end``: the range's archive folder."""
    arn = failure.arn
    parts = [failure.kind.value, arn.account, arn.region, arn.name]
    if arn.label is not None:
        parts.append(arn.label)
    parts += [failure.shard_id, f"{failure.start}-{failure.end}"]
    return "/".join(safe_segment(p) for p in parts)


def stream_path(arn: StreamArn) -> str:
    """``kind/account/region/stream[/label]``: the folder holding one stream's ranges."""
    parts = [arn.kind.value, arn.account, arn.region, arn.name]
    if arn.label is not None:
        parts.append(arn.label)
    return "/".join(safe_segment(p) for p in parts)


def redrive_marker(target: str) -> str:
    """``redriven/<target>.json``, relative to a range's folder: written once the range was re-driven."""
    return f"{REDRIVEN}/{safe_segment(target)}.json"


def records_object(result: ReadResult) -> bytes:
    """gzip JSON Lines, one record per line; deterministic bytes for the same records.

    Compressed a thousand lines at a time, so a 10,000-record range never exists twice
    in memory as one uncompressed body.
    """
    packer = zlib.compressobj(3, zlib.DEFLATED, 31)  # level 3: ~2x faster than 6, ~20% larger; 31: gzip
    records = result.records
    parts = [
        packer.compress(b"".join([b"%b\n" % r.json for r in records[i : i + _LINES_PER_CHUNK]]))
        for i in range(0, len(records), _LINES_PER_CHUNK)
    ]
    parts.append(packer.flush())
    return b"".join(parts)


_LINES_PER_CHUNK = 1000


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _span(result: ReadResult) -> dict[str, Any]:
    return {
        "records": len(result.records),
        "first_sequence": result.records[0].sequence_number if result.records else None,
        "last_sequence": result.records[-1].sequence_number if result.records else None,
        "missing": [g.describe() for g in result.gaps],
        "notes": list(result.notes),
    }


def invocation_document(failure: Failure, result: ReadResult, records_key: str | None) -> bytes:
    """The manifest kept beside the records: the invocation record and what was archived."""
    return dumps(
        {
            "range": failure.describe(),
            "archived": _span(result),
            "records_object": records_key,
            "invocation_record": dict(failure.raw),
            "written_at": _now(),
            "replayer_version": __version__,
        }
    )


def loss_report_document(failure: Failure, result: ReadResult) -> bytes:
    """Why records of this range are gone, exactly which spans, and what was kept."""
    kind = OutcomeKind.PARTIAL if result.records else OutcomeKind.EXPIRED
    return dumps(
        {
            "outcome": kind.value,
            "range": failure.describe(),
            "recovered": _span(result),
            "missing": [g.describe() for g in result.gaps],
            "invocation_record": dict(failure.raw),
            "written_at": _now(),
            "replayer_version": __version__,
        }
    )
