"""The documents of an archived range, written AND read back here (one place for their shape).

A range folder holds ``records.jsonl.gz`` (the records, gzip JSON Lines), an optional
``loss-report.json`` and the manifest ``invocation.json``, written last. The manifest
names what the folder holds and how to check it: the records object's SHA-256, record
count, first and last sequence number, and the loss report's SHA-256. Manifests written
before those fields existed (format 1) are still read; their objects are checked by
count and range only.

A records object read back is decompressed as a stream and bounded by a range's ceiling:
at most `MAX_RECORDS` records, `MAX_LINE_BYTES` per record and `MAX_RANGE_BYTES` in all
(`MAX_OBJECT_BYTES` compressed); past any of them it is refused with the reason, never held
whole in memory (a gzip bomb costs a few MB).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from replayer import __version__
from replayer.archive.layout import legacy_range_path, range_path
from replayer.model import Failure, Gap, OutcomeKind, RecordPage, StreamRecord, records_lost
from replayer.wire import dumps

__all__ = [
    "FORMAT",
    "MAX_LINE_BYTES",
    "MAX_OBJECT_BYTES",
    "MAX_RANGE_BYTES",
    "MAX_RECORDS",
    "ArchivedRange",
    "LossReport",
    "PackedRecords",
    "RecordsPacker",
    "archived_range",
    "fingerprint",
    "loss_report_document",
    "manifest_document",
    "manifest_fields",
    "marker_document",
    "pack_records",
    "read_loss_report",
    "read_records_object",
    "sha256",
    "unpack_records",
]

FORMAT = 2  # 2: the manifest carries digests; 1 (no "format" key): counts only

_LINES_PER_CHUNK = 1000

# A range's ceiling, for what is read back: AWS's largest batch (10,000 records, both streams), a
# record's line (a 10 MiB Kinesis record is 13.4 MiB of base64), and the whole range (a batch
# Lambda could send is at most 6 MB; this leaves room for every record a range's span can hold).
MAX_RECORDS = 10_000
MAX_LINE_BYTES = 16 * 1024 * 1024
MAX_RANGE_BYTES = 256 * 1024 * 1024
MAX_OBJECT_BYTES = MAX_RANGE_BYTES  # compressed: gzip never makes records smaller than this much
_INFLATE_STEP = 1024 * 1024


def sha256(data: bytes) -> str:
    """The hex SHA-256 of an object's bytes, as the manifest records it."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class PackedRecords:
    """A records object ready to store, and what the manifest says of it."""

    body: bytes
    sha256: str
    count: int
    first_sequence: str | None
    last_sequence: str | None
    fingerprints: Mapping[str, int]  # sequence number -> `fingerprint` of the record (this process only)

    def holds(self, other: PackedRecords) -> list[str]:
        """Sequence numbers of `other`'s records that this object lacks or holds different (empty: it covers them)."""
        mine = self.fingerprints
        return [seq for seq, digest in other.fingerprints.items() if mine.get(seq) != digest]


class RecordsPacker:
    """Builds ``records.jsonl.gz`` from records given in parts, in sequence order.

    Deterministic bytes for the same records. Compressed a thousand lines at a time, so a
    range never exists twice in memory as one uncompressed body; a reader streaming pages
    can `add` each page as it comes. The records' fingerprints are computed only when asked
    for (a comparison with another object), from the body.
    """

    def __init__(self) -> None:
        # Level 1: the cheapest (~1.4 % larger than 3 on stream records); 31: gzip.
        self._packer = zlib.compressobj(1, zlib.DEFLATED, 31)
        self._parts: list[bytes] = []
        self._sequence_numbers: list[str] = []

    def add(self, records: Sequence[StreamRecord]) -> None:
        if isinstance(records, RecordPage):  # a reader's page: its JSON as it is, no record objects
            if records:
                self._parts.append(self._packer.compress(records.lines()))
            self._sequence_numbers += records.sequence_numbers
            return
        for i in range(0, len(records), _LINES_PER_CHUNK):
            chunk = records[i : i + _LINES_PER_CHUNK]
            self._parts.append(self._packer.compress(b"".join([b"%b\n" % r.json for r in chunk])))
            self._sequence_numbers += [r.sequence_number for r in chunk]

    def finish(self) -> PackedRecords:
        self._parts.append(self._packer.flush())
        body = b"".join(self._parts)
        self._parts = []
        seqs = self._sequence_numbers
        first, last = (seqs[0], seqs[-1]) if seqs else (None, None)
        return PackedRecords(body, sha256(body), len(seqs), first, last, _Fingerprints(body, seqs))


