"""A source of ranges read back from an archive: `redrive` re-drives them to repair functions.

An archive written by the S3 or file sink holds, per range folder, ``records.jsonl.gz`` and
the ``invocation.json`` manifest, which is written last: a manifest means the range is
complete. Re-driving reads a range's records back (checked against the manifest by
`replayer.archive.read`), hands them through the core's `deliver` to each target function
(a `LambdaSink`, so the event is exactly what `replay --to lambda:...` sends), each followed
by a marker ``redriven/<function>.json`` beside the range, create-only. A rerun skips the ranges a
function already has a marker for (unless forced), so after a crash or a failing function
it re-drives only what did not succeed. Delivery is at least once: a range interrupted
half-way is re-driven whole.

Like every command that reads records, `redrive` re-drives only ranges of streams in
`--allow-stream` (none by default), gives each range the same `--range-budget` as a replay,
and, with a manifest key, only folders whose manifest carries its valid MAC.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from replayer import logs
from replayer.allow import AllowList
from replayer.archive.layout import LOSS_REPORT, legacy_stream_path, redrive_marker, stream_path
from replayer.archive.mac import ManifestKey
from replayer.archive.manifest import ArchivedRange, marker_document
from replayer.archive.read import Damaged, find_ranges, read_records
from replayer.archive.store import Store, StoreError, store_from_uri
from replayer.aws import Clients
from replayer.core import Scheduler, Ticket, deliver
from replayer.errors import ConfigError
from replayer.logs import range_context
from replayer.model import Failure, Outcome, OutcomeKind, parse_stream_arn
from replayer.readers import ReadResult
from replayer.sinks import Delivery, LambdaSink, SinkError

__all__ = [
    "Redriver",
    "Selection",
    "archive_from_uri",
    "in_shard_order",
    "parse_time",
]

log = logs.get_logger("replayer")


def archive_from_uri(uri: str, clients: Clients) -> Store:
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
            folders |= {stream_path(parsed), legacy_stream_path(parsed)}  # 0.1.0's folder names too
        return sorted(folders)

    def matches(self, failure: Failure) -> bool:
        if self.range_ids and not any(failure.range_id.startswith(p) for p in self.range_ids):  # or a prefix
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


def _kind(archived: ArchivedRange) -> OutcomeKind:
    if not archived.gaps:
        return OutcomeKind.REPLAYED
    return OutcomeKind.PARTIAL if archived.count else OutcomeKind.EXPIRED


class Redriver:
    """Re-drives archived ranges to target functions and marks each one done.

    Ranges of one shard go in sequence order, one at a time; shards run concurrently. Only
    streams `allow` allows are re-driven (deny by default); each range's attempt (reading the
    archive and delivering) ends within `range_budget` seconds (None: no bound); with
    `manifest_key`, only folders whose manifest carries its valid MAC are found.
    """

    def __init__(
        self,
        archive: Store,
        targets: Sequence[LambdaSink],
        *,
        force: bool = False,
        allow: AllowList | None = None,
        range_budget: float | None = None,
        manifest_key: ManifestKey | None = None,
    ) -> None:
        if not targets:
            raise ValueError("at least one target function is needed")
        self.archive = archive
        self.targets = tuple(targets)
        self.force = force
        self.allow = allow or AllowList()
        self.range_budget = range_budget
        self.manifest_key = manifest_key

    def refusal(self, failure: Failure) -> Outcome | None:
        """The rejection of a range whose stream is not allowed; None when it may be re-driven."""
        if self.allow.allows(failure.stream_arn):
            return None
        why = "no --allow-stream is configured" if self.allow.empty else "it is not in --allow-stream"
        return Outcome(
            OutcomeKind.REJECTED, failure, reason=f"stream {failure.stream_arn} is not allowed: {why}"
        )

    async def find(
        self, selection: Selection, *, concurrency: int = 8
    ) -> tuple[list[ArchivedRange], list[Outcome]]:
        """The complete ranges the selection names, by stream, shard and start; a rejection per bad manifest."""
        found, unreadable = await find_ranges(
            self.archive, selection.folders(), concurrency=concurrency, manifest_key=self.manifest_key
        )
        ranges = [r for r in found if selection.matches(r.failure)]
        ranges.sort(key=lambda r: (r.failure.stream_arn, r.failure.shard_id, r.failure.start, r.failure.end))
        return ranges, [
            Outcome(
                OutcomeKind.RETRY if u.transient else OutcomeKind.REJECTED,
                u.failure,  # known when the manifest was read that far (e.g. one without a valid MAC)
                reason=f"{u.location}: {u.reason}",
            )
            for u in unreadable
            if u.failure is None or selection.matches(u.failure)
        ]

    def _due(self, archived: ArchivedRange) -> tuple[list[LambdaSink], list[LambdaSink]]:
        """(targets to re-drive to, targets that already have a marker and are skipped)."""
        if self.force:
            return list(self.targets), []
        done = archived.markers
        todo = [
            t
            for t in self.targets
            if not {redrive_marker(t.target.spec), redrive_marker(t.target.spec, legacy=True)} & done
        ]
        return todo, [t for t in self.targets if t not in todo]

    def _settled(self, archived: ArchivedRange, *, delivered: Sequence[str] = (), reason: str = "",
                 notes: Sequence[str] = (), kind: OutcomeKind | None = None) -> Outcome:  # fmt: skip
        report = self.archive.location(f"{archived.folder}/{LOSS_REPORT}") if archived.gaps else None
        gap_reasons = "; ".join(g.reason for g in archived.gaps)
        return Outcome(
            kind or _kind(archived),
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
            if (refusal := self.refusal(archived.failure)) is not None:
                planned.append(refusal)
                continue
            todo, skipped = self._due(archived)
            if not archived.count:
                reason = "would skip it: no records archived, nothing to re-drive"
            elif not todo:
                reason = "would skip it: already re-driven to " + ", ".join(t.uri for t in skipped)
            else:
                reason = f"would re-drive {archived.count} records to " + ", ".join(t.uri for t in todo)
            planned.append(self._settled(archived, reason=reason, kind=OutcomeKind.PLANNED))
        return planned

    async def redrive(self, archived: ArchivedRange) -> Outcome:
        """Re-drive one range to every target without a marker; never raises for AWS or disk trouble."""
        failure = archived.failure
        with range_context(failure):
            if (refusal := self.refusal(failure)) is not None:
                log.warning("range_rejected", reason=refusal.reason)
                return refusal
            todo, skipped = self._due(archived)
            if not archived.count:
                return self._settled(archived, reason="no records archived: nothing to re-drive")
            if not todo:
                log.info("redrive_skipped", targets=[t.uri for t in skipped])
                return self._settled(
                    archived,
                    reason="already re-driven to "
                    + ", ".join(t.uri for t in skipped)
                    + " (--force re-drives)",
                    kind=OutcomeKind.SKIPPED,
                )
            try:
                async with asyncio.timeout(self.range_budget):
                    return await self._deliver(archived, todo)
            except TimeoutError:
                reason = (
                    f"the attempt took longer than its {self.range_budget:g} s budget; it is retried next run"
                )
                log.warning("range_over_budget", reason=reason, budget_seconds=self.range_budget)
                return Outcome(OutcomeKind.RETRY, failure, reason=reason)

    async def _deliver(self, archived: ArchivedRange, todo: Sequence[LambdaSink]) -> Outcome:
        failure = archived.failure
        try:
            records = await read_records(self.archive, archived)
        except StoreError as exc:
            log.warning("archive_read_failed", error=str(exc))
            return Outcome(OutcomeKind.RETRY, failure, reason=f"reading the archive failed: {exc}")
        except Damaged as exc:
            log.error("archive_damaged", error=str(exc))
            return Outcome(OutcomeKind.REJECTED, failure, reason=str(exc))
        report = self.archive.location(f"{archived.folder}/{LOSS_REPORT}") if archived.gaps else None
        sinks = [_Marked(target, self.archive, archived.folder, report, force=self.force) for target in todo]
        return await deliver(sinks, failure, ReadResult(records, archived.gaps, archived.notes))

    async def redrive_many(
        self,
        ranges: Sequence[ArchivedRange],
        *,
        concurrency: int = 4,
        on_done: Callable[[Outcome], None] | None = None,
    ) -> list[Outcome]:
        """Re-drive every range through the one scheduler; one outcome each, in the order given.

        Each shard is a lane: its ranges go one at a time, in sequence order (they are
        submitted sorted); up to `concurrency` shards at once.
        """
        scheduler = self.scheduler(concurrency=concurrency, on_done=on_done)
        tickets = {t.key: t for t in await scheduler.run(in_shard_order(ranges))}
        return [_outcome(tickets[r.folder], r) for r in ranges]

    def scheduler(
        self, *, concurrency: int = 4, on_done: Callable[[Outcome], None] | None = None
    ) -> Scheduler[ArchivedRange]:
        """The one scheduler working ranges through `redrive`: one lane per shard (submit them
        `in_shard_order`), up to `concurrency` shards at once."""
        return Scheduler(
            self.redrive,
            key=_folder,
            failure_of=_failure,
            concurrency=concurrency,
            lane=_shard,
            on_done=on_done,
        )


def in_shard_order(ranges: Iterable[ArchivedRange]) -> list[ArchivedRange]:
    """Ranges sorted by stream, shard and sequence: the order a shard's ranges must be re-driven in."""
    return sorted(
        ranges, key=lambda r: (r.failure.stream_arn, r.failure.shard_id, r.failure.start, r.failure.end)
    )


