"""Re-drive archived ranges to repair functions: now, or long after the stream dropped them.

An archive written by the S3 or file sink holds, per range folder, ``records.jsonl.gz`` and
the ``invocation.json`` manifest, which is written last: a manifest means the range is
complete. Re-driving reads a range's records back, hands them to each target function
(a `LambdaSink`, so the event is exactly what `replay --to lambda:...` sends), then writes
a marker ``redriven/<function>.json`` beside them, create-only. A rerun skips the ranges a
function already has a marker for (unless forced), so after a crash or a failing function
it re-drives only what did not succeed. Delivery is at least once: a range interrupted
half-way is re-driven whole.
"""

from __future__ import annotations

import asyncio
import fnmatch
import gzip
import json
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from replayer import __version__
from replayer.aws import Clients
from replayer.errors import ConfigError
from replayer.model import (
    Failure,
    Gap,
    Origin,
    Outcome,
    OutcomeKind,
    SourceMapping,
    StreamRecord,
    parse_stream_arn,
)
from replayer.readers import ReadResult
from replayer.sinks import LambdaSink, SinkError
from replayer.sinks._layout import (
    INVOCATION,
    LOSS_REPORT,
    RECORDS,
    REDRIVEN,
    range_path,
    redrive_marker,
    stream_path,
)
from replayer.store import FileStore, S3Store, Store, StoreError, store_from_uri
from replayer.wire import dumps

__all__ = [
    "Archive",
    "ArchiveError",
    "ArchivedRange",
    "FileArchive",
    "Redriver",
    "S3Archive",
    "Selection",
    "archive_from_uri",
    "archived_range",
    "archived_records",
    "parse_time",
]

log = structlog.get_logger("replayer")

# Failures we expect while delivering: the range stays un-marked and a rerun tries it again.
_TRANSIENT = (SinkError, ClientError, BotoCoreError, OSError, asyncio.TimeoutError)


ArchiveError = StoreError  # the archive could not be listed, read or written just now
Archive = Store  # an S3 or file archive, addressed by keys relative to its root
S3Archive = S3Store
FileArchive = FileStore


def archive_from_uri(uri: str, clients: Clients) -> Archive:
    """The archive a `--from` URI names: ``s3://BUCKET[/PREFIX]`` or ``file:DIR`` (as `--to` wrote it)."""
    store = store_from_uri(uri, clients)
    if store is None:
        raise ConfigError(f"--from {uri!r}: expected s3://BUCKET[/PREFIX] or file:DIR, as written by --to")
    return store


def parse_time(value: str, option: str) -> datetime:
    """An ISO 8601 date or time; one without a zone is UTC."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError(
            f"{option} {value!r}: expected an ISO 8601 time such as 2024-03-08T12:00:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


@dataclass(frozen=True, slots=True, kw_only=True)
class Selection:
    """Which archived ranges to re-drive; every field left empty selects everything."""

    range_ids: frozenset[str] = frozenset()
    stream_arns: tuple[str, ...] = ()  # exact ARNs or globs
    since: datetime | None = None  # arrival of the range's first record, inclusive
    until: datetime | None = None  # exclusive

    def folders(self) -> list[str]:
        """Where to look: each exact stream's folder, or the whole archive ("")."""
        if not self.stream_arns or any(_is_glob(p) for p in self.stream_arns):
            return [""]
        folders = set()
        for arn in self.stream_arns:
            parsed = parse_stream_arn(arn)
            if parsed is None:
                raise ConfigError(f"--stream-arn {arn!r}: not a DynamoDB or Kinesis stream ARN (or a glob)")
            folders.add(stream_path(parsed))
        return sorted(folders)

    def matches(self, failure: Failure) -> bool:
        if self.range_ids and failure.range_id not in self.range_ids:
            return False
        if self.stream_arns and not any(fnmatch.fnmatchcase(failure.stream_arn, p) for p in self.stream_arns):
            return False
        if self.since is None and self.until is None:
            return True
        arrival = failure.first_arrival or failure.last_arrival or failure.timestamp
        if arrival is None:
            return False
        arrival = arrival if arrival.tzinfo else arrival.replace(tzinfo=UTC)
        return (self.since is None or arrival >= self.since) and (self.until is None or arrival < self.until)


@dataclass(frozen=True, slots=True)
class ArchivedRange:
    """One complete range of the archive, as its manifest describes it."""

    failure: Failure
    folder: str  # relative to the archive root: range_path(failure)
    count: int  # records archived
    gaps: tuple[Gap, ...] = ()
    notes: tuple[str, ...] = ()
    markers: frozenset[str] = frozenset()  # ``redriven/<function>.json`` names present


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} is not an object")
    return value


