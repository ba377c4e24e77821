"""Store one range so that the folder is consistent as a whole, whatever earlier attempts left.

Objects are created only if absent, in the order records -> loss report -> manifest. An
object already there is read back and compared, never assumed right, and the archive never
vouches for what this attempt did not read: an earlier records object is adopted only when
its records are exactly the ones read, or, where this read is short (records trimmed since),
when its extra records lie in the spans this read reports missing AND a manifest replayer
wrote vouches for it (its SHA-256, and its MAC when a manifest key is configured). Anything
else is an `ArchiveConflict`, never a silent success: this attempt's records are then kept
beside the object they contradict (``records.<sha256>.jsonl.gz``) and both digests reported.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from replayer.archive.layout import LOSS_REPORT, MANIFEST, RECORDS, conflict_records, range_path
from replayer.archive.mac import MacError, MacUnavailable, ManifestKey
from replayer.archive.manifest import (
    MAX_OBJECT_BYTES,
    ArchivedRange,
    PackedRecords,
    archived_range,
    loss_report_document,
    manifest_fields,
    pack_records,
    read_loss_report,
    read_records_object,
    sha256,
)
from replayer.archive.store import Store, StoreError, TooLarge
from replayer.model import Failure, Gap, StreamRecord
from replayer.wire import dumps

__all__ = ["ArchiveConflict", "Written", "write_range"]


class ArchiveConflict(Exception):
    """The archive holds other content for this range than this attempt read: a person must look.

    `archived` and `attempted` are the SHA-256 of the records object there and of the one
    this attempt would have written (None: no records object); `kept` is where this attempt's
    records were stored beside it (None: nothing read, or the records object there is ours).
    """

    def __init__(self, message: str, *, location: str, archived: str | None, attempted: str | None,
                 kept: str | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.location = location
        self.archived = archived
        self.attempted = attempted
        self.kept = kept


@dataclass(frozen=True, slots=True)
class Written:
    """What the archive holds for the range once `write_range` returns."""

    location: str  # the records object, or the manifest when there are no records
    report: str | None  # the loss report, when records are missing
    already_there: bool  # an earlier attempt (or another writer) had stored the records
    recovered: int  # records the archive holds
    gaps: tuple[Gap, ...]  # what the archive reports missing


_P = ParamSpec("_P")
_T = TypeVar("_T")


@functools.cache
def _packers() -> ThreadPoolExecutor:
    """The threads records objects are packed and checked in: zlib and hashlib let go of the GIL,
    so a thread per core uses them all; more would only hold more ranges' pages in memory at once."""
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="replayer-pack")