class _Fingerprints(Mapping[str, int]):
    """Sequence number -> `fingerprint` of each line of a records object, computed on first use:
    most writes never compare two objects, and hashing every record is then wasted."""

    __slots__ = ("_body", "_sequence_numbers", "_table")

    def __init__(self, body: bytes, sequence_numbers: Sequence[str]) -> None:
        self._body = body
        self._sequence_numbers = sequence_numbers
        self._table: dict[str, int] | None = None

    def _of(self) -> dict[str, int]:
        if self._table is None:
            lines = (
                gzip.decompress(self._body).split(b"\n")[:-1] if self._sequence_numbers else []
            )  # one per record
            self._table = {
                seq: _fingerprint(line) for seq, line in zip(self._sequence_numbers, lines, strict=True)
            }
            self._body, self._sequence_numbers = b"", ()
        return self._table

    def __getitem__(self, sequence_number: str) -> int:
        return self._of()[sequence_number]

    def __iter__(self) -> Iterator[str]:
        return iter(self._of())

    def __len__(self) -> int:
        return len(self._of())


def fingerprint(record: StreamRecord) -> int:
    """What the stream held for one record, for comparing two reads of it within this process.

    Python's keyed (SipHash) hash of the bytes: 25x cheaper than a cryptographic digest on the
    hot path, not predictable from outside the process, and never stored (the manifest's
    SHA-256 is what lasts). A leading ``invokeIdentityArn`` (put first by the sinks, see
    `replayer.sinks`) is left out: it says who would be invoked, not what the stream held,
    and its lookup may fail on one attempt and not on another.
    """
    return _fingerprint(record.json)


def _fingerprint(data: bytes) -> int:
    if data.startswith(_IDENTITY_FIRST):
        end = data.find(b'",', len(_IDENTITY_FIRST))
        if end > 0:
            data = b"{" + data[end + 2 :]
    return hash(data)


_IDENTITY_FIRST = b'{"invokeIdentityArn":"'


def pack_records(parts: Iterable[Sequence[StreamRecord]]) -> PackedRecords:
    """The records object of records given as consecutive parts (one part is fine)."""
    packer = RecordsPacker()
    for part in parts:
        packer.add(part)
    return packer.finish()


def _sequence_number(record: Any) -> str | None:
    if isinstance(record, Mapping):
        for outer, inner in (("dynamodb", "SequenceNumber"), ("kinesis", "sequenceNumber")):
            part = record.get(outer)
            if isinstance(part, Mapping) and isinstance(part.get(inner), str) and part[inner].isdigit():
                return str(part[inner])
        offset = record.get("offset")  # a Kafka record: its offset in its partition
        if isinstance(offset, int) and not isinstance(offset, bool) and offset >= 0 and "topic" in record:
            return str(offset)
    return None