def _optional_time(value: Any, what: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{what} is not a time")
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _failure(described: Mapping[str, Any], raw: Any) -> Failure:
    """The Failure a manifest's ``range`` (Failure.describe()) stands for."""
    arn = described.get("stream_arn")
    parsed = parse_stream_arn(arn) if isinstance(arn, str) else None
    if parsed is None:
        raise ValueError("range.stream_arn is not a stream ARN")
    start, end, shard = (
        described.get("start_sequence"),
        described.get("end_sequence"),
        described.get("shard_id"),
    )
    if not (isinstance(start, str) and start.isdigit() and isinstance(end, str) and end.isdigit()):
        raise ValueError("range.start_sequence / range.end_sequence are not sequence numbers")
    if int(start) > int(end):
        raise ValueError("range starts after it ends")
    if not isinstance(shard, str) or not shard:
        raise ValueError("range.shard_id is missing")
    batch_size = described.get("batch_size")
    if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool)):
        raise ValueError("range.batch_size is not a number")
    condition, source_arn = described.get("condition"), described.get("source_arn")
    failure = Failure(
        kind=parsed.kind,
        stream_arn=parsed.arn,
        shard_id=shard,
        start_sequence=start,
        end_sequence=end,
        batch_size=batch_size,
        first_arrival=_optional_time(described.get("first_arrival"), "range.first_arrival"),
        last_arrival=_optional_time(described.get("last_arrival"), "range.last_arrival"),
        condition=condition if isinstance(condition, str) else None,
        origin=Origin(described.get("origin") or Origin.LAMBDA_ESM.value),
        source_arn=source_arn if isinstance(source_arn, str) else None,
        timestamp=_optional_time(described.get("timestamp"), "range.timestamp"),
        raw=dict(raw) if isinstance(raw, Mapping) else {},
        mapping=SourceMapping.read_back(
            described.get("mapping")
        ),  # its filter decides what lambda: sinks get
    )
    if described.get("kind") not in (None, failure.kind.value):
        raise ValueError("range.kind does not match its stream ARN")
    if described.get("range_id") not in (None, failure.range_id):
        raise ValueError("range.range_id does not match the range")
    return failure


def archived_range(folder: str, manifest: bytes, markers: Iterable[str] = ()) -> ArchivedRange:
    """Read a manifest found in `folder`; ValueError says what is wrong with it."""
    try:
        document = _mapping(json.loads(manifest), "the manifest")
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg})") from None
    failure = _failure(_mapping(document.get("range"), "range"), document.get("invocation_record"))
    if range_path(failure) != folder:
        raise ValueError(f"it describes the range of folder {range_path(failure)}, not of its own folder")
    archived = _mapping(document.get("archived"), "archived")
    count = archived.get("records")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ValueError("archived.records is not a count")
    if (document.get("records_object") is not None) != (count > 0):
        raise ValueError("records_object and archived.records disagree")
    gaps = []
    for n, gap in enumerate(archived.get("missing") or ()):
        g = _mapping(gap, f"archived.missing[{n}]")
        gaps.append(Gap(str(g.get("first_sequence")), str(g.get("last_sequence")), str(g.get("reason", ""))))
    notes = tuple(str(note) for note in archived.get("notes") or ())
    return ArchivedRange(failure, folder, count, tuple(gaps), notes, frozenset(markers))


def _sequence_number(record: Any) -> str | None:
    if isinstance(record, Mapping):
        for outer, inner in (("dynamodb", "SequenceNumber"), ("kinesis", "sequenceNumber")):
            part = record.get(outer)
            if isinstance(part, Mapping) and isinstance(part.get(inner), str) and part[inner].isdigit():
                return str(part[inner])
    return None


