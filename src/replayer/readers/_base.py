"""What every stream reader shares: the result type, the range bookkeeping, shard locks."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from replayer.model import Failure, Gap, StreamRecord

__all__ = ["RangeCollector", "ReadResult", "StreamReader", "shard_lock"]


@dataclass(frozen=True, slots=True)
class ReadResult:
    """What a reader recovered of one range, and exactly what it could not.

    `complete` is False when the reader stopped for a reason that may pass (an
    iterator that kept coming back empty, too many iterator expiries): the range
    should be tried again rather than reported as lost.
    """

    records: tuple[StreamRecord, ...]
    gaps: tuple[Gap, ...] = ()
    notes: tuple[str, ...] = ()
    complete: bool = True


class StreamReader(Protocol):
    async def read(self, failure: Failure) -> ReadResult:
        """Re-read records start..end of the failure's shard, in sequence order."""
        ...

    async def retention(self, failure: Failure) -> timedelta:
        """How long the stream keeps records (the range expires at first arrival + this)."""
        ...


class RangeCollector:
    """Accepts records in shard order and keeps the books of one range.

    Readers feed it every record they see; it keeps those within [start, end], drops
    re-reads, and turns "records were trimmed here" and "the shard ended here" into
    exact `Gap`s between what was and was not recovered.
    """

    def __init__(self, failure: Failure) -> None:
        self.failure = failure
        self.records: list[StreamRecord] = []
        self.gaps: list[Gap] = []
        self.notes: list[str] = []
        self.last: int | None = None  # the last sequence number accepted
        self.done = False
        self._lost_since: tuple[int, str] | None = None  # first sequence of an open gap, why
        self._resync: int | None = None  # the record an iterator was re-acquired AT

    @property
    def resume_after(self) -> str | None:
        """Sequence number to re-acquire an iterator after (None: from the start)."""
        return str(self.last) if self.last is not None else None

    def expect_again(self, sequence_number: str) -> None:
        """An iterator was re-acquired AT this (already taken) record: it should come first.

        If a later one comes first instead, that record was trimmed meanwhile, and with it,
        maybe, the records after it: they are reported, not silently skipped.
        """
        self._resync = int(sequence_number)

    def add(self, sequence_number: str, record_json: bytes) -> bool:
        """Take one record read from the shard; True once the range is fully read."""
        seq = int(sequence_number)
        if self._resync is not None:
            resync, self._resync = self._resync, None
            if seq > resync:
                self.lost_from_here("trimmed while the iterator was re-acquired")
        if seq < self.failure.start or (self.last is not None and seq <= self.last):
            return self.done  # before the range, or read twice after an iterator re-acquire
        if seq > self.failure.end:
            if self.last is None:
                self.lost_from_here("records of the range no longer in the shard")
            self._close_gap(self.failure.end)
            self.done = True
            return True
        expected_first = self.failure.start if self.last is None else None
        if self._lost_since is not None:
            self._close_gap(seq - 1)
        elif expected_first is not None and seq > expected_first:
            # AT_SEQUENCE_NUMBER named a record that is no longer the first one there.
            self.gaps.append(Gap(str(expected_first), str(seq - 1), "start of range no longer in the shard"))
        self.records.append(StreamRecord(sequence_number, record_json))
        self.last = seq
        if seq == self.failure.end:
            self.done = True
        return self.done

    def lost_from_here(self, reason: str) -> None:
        """Records after the last one accepted (up to the next one seen) are gone."""
        if self._lost_since is None:
            first = self.failure.start if self.last is None else self.last + 1
            self._lost_since = (first, reason)

    def shard_ended(self) -> None:
        """The shard is closed and was read to its end before `end` was reached."""
        if self.done:
            return
        self.lost_from_here("shard ended before the end of the range")
        self._close_gap(self.failure.end)
        self.done = True

    def _close_gap(self, last: int) -> None:
        if self._lost_since is None:
            return
        first, reason = self._lost_since
        self._lost_since = None
        if first <= last:
            self.gaps.append(Gap(str(first), str(last), reason))

    def result(self, *, complete: bool = True) -> ReadResult:
        if complete and not self.done:
            self._close_gap(self.failure.end)
        notes = list(self.notes)
        batch = self.failure.batch_size
        if complete and batch is not None and len(self.records) != batch and not self.gaps:
            notes.append(
                f"read {len(self.records)} records where batchSize says {batch} "
                "(ESM filter criteria or bisected batches can cause this)"
            )
        return ReadResult(tuple(self.records), tuple(self.gaps), tuple(notes), complete)


_locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = weakref.WeakValueDictionary()


@asynccontextmanager
async def shard_lock(failure: Failure) -> AsyncIterator[None]:
    """At most one reader per shard at a time in this process."""
    key = (failure.stream_arn, failure.shard_id)
    lock = _locks.get(key)
    if lock is None:
        lock = _locks[key] = asyncio.Lock()
    async with lock:
        yield