def _lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of a gzip JSON Lines object, inflated a step at a time and bounded by
    `MAX_LINE_BYTES` and `MAX_RANGE_BYTES` (ValueError past either, or when it is not gzip)."""
    inflater = zlib.decompressobj(31)
    pending, total, n = b"", 0, 0
    rest = data
    try:
        while True:
            piece = inflater.decompress(rest, _INFLATE_STEP)
            rest = inflater.unconsumed_tail
            if inflater.eof and inflater.unused_data:  # another gzip member follows
                rest, inflater = inflater.unused_data, zlib.decompressobj(31)
            total += len(piece)
            if total > MAX_RANGE_BYTES:
                raise ValueError(f"it inflates to more than {MAX_RANGE_BYTES} bytes, a range's ceiling")
            pending += piece
            *complete, pending = pending.split(b"\n")
            for line in complete:
                n += 1
                yield n, line
            if len(pending) > MAX_LINE_BYTES:
                raise ValueError(f"line {n + 1} is longer than {MAX_LINE_BYTES} bytes, a record's ceiling")
            if not piece and not rest:
                break
    except zlib.error:
        raise ValueError("the records object is not gzip") from None
    if not inflater.eof:
        raise ValueError("the records object is not gzip (or it is cut short)")
    if pending:
        yield n + 1, pending


def _records(data: bytes, failure: Failure) -> Iterator[tuple[str, bytes]]:
    """(sequence number, line) of each record of a records object; ValueError unless they fit the range,
    in order, within its ceiling."""
    last = -1
    for n, line in _lines(data):
        if not line.strip():  # replayer writes none (and a bomb of empty lines stops here)
            raise ValueError(f"line {n} of the records object is empty")
        try:
            sequence_number = _sequence_number(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            sequence_number = None
        if sequence_number is None:
            raise ValueError(f"line {n} of the records object is not a stream record")
        sequence = int(sequence_number)
        if not failure.start <= sequence <= failure.end or sequence <= last:
            raise ValueError(f"line {n} of the records object is out of the range or out of order")
        if n > MAX_RECORDS:  # every line is a record
            raise ValueError(f"it holds more than {MAX_RECORDS} records, a range's ceiling")
        last = sequence
        yield sequence_number, line


def unpack_records(data: bytes, failure: Failure) -> tuple[StreamRecord, ...]:
    """The records of a records object, bytes as archived; ValueError unless they fit the range, in order."""
    return tuple(StreamRecord(seq, line) for seq, line in _records(data, failure))


def read_records_object(data: bytes, failure: Failure) -> PackedRecords:
    """A stored records object read back and checked against the range (ValueError when it does not fit).

    Only each record's fingerprint is kept, not the record."""
    fingerprints: dict[str, int] = {}
    first = last = None
    for seq, line in _records(data, failure):
        fingerprints[seq] = _fingerprint(line)
        first, last = first or seq, seq
    return PackedRecords(data, sha256(data), len(fingerprints), first, last, fingerprints)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _span(packed: PackedRecords | None, gaps: Sequence[Gap], notes: Sequence[str]) -> dict[str, Any]:
    return {
        "records": packed.count if packed else 0,
        "first_sequence": packed.first_sequence if packed else None,
        "last_sequence": packed.last_sequence if packed else None,
        "missing": [g.describe() for g in gaps],
        "notes": list(notes),
    }


def manifest_document(
    failure: Failure,
    packed: PackedRecords | None,
    gaps: Sequence[Gap],
    notes: Sequence[str],
    **where: str | None,
) -> bytes:
    """The manifest kept beside the records: the invocation record, what was archived, its digests
    (`where`: `manifest_fields`' locations and the loss report's digest)."""
    return dumps(manifest_fields(failure, packed, gaps, notes, **where))


def manifest_fields(
    failure: Failure,
    packed: PackedRecords | None,
    gaps: Sequence[Gap],
    notes: Sequence[str],
    *,
    records_location: str | None,
    loss_report_location: str | None = None,
    loss_report_sha256: str | None = None,
) -> dict[str, Any]:
    """`manifest_document`'s fields, before they are serialized (and, with a manifest key, signed)."""
    return dict(
        {
            "format": FORMAT,
            "marked": "at-risk"
            if failure.at_risk
            else "failed",  # at-risk: archived before any failure record
            "range": failure.describe(),
            "archived": _span(packed, gaps, notes),
            "records_object": records_location if packed and packed.count else None,
            "records_sha256": packed.sha256 if packed and packed.count else None,
            "loss_report": loss_report_location,
            "loss_report_sha256": loss_report_sha256,
            "invocation_record": dict(failure.raw),
            "written_at": _now(),
            "replayer_version": __version__,
        }
    )


def loss_report_document(
    failure: Failure, packed: PackedRecords | None, gaps: Sequence[Gap], notes: Sequence[str]
) -> bytes:
    """Why records of this range are gone, exactly which spans, and what was kept."""
    kind = OutcomeKind.PARTIAL if packed and packed.count else OutcomeKind.EXPIRED
    lost, at_least = records_lost(failure, packed.count if packed else 0, gaps)
    return dumps(
        {
            "outcome": kind.value,
            "range": failure.describe(),
            "recovered": _span(packed, gaps, notes),
            "missing": [g.describe() for g in gaps],
            "records_lost": {"count": lost, "at_least": at_least},
            "invocation_record": dict(failure.raw),
            "written_at": _now(),
            "replayer_version": __version__,
        }
    )