async def in_packers(work: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """`work(*args, **kwargs)` in one of the packing threads: records objects are packed, read back
    and compared there (this attempt's fingerprints are made from its body on first use), never on
    the event loop."""
    return await asyncio.get_running_loop().run_in_executor(
        _packers(), functools.partial(work, *args, **kwargs)
    )


async def write_range(
    store: Store,
    failure: Failure,
    parts: Iterable[Sequence[StreamRecord]],
    gaps: Sequence[Gap],
    notes: Sequence[str] = (),
    *,
    key: ManifestKey | None = None,
) -> Written:
    """Archive the range's records (given in parts, in sequence order), its loss report and manifest
    (signed with `key`, when given; what is read back must then carry its valid MAC).

    Raises ArchiveConflict when what is there contradicts what was read, StoreError on
    trouble with the store or KMS (the caller retries). Idempotent: a retry converges on the
    one consistent folder.
    """
    packed = await in_packers(pack_records, parts)
    return await _Writer(store, failure, packed, tuple(gaps), key).write(tuple(notes))


def _without(gaps: Sequence[Gap], held: Iterable[str]) -> tuple[Gap, ...]:
    """The spans of `gaps` less the sequence numbers an archived records object holds."""
    kept = sorted(int(s) for s in held)
    out: list[Gap] = []
    for gap in gaps:
        first, last = int(gap.first), int(gap.last)
        for seq in (s for s in kept if first <= s <= last):
            if first < seq:
                out.append(Gap(str(first), str(seq - 1), gap.reason))
            first = seq + 1
        if first <= last:
            out.append(Gap(str(first), str(last), gap.reason))
    return tuple(out)


def _outside(sequence_numbers: Iterable[str], gaps: Sequence[Gap]) -> list[str]:
    """The sequence numbers that lie in none of `gaps`, in order."""
    spans = [(int(g.first), int(g.last)) for g in gaps]
    return sorted((s for s in sequence_numbers if not any(a <= int(s) <= b for a, b in spans)), key=int)


def _beyond(held: PackedRecords, read: PackedRecords) -> list[str]:
    """Sequence numbers `held` has that `read` lacks, in order."""
    mine = read.fingerprints
    return sorted((s for s in held.fingerprints if s not in mine), key=int)


def _digest(held: PackedRecords) -> str | None:
    """The records object's SHA-256 for a conflict's report; None when there is no records object."""
    return held.sha256 if held.count else None


class _Writer:
    def __init__(
        self, store: Store, failure: Failure, packed: PackedRecords, gaps: tuple[Gap, ...],
        key: ManifestKey | None,
    ) -> None:  # fmt: skip
        self.store = store
        self.failure = failure
        self.read = packed  # what this attempt read
        self.read_gaps = gaps  # what this attempt reports missing
        self.manifest_key = key
        self.found = False  # the records object was already there
        self.own = False  # the records object in place holds this attempt's bytes
        self.folder = range_path(failure)

    def key(self, name: str) -> str:
        return f"{self.folder}/{name}"

    def conflict(self, why: str, archived: str | None, name: str) -> ArchiveConflict:
        location = self.store.location(self.key(name))
        attempted = self.read.sha256 if self.read.count else None
        return ArchiveConflict(
            f"{location}: {why} (archived sha256 {archived or 'none'}, this attempt's {attempted or 'none'})",
            location=location,
            archived=archived,
            attempted=attempted,
        )

    async def write(self, notes: tuple[str, ...]) -> Written:
        try:
            return await self._write(notes)
        except ArchiveConflict as conflict:
            raise await self.kept_beside(conflict) from None

    async def kept_beside(self, conflict: ArchiveConflict) -> ArchiveConflict:
        """`conflict`, once this attempt's records are stored beside what they contradict (create-only)."""
        if not self.read.count or self.own:
            return conflict
        name = conflict_records(self.read.sha256)
        await self.store.create(
            self.key(name), self.read.body, content_type="application/x-ndjson", encoding="gzip"
        )
        kept = self.store.location(self.key(name))
        return ArchiveConflict(
            f"{conflict}; this attempt's records are kept beside it: {kept}",
            location=conflict.location,
            archived=conflict.archived,
            attempted=conflict.attempted,
            kept=kept,
        )

    async def _write(self, notes: tuple[str, ...]) -> Written:
        # No look first: the common case (nothing there) costs one create per object. Whatever an
        # earlier attempt left is met on the way and checked; a manifest there is verified at the end.
        gaps = self.read_gaps
        held = await self.records()
        if held is not self.read:
            gaps = _without(gaps, held.fingerprints)
        report, report_sha256 = None, None
        if gaps:
            gaps, report_sha256 = await self.loss_report(held, gaps, notes)
            report = self.store.location(self.key(LOSS_REPORT))
        records_location = self.store.location(self.key(RECORDS)) if held.count else None
        document = manifest_fields(
            self.failure,
            held,
            gaps,
            notes,
            records_location=records_location,
            loss_report_location=report,
            loss_report_sha256=report_sha256,
        )
        if self.manifest_key is not None:
            try:
                document = await self.manifest_key.sign(document)
            except MacUnavailable as exc:
                raise StoreError(str(exc)) from exc
        if not await self.store.create(self.key(MANIFEST), dumps(document)):
            there = await self.store.read(self.key(MANIFEST))
            if there is None:
                raise self.conflict("the manifest was there, then gone", None, MANIFEST)
            return await self.verify(there)  # another writer finished first: it must agree
        return Written(
            records_location or self.store.location(self.key(MANIFEST)),
            report,
            already_there=self.found,
            recovered=held.count,
            gaps=gaps,
        )

    async def records(self) -> PackedRecords:
        """The records object the folder holds once this returns: this attempt's, one holding exactly
        the records it read, or one a manifest vouches for that holds more where this read is short."""
        key = self.key(RECORDS)
        if self.read.count:
            created = await self.store.create(
                key, self.read.body, content_type="application/x-ndjson", encoding="gzip"
            )
            if created:
                self.own = True
                return self.read
        try:
            data = await self.store.read(key, limit=MAX_OBJECT_BYTES)
        except TooLarge as exc:
            raise self.conflict(f"the records object there is unusable: {exc}", None, RECORDS) from None
        self.found = data is not None
        if data is None:
            if self.read.count:
                raise self.conflict("the records object was there, then gone", None, RECORDS)
            return self.read
        if data == self.read.body:
            self.own = True
            return self.read
        try:
            held = await in_packers(read_records_object, data, self.failure)
        except ValueError as exc:
            raise self.conflict(
                f"the records object there is unusable: {exc}", sha256(data), RECORDS
            ) from None
        extra = await self.check_adoptable(held)
        # More than this attempt read (its read is short): only a manifest replayer wrote may vouch for it.
        if extra and (why := await self.unvouched(held)):
            raise self.conflict(
                f"the records object there holds {held.count - self.read.count} records this attempt "
                f"could not read, and {why}",
                held.sha256,
                RECORDS,
            )
        return held

    async def check_adoptable(self, held: PackedRecords) -> list[str]:
        """A conflict unless `held` holds every record this attempt read, byte for byte, and any more
        only in the spans this read reports missing (the stream no longer holds them); those more."""
        if lacking := await in_packers(held.holds, self.read):
            raise self.conflict(
                f"the records object there lacks or differs in {len(lacking)} records this attempt read "
                f"(first: {lacking[0]})",
                held.sha256,
                RECORDS,
            )
        extra = await in_packers(_beyond, held, self.read)
        if outside := _outside(extra, self.read_gaps):
            raise self.conflict(
                f"the records object there holds {len(outside)} records the stream did not yield "
                f"(first: {outside[0]})",
                held.sha256,
                RECORDS,
            )
        return extra

    async def unvouched(self, held: PackedRecords) -> str | None:
        """Why no manifest replayer wrote vouches for `held` (None: one does)."""
        there = await self.store.read(self.key(MANIFEST))
        if there is None:
            return "no manifest vouches for it"
        try:
            archived = await self.checked_manifest(there)
        except ValueError as exc:
            return f"the manifest there is unusable: {exc}"
        if archived.records_sha256 != held.sha256 or archived.count != held.count:
            return "the manifest there does not vouch for it (another SHA-256 or count)"
        return None

    async def checked_manifest(self, manifest: bytes) -> ArchivedRange:
        """The manifest read back, with its MAC verified when a key is configured (ValueError: unusable)."""
        archived = archived_range(self.folder, manifest)
        if self.manifest_key is not None:
            try:
                await self.manifest_key.verify(json.loads(manifest))
            except MacUnavailable as exc:
                raise StoreError(str(exc)) from exc
            except MacError as exc:
                raise ValueError(str(exc)) from None
        return archived

    async def loss_report(
        self, held: PackedRecords, gaps: tuple[Gap, ...], notes: tuple[str, ...]
    ) -> tuple[tuple[Gap, ...], str]:
        """The gaps the folder's loss report states, and its digest: this attempt's, or an earlier one that fits."""
        key = self.key(LOSS_REPORT)
        document = loss_report_document(self.failure, held, gaps, notes)
        if await self.store.create(key, document):
            return gaps, sha256(document)
        there = await self.store.read(key)
        if there is None:
            raise self.conflict("the loss report was there, then gone", _digest(held), LOSS_REPORT)
        try:
            report = read_loss_report(there, self.failure)
        except ValueError as exc:
            raise self.conflict(
                f"the loss report there is unusable: {exc}", _digest(held), LOSS_REPORT
            ) from None
        named_lost = await in_packers(_without, report.gaps, held.fingerprints) != report.gaps
        if report.recovered != held.count or named_lost or not report.gaps:
            raise self.conflict(
                "the loss report there contradicts the records object "
                f"(it counts {report.recovered} records kept where the object holds {held.count}"
                + (", and names archived records as lost)" if named_lost else ")"),
                _digest(held),
                LOSS_REPORT,
            )
        return report.gaps, sha256(there)

    async def verify(self, manifest: bytes) -> Written:
        """A complete folder is there: check it as a whole and that it covers what this attempt read."""
        try:
            archived = await self.checked_manifest(manifest)
        except ValueError as exc:
            raise self.conflict(f"the manifest there is unusable: {exc}", None, MANIFEST) from None
        held = pack_records(())
        if archived.count:
            try:
                data = await self.store.read(self.key(RECORDS), limit=MAX_OBJECT_BYTES)
            except TooLarge as exc:
                raise self.conflict(f"the records object is unusable: {exc}", None, RECORDS) from None
            if data is None:
                raise self.conflict("the manifest names a records object that is missing", None, RECORDS)
            digest = sha256(data)
            if archived.records_sha256 not in (None, digest):
                raise self.conflict(
                    "the records object does not match its manifest's SHA-256", digest, RECORDS
                )
            try:
                held = await in_packers(read_records_object, data, self.failure)
            except ValueError as exc:
                raise self.conflict(f"the records object is unusable: {exc}", digest, RECORDS) from None
            if held.count != archived.count:
                raise self.conflict(
                    f"the records object holds {held.count} records where its manifest says {archived.count}",
                    held.sha256,
                    RECORDS,
                )
        if archived.loss_report_sha256 is not None:
            report = await self.store.read(self.key(LOSS_REPORT))
            if report is None or sha256(report) != archived.loss_report_sha256:
                raise self.conflict(
                    "the loss report does not match its manifest's SHA-256", _digest(held), LOSS_REPORT
                )
        if held.count or self.read.count:
            await self.check_adoptable(held)
        records = self.key(RECORDS) if archived.count else self.key(MANIFEST)
        report_location = self.store.location(self.key(LOSS_REPORT)) if archived.gaps else None
        return Written(
            self.store.location(records),
            report_location,
            already_there=True,
            recovered=archived.count,
            gaps=archived.gaps,
        )