def archived_records(data: bytes, archived: ArchivedRange) -> tuple[StreamRecord, ...]:
    """The records of a ``records.jsonl.gz``, bytes as archived; ValueError when they do not fit the range."""
    try:
        body = gzip.decompress(data)
    except (OSError, EOFError, zlib.error):
        raise ValueError("the records object is not gzip") from None
    failure = archived.failure
    records: list[StreamRecord] = []
    for n, line in enumerate(body.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            sequence_number = _sequence_number(json.loads(line))
        except json.JSONDecodeError:
            sequence_number = None
        if sequence_number is None:
            raise ValueError(f"line {n} of the records object is not a stream record")
        sequence = int(sequence_number)
        if not failure.start <= sequence <= failure.end or (records and sequence <= records[-1].sequence):
            raise ValueError(f"line {n} of the records object is out of the range or out of order")
        records.append(StreamRecord(sequence_number, line))
    if len(records) != archived.count:
        raise ValueError(
            f"the records object holds {len(records)} records where the manifest says {archived.count}"
        )
    return tuple(records)


def _kind(archived: ArchivedRange) -> OutcomeKind:
    if not archived.gaps:
        return OutcomeKind.REPLAYED
    return OutcomeKind.PARTIAL if archived.count else OutcomeKind.EXPIRED


class Redriver:
    """Re-drives archived ranges to target functions and marks each one done.

    Ranges of one shard go in sequence order, one at a time; shards run concurrently.
    """

    def __init__(self, archive: Archive, targets: Sequence[LambdaSink], *, force: bool = False) -> None:
        if not targets:
            raise ValueError("at least one target function is needed")
        self.archive = archive
        self.targets = tuple(targets)
        self.force = force

    async def find(
        self, selection: Selection, *, concurrency: int = 8
    ) -> tuple[list[ArchivedRange], list[Outcome]]:
        """The complete ranges the selection names, by stream, shard and start; a rejection per bad manifest."""
        manifests: list[str] = []
        markers: dict[str, set[str]] = {}
        for under in selection.folders():
            for key in await self.archive.keys(under):
                folder, _, name = key.rpartition("/")
                if name == INVOCATION and folder:
                    manifests.append(folder)
                elif folder.endswith(f"/{REDRIVEN}"):
                    markers.setdefault(folder[: -len(REDRIVEN) - 1], set()).add(f"{REDRIVEN}/{name}")
        semaphore = asyncio.Semaphore(max(1, concurrency))

        async def one(folder: str) -> ArchivedRange | Outcome:
            key = f"{folder}/{INVOCATION}"
            async with semaphore:
                try:
                    body = await self.archive.read(key)
                except ArchiveError as exc:
                    return Outcome(OutcomeKind.RETRY, None, reason=str(exc))
            try:
                if body is None:
                    raise ValueError("it disappeared while listing")
                return archived_range(folder, body, markers.get(folder, ()))
            except ValueError as exc:
                return Outcome(
                    OutcomeKind.REJECTED, None, reason=f"{self.archive.location(key)}: bad manifest: {exc}"
                )

        found = await asyncio.gather(*(one(folder) for folder in sorted(set(manifests))))
        ranges = [r for r in found if isinstance(r, ArchivedRange) and selection.matches(r.failure)]
        ranges.sort(key=lambda r: (r.failure.stream_arn, r.failure.shard_id, r.failure.start, r.failure.end))
        return ranges, [o for o in found if isinstance(o, Outcome)]

    def _due(self, archived: ArchivedRange) -> tuple[list[LambdaSink], list[LambdaSink]]:
        """(targets to re-drive to, targets that already have a marker and are skipped)."""
        if self.force:
            return list(self.targets), []
        todo = [t for t in self.targets if redrive_marker(t.target.spec) not in archived.markers]
        return todo, [t for t in self.targets if t not in todo]

    def _settled(self, archived: ArchivedRange, *, delivered: Sequence[str] = (), reason: str = "",
                 notes: Sequence[str] = ()) -> Outcome:  # fmt: skip
        report = self.archive.location(f"{archived.folder}/{LOSS_REPORT}") if archived.gaps else None
        gap_reasons = "; ".join(g.reason for g in archived.gaps)
        return Outcome(
            _kind(archived),
            archived.failure,
            recovered=archived.count,
            gaps=archived.gaps,
            reason="; ".join(r for r in (reason, gap_reasons) if r),
            notes=(*archived.notes, *notes),
            report_uri=report,
            delivered_to=tuple(delivered),
        )

    def plan(self, ranges: Iterable[ArchivedRange]) -> list[Outcome]:
        """What a dry run reports: each range as it would be re-driven or skipped; nothing read or written."""
        planned = []
        for archived in ranges:
            todo, skipped = self._due(archived)
            if not archived.count:
                reason = "dry run: no records archived, nothing to re-drive"
            elif not todo:
                reason = "dry run: skipped, already re-driven to " + ", ".join(t.uri for t in skipped)
            else:
                reason = f"dry run: would re-drive {archived.count} records to " + ", ".join(
                    t.uri for t in todo
                )
            planned.append(self._settled(archived, reason=reason))
        return planned

    async def redrive(self, archived: ArchivedRange) -> Outcome:
        """Re-drive one range to every target without a marker; never raises for AWS or disk trouble."""
        failure = archived.failure
        with structlog.contextvars.bound_contextvars(
            range_id=failure.range_id,
            stream_arn=failure.stream_arn,
            shard_id=failure.shard_id,
            start=failure.start_sequence,
            end=failure.end_sequence,
        ):
            todo, skipped = self._due(archived)
            if not archived.count:
                return self._settled(archived, reason="no records archived: nothing to re-drive")
            if not todo:
                log.info("redrive_skipped", targets=[t.uri for t in skipped])
                return self._settled(
                    archived,
                    reason="skipped: already re-driven to "
                    + ", ".join(t.uri for t in skipped)
                    + " (--force re-drives)",
                )
            return await self._deliver(archived, todo)

    async def _deliver(self, archived: ArchivedRange, todo: Sequence[LambdaSink]) -> Outcome:
        failure = archived.failure
        key = f"{archived.folder}/{RECORDS}"
        try:
            data = await self.archive.read(key)
            if data is None:
                raise ValueError("the records object is missing")
            records = archived_records(data, archived)
        except ArchiveError as exc:
            log.warning("archive_read_failed", error=str(exc))
            return Outcome(OutcomeKind.RETRY, failure, reason=f"reading the archive failed: {exc}")
        except ValueError as exc:
            log.error("archive_damaged", error=str(exc))
            return Outcome(
                OutcomeKind.REJECTED, failure, reason=f"{self.archive.location(key)}: damaged: {exc}"
            )
        result = ReadResult(records, archived.gaps, archived.notes)
        delivered: list[str] = []
        notes: list[str] = []
        for target in todo:
            try:
                await target.deliver(failure, result)
            except _TRANSIENT as exc:
                log.warning("sink_failed", sink=target.uri, error=str(exc))
                return Outcome(
                    OutcomeKind.RETRY,
                    failure,
                    recovered=len(records),
                    reason=str(exc) if str(exc).startswith(target.uri) else f"{target.uri}: {exc}",
                    delivered_to=tuple(delivered),
                )
            delivered.append(target.uri)
            if target.selection is not None and target.selection.narrows_records:
                # part of the range went: a marker would make a later full re-drive skip the rest
                notes.append(f"{target.uri}: selected records only, no marker written")
                continue
            marker = f"{archived.folder}/{redrive_marker(target.target.spec)}"
            try:
                created = await self.archive.create(marker, self._marker(target, archived, records))
            except ArchiveError as exc:
                log.error("marker_not_written", sink=target.uri, error=str(exc))
                return Outcome(
                    OutcomeKind.RETRY,
                    failure,
                    recovered=len(records),
                    reason=f"re-driven to {target.uri}, but its marker could not be written ({exc}): "
                    "a rerun re-drives this range again",
                    delivered_to=tuple(delivered),
                )
            if not created:
                notes.append(f"{target.uri}: an earlier marker was kept")
        log.info("range_done", outcome=_kind(archived).value, recovered=len(records))
        return self._settled(archived, delivered=delivered, notes=notes)

    def _marker(self, target: LambdaSink, archived: ArchivedRange, records: Sequence[StreamRecord]) -> bytes:
        return dumps(
            {
                "target": target.uri,
                "range": archived.failure.describe(),
                "records": len(records),
                "first_sequence": records[0].sequence_number if records else None,
                "last_sequence": records[-1].sequence_number if records else None,
                "forced": self.force,
                "redriven_at": datetime.now(UTC).isoformat(),
                "replayer_version": __version__,
            }
        )

    async def redrive_many(
        self,
        ranges: Sequence[ArchivedRange],
        *,
        concurrency: int = 4,
        on_done: Callable[[Outcome], None] | None = None,
    ) -> list[Outcome]:
        """Re-drive every range; one outcome each, in the order given."""
        shards: dict[tuple[str, str], list[ArchivedRange]] = {}
        for archived in ranges:
            shards.setdefault((archived.failure.stream_arn, archived.failure.shard_id), []).append(archived)
        semaphore = asyncio.Semaphore(max(1, concurrency))
        outcomes: dict[str, Outcome] = {}

        async def shard(members: list[ArchivedRange]) -> None:
            async with semaphore:
                for archived in sorted(members, key=lambda r: (r.failure.start, r.failure.end)):
                    outcomes[archived.folder] = outcome = await self.redrive(archived)
                    if on_done is not None:
                        on_done(outcome)

        async with asyncio.TaskGroup() as group:
            for members in shards.values():
                group.create_task(shard(members))
        return [outcomes[r.folder] for r in ranges]