def marker_document(target: str, failure: Failure, records: Sequence[StreamRecord], *, forced: bool) -> bytes:
    """``redriven/<target>.json``: which records a re-drive handed to `target`."""
    return dumps(
        {
            "target": target,
            "range": failure.describe(),
            "records": len(records),
            "first_sequence": records[0].sequence_number if records else None,
            "last_sequence": records[-1].sequence_number if records else None,
            "forced": forced,
            "redriven_at": _now(),
            "replayer_version": __version__,
        }
    )


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} is not an object")
    return value


def _document(body: bytes, what: str) -> Mapping[str, Any]:
    try:
        return _mapping(json.loads(body), what)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON ({getattr(exc, 'msg', exc)})") from None


def _gaps(value: Any, what: str) -> tuple[Gap, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError(f"{what} is not a list")
    gaps = []
    for n, gap in enumerate(value):
        g = _mapping(gap, f"{what}[{n}]")
        first, last = g.get("first_sequence"), g.get("last_sequence")
        if not (isinstance(first, str) and first.isdigit() and isinstance(last, str) and last.isdigit()):
            raise ValueError(f"{what}[{n}] does not name sequence numbers")
        gaps.append(Gap(first, last, str(g.get("reason", ""))))
    return tuple(gaps)


def _digest(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not (isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)):
        raise ValueError(f"{what} is not a SHA-256")
    return value


def _count(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{what} is not a count")
    return value


@dataclass(frozen=True, slots=True)
class ArchivedRange:
    """One complete range of an archive, as its manifest describes it."""

    failure: Failure
    folder: str  # relative to the archive root: range_path(failure)
    count: int  # records archived
    gaps: tuple[Gap, ...] = ()
    notes: tuple[str, ...] = ()
    markers: frozenset[str] = frozenset()  # ``redriven/<function>.json`` names present
    first_sequence: str | None = None
    last_sequence: str | None = None
    records_sha256: str | None = None  # None: no records, or a format 1 manifest
    loss_report_sha256: str | None = None
    format: int = FORMAT


def archived_range(folder: str, manifest: bytes, markers: Iterable[str] = ()) -> ArchivedRange:
    """Read a manifest found in `folder`; ValueError says what is wrong with it."""
    document = _document(manifest, "the manifest")
    failure = Failure.from_description(
        _mapping(document.get("range"), "range"), document.get("invocation_record")
    )
    if folder not in (range_path(failure), legacy_range_path(failure)):  # 0.1.0's folder names still read
        raise ValueError(f"it describes the range of folder {range_path(failure)}, not of its own folder")
    archived = _mapping(document.get("archived"), "archived")
    count = _count(archived.get("records"), "archived.records")
    if (document.get("records_object") is not None) != (count > 0):
        raise ValueError("records_object and archived.records disagree")
    version = document.get("format", 1)
    records_sha256 = _digest(document.get("records_sha256"), "records_sha256")
    gaps = _gaps(archived.get("missing"), "archived.missing")
    loss_report_sha256 = _digest(document.get("loss_report_sha256"), "loss_report_sha256")
    if version != 1:
        if version != FORMAT:
            raise ValueError(f"format {version!r} is not one this replayer reads (it reads 1 and {FORMAT})")
        if (records_sha256 is not None) != (count > 0):
            raise ValueError("records_sha256 and archived.records disagree")
        if (loss_report_sha256 is not None) != bool(gaps):
            raise ValueError("loss_report_sha256 and archived.missing disagree")
    first, last = archived.get("first_sequence"), archived.get("last_sequence")
    return ArchivedRange(
        failure,
        folder,
        count,
        gaps,
        tuple(str(note) for note in archived.get("notes") or ()),
        frozenset(markers),
        first if isinstance(first, str) else None,
        last if isinstance(last, str) else None,
        records_sha256,
        loss_report_sha256,
        version if isinstance(version, int) else 1,
    )


@dataclass(frozen=True, slots=True)
class LossReport:
    """What a loss report says: the spans lost and how many records were kept."""

    gaps: tuple[Gap, ...]
    recovered: int


def read_loss_report(body: bytes, failure: Failure) -> LossReport:
    """Read a loss report back; ValueError unless it is one, of this range."""
    document = _document(body, "the loss report")
    described = _mapping(document.get("range"), "range")
    if described.get("range_id") != failure.range_id:
        raise ValueError("the loss report is of another range")
    recovered = _count(_mapping(document.get("recovered"), "recovered").get("records"), "recovered.records")
    return LossReport(_gaps(document.get("missing"), "missing"), recovered)