class _Marked:
    """A target function, then its marker ``redriven/<function>.json`` beside the range, create-only."""

    durable = False

    def __init__(
        self, target: LambdaSink, archive: Store, folder: str, report: str | None, *, force: bool
    ) -> None:
        self.target = target
        self.archive = archive
        self.folder = folder
        self.report = report  # the archive's loss report, for the outcome
        self.force = force

    @property
    def uri(self) -> str:
        return self.target.uri

    async def deliver(self, failure: Failure, result: ReadResult) -> Delivery:
        sent = await self.target.deliver(failure, result)  # its notes: stale, superseded records
        selection = self.target.selection
        if selection is not None and selection.narrows_records:
            # part of the range went: a marker would make a later full re-drive skip the rest
            return Delivery(
                self.uri,
                self.report,
                notes=(*sent.notes, f"{self.uri}: selected records only, no marker written"),
            )
        key = f"{self.folder}/{redrive_marker(self.target.target.spec)}"
        try:
            created = await self.archive.create(
                key, marker_document(self.uri, failure, result.records, forced=self.force)
            )
        except StoreError as exc:
            log.error("marker_not_written", sink=self.uri, error=str(exc))
            raise SinkError(
                f"re-driven to {self.uri}, but its marker could not be written ({exc}): "
                "a rerun re-drives this range again"
            ) from exc
        kept = () if created else (f"{self.uri}: an earlier marker was kept",)
        return Delivery(self.uri, self.report, already_there=not created, notes=(*sent.notes, *kept))


def _folder(archived: ArchivedRange) -> str:
    return archived.folder


def _failure(archived: ArchivedRange) -> Failure:
    return archived.failure


def _shard(archived: ArchivedRange) -> tuple[str, str]:
    return (archived.failure.stream_arn, archived.failure.shard_id)


def _outcome(ticket: Ticket[ArchivedRange], archived: ArchivedRange) -> Outcome:
    outcome = ticket.result()
    return outcome or Outcome(OutcomeKind.RETRY, archived.failure, reason="not finished")
