"""What every stream reader shares: the result type, the range bookkeeping, the one
range-read loop (`read_range`, over a stream's `ShardCalls`), shard locks."""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import operator
import time
import weakref
import zlib
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from itertools import accumulate, islice
from typing import Any, Protocol, overload

from botocore.exceptions import ClientError

from replayer import logs
from replayer.aws import ANSWER_TOO_LARGE, RAW_BODY, Clients, error_code
from replayer.model import Failure, Gap, RecordPage, StreamRecord
from replayer.wire import gc_paused, jsonable, loads

__all__ = [
    "DEFAULT_MAX_RECORDS_PER_RANGE",
    "NO_SUCH_STREAM",
    "OVER_BATCH",
    "TOO_LARGE",
    "Page",
    "RangeCollector",
    "RangeRecords",
    "ReadResult",
    "BaseShardCalls",
    "ShardCalls",
    "ShardReader",
    "batch_note",
    "decoded_page",
    "judged",
    "over_ceiling_reason",
    "pages_of",
    "StreamReader",
    "read_range",
    "shard_lock",
]

log = logs.get_logger("replayer.readers")

# A range is read to its end or to this many records, whichever comes first (#12: bounded by its batch).
DEFAULT_MAX_RECORDS_PER_RANGE = 10_000
OVER_BATCH = "range spans more than its batch"
# The rejection of a range whose stream does not exist: nothing there was ever lost, nothing to retry.
NO_SUCH_STREAM = "no such stream"
# The rejection of a range whose stream answered with more than it documents it ever gives.
TOO_LARGE = "larger than the stream allows"


# Records a range keeps uncompressed (its open page); full pages are kept zlib-compressed (#12.6).
RECORDS_PER_PAGE = 1_000


class _SealedPage:
    """A full page of records: their sequence numbers and one compressed blob of their JSON Lines
    (what the archive stores: packing a page is then one decompression, no per-record work)."""

    __slots__ = ("blob", "ends", "first", "last", "sequence_numbers")

    def __init__(self, page: RecordPage) -> None:
        # The sequence numbers too: as strings they are a tenth of a page's memory; compressed, ~nothing.
        self.sequence_numbers = zlib.compress("\n".join(page.sequence_numbers).encode(), 1)
        self.first, self.last = int(page.sequence_numbers[0]), int(page.sequence_numbers[-1])
        self.ends = array("L", accumulate(len(json) + 1 for json in page.jsons))  # line ends, newlines in
        self.blob = zlib.compress(page.lines(), 1)  # level 1: cheap, ~5x smaller

    def records(self) -> RecordPage:
        sequence_numbers = zlib.decompress(self.sequence_numbers).decode().split("\n")
        return RecordPage.of_lines(sequence_numbers, zlib.decompress(self.blob), self.ends)


class RangeRecords(Sequence[StreamRecord]):
    """A range's records in sequence order, held a compressed page at a time.

    Memory is one open page plus the range's compressed size, not the whole range as objects:
    iterate it (or its `pages()`) rather than copying it. Equal to any sequence of the same records.
    """

    __slots__ = ("_count", "_open", "_sealed")

    def __init__(self, records: Sequence[StreamRecord] = ()) -> None:
        self._sealed: list[_SealedPage] = []
        self._open = RecordPage()
        self._count = 0
        for r in records:
            self.append(r)

    def append(self, record: StreamRecord) -> None:
        self.add(record.sequence_number, record.json)

    def add(self, sequence_number: str, json: bytes) -> None:
        """Append one record given as its sequence number and JSON (no `StreamRecord` made)."""
        if len(self._open) >= RECORDS_PER_PAGE:  # sealed only when a next page begins: small ranges stay raw
            self._sealed.append(_SealedPage(self._open))
            self._open = RecordPage()
        self._open.append(sequence_number, json)
        self._count += 1

    def extend(self, sequence_numbers: list[str], jsons: list[bytes]) -> None:
        """Append records given as parallel lists (the lists are not kept)."""
        at = 0
        while at < len(jsons):
            if len(self._open) >= RECORDS_PER_PAGE:
                self._sealed.append(_SealedPage(self._open))
                self._open = RecordPage()
            n = min(RECORDS_PER_PAGE - len(self._open), len(jsons) - at)
            self._open.sequence_numbers += sequence_numbers[at : at + n]
            self._open.jsons.extend(jsons[at : at + n])
            at += n
        self._count += len(jsons)

    def find(self, sequence_number: str) -> bytes | None:
        """The JSON of the record with this sequence number, None when none was kept (records are
        kept in sequence order: only the page that would hold it is decompressed)."""
        seq = int(sequence_number)
        sealed = next((p for p in self._sealed if p.first <= seq <= p.last), None)
        page = sealed.records() if sealed is not None else self._open
        for at, kept in enumerate(page.sequence_numbers):
            if int(kept) == seq:
                return page[at].json
        return None

    def pages(self) -> Iterator[RecordPage]:
        """The records a page at a time (each page decompressed only while it is used)."""
        for page in self._sealed:
            yield page.records()
        if self._open:
            yield self._open[:]

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[StreamRecord]:
        for page in self.pages():
            yield from page

    @overload
    def __getitem__(self, index: int) -> StreamRecord: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[StreamRecord, ...]: ...
    def __getitem__(self, index: int | slice) -> StreamRecord | tuple[StreamRecord, ...]:
        if isinstance(index, slice):
            return tuple(self)[index]
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError("range record index out of range")
        page, at = divmod(index, RECORDS_PER_PAGE)
        if page < len(self._sealed):
            return self._sealed[page].records()[at]
        return self._open[at]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and tuple(self) == tuple(other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"RangeRecords({tuple(self)!r})"


def pages_of(records: Sequence[StreamRecord]) -> Iterator[Sequence[StreamRecord]]:
    """`records` in consecutive parts: a `RangeRecords` page by page, any other sequence whole."""
    if isinstance(records, RangeRecords):
        yield from records.pages()
    elif records:
        yield records


@dataclass(frozen=True, slots=True)
class ReadResult:
    """What a reader recovered of one range, and exactly what it could not.

    `complete` is False when the reader stopped for a reason that may pass (an
    iterator that kept coming back empty, too many iterator expiries): the range
    should be tried again rather than reported as lost.
    """

    records: Sequence[StreamRecord]  # a `RangeRecords` when read from a stream: iterate, do not copy
    gaps: tuple[Gap, ...] = ()
    notes: tuple[str, ...] = ()
    complete: bool = True
    # Set when the range cannot be a genuine failure record's (it spans more than its batch):
    # the range is rejected, never retried, and nothing is delivered.
    refused: str | None = None
    # The ceiling the read stopped at (more records than it), when that is why it was refused: the
    # one refusal that depends on a claim (the batch size) rather than on the stream.
    over_ceiling: int | None = None
    # Set when the stream gave two different records under one sequence number: nothing is delivered,
    # the range is a `conflict` (kept with the reason), never `replayed` with one of them dropped.
    conflict: str | None = None


def batch_note(failure: Failure, read: int) -> str:
    """The note of a complete read whose count differs from the batch size its failure claims."""
    return (
        f"read {read} records where batchSize says {failure.batch_size} "
        "(ESM filter criteria or bisected batches can cause this)"
    )


def over_ceiling_reason(failure: Failure, ceiling: int) -> str:
    """The refusal of a range holding more than `ceiling` records before its end."""
    return f"{OVER_BATCH}: more than {ceiling} records before sequence {failure.end_sequence}"


def judged(result: ReadResult, read_for: Failure, failure: Failure, ceiling: int) -> ReadResult | None:
    """A read made for the claims of `read_for` as it stands against `failure`'s own (same range):
    its batch size (through `ceiling`, the most records it may hold) and its note. None when that
    read cannot tell (it stopped at a lower ceiling than this claim's): the range is read again.

    What messages naming one range may share is the reading; each one's verdict is its own.
    """
    if result.conflict is not None:
        return result  # the stream's answer, whoever asked
    if result.refused is not None:
        if result.over_ceiling is None:
            return result  # the stream's answer (no such stream, ...), whoever asked
        if ceiling > result.over_ceiling:
            return None
        return dataclasses.replace(
            result, refused=over_ceiling_reason(failure, ceiling), over_ceiling=ceiling
        )
    count = len(result.records)
    if count > ceiling:
        return ReadResult(
            result.records, (), result.notes, True, over_ceiling_reason(failure, ceiling), ceiling
        )
    notes = [n for n in result.notes if read_for.batch_size is None or n != batch_note(read_for, count)]
    if result.complete and failure.batch_size is not None and count != failure.batch_size and not result.gaps:
        notes.append(batch_note(failure, count))
    return dataclasses.replace(result, notes=tuple(notes))


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

    def __init__(self, failure: Failure, *, ceiling: int = DEFAULT_MAX_RECORDS_PER_RANGE) -> None:
        self.failure = failure
        self._start, self._end = failure.start, failure.end  # parsed once, compared per record
        self.ceiling = ceiling  # records of the range at most: more means it spans more than its batch
        self.refused: str | None = None
        self.over: int | None = None  # the ceiling, once more records than it were found
        self.records = RangeRecords()
        self.gaps: list[Gap] = []
        self.notes: list[str] = []
        self.last: int | None = None  # the last sequence number accepted
        self._last_json: bytes | None = None  # and its record
        self.conflict: str | None = None
        self.done = False
        self._lost_since: tuple[int, str] | None = None  # first sequence of an open gap, why
        self._resync: int | None = None  # the record an iterator was re-acquired AT
        self.offered = 0  # records offered to `add`, whether taken or not
        self.before_start = 0  # of those, records before the range

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
        self.offered += 1
        if self._resync is not None:
            resync, self._resync = self._resync, None
            if seq > resync:
                self.lost_from_here("trimmed while the iterator was re-acquired")
        last = self.last
        if seq < self._start:
            self.before_start += 1
            return self.done  # before the range
        if last is not None and seq <= last:
            self._again(seq, record_json)  # read twice (an iterator re-acquired AT it), or out of order
            return self.done
        if seq > self._end:
            if last is None:
                self.lost_from_here("records of the range no longer in the shard")
            self._close_gap(self._end)
            self.done = True
            return True
        records = self.records
        if len(records) >= self.ceiling:
            self.refused = over_ceiling_reason(self.failure, self.ceiling)
            self.over, self.done = self.ceiling, True
            return True
        if self._lost_since is not None:
            self._close_gap(seq - 1)
        elif last is None and seq > self._start:
            # AT_SEQUENCE_NUMBER named a record that is no longer the first one there.
            self.gaps.append(Gap(str(self._start), str(seq - 1), "start of range no longer in the shard"))
        records.add(sequence_number, record_json)
        self.last, self._last_json = seq, record_json
        if seq == self._end:
            self.done = True
        return self.done

    def _again(self, seq: int, record_json: bytes) -> None:
        """A record of the range at or before the last one taken. The same record again (an
        iterator re-acquired AT the last one, a page repeated) is nothing new; a different record
        under a sequence number taken is a conflict; one never taken came out of order (the stream
        keeps a shard in order: only a misbehaving endpoint does this) and is reported as not
        recovered, never skipped silently."""
        taken = self._last_json if seq == self.last else self.records.find(str(seq))
        if taken is None:
            self.gaps.append(
                Gap(
                    str(seq),
                    str(seq),
                    f"came out of order on a GetRecords page (after {self.last}): not taken",
                )
            )
        elif taken != record_json:
            self.conflict = (
                f"the stream gave two different records with sequence number {seq} "
                "(a GetRecords page repeated it with other content): neither is delivered"
            )
            self.done = True

    def after_end(self, sequence_numbers: Sequence[str], jsons: Callable[[int], bytes]) -> None:
        """The rest of a page after the record that ended the range: any record of the range among
        them came out of order, and is checked as `add` checks one (never dropped unseen)."""
        for at, sequence_number in enumerate(sequence_numbers):
            seq = int(sequence_number)
            if self._start <= seq <= self._end and self.conflict is None:
                self._again(seq, jsons(at))

    def add_page(
        self,
        records: Sequence[Any],
        sequence_numbers: list[str],
        events: Callable[[Sequence[Any]], list[bytes]],
    ) -> None:
        """Take a page's records (`events` makes their event JSON) as `add` would one by one, in order,
        up to where it would stop; the run of them that lies plainly inside the range, after the
        last one taken and in order, is taken in one step."""
        taken = self._plain_run(sequence_numbers)
        if taken:
            jsons = events(records[:taken])
            self.records.extend(sequence_numbers[:taken], jsons)
            self._last_json = jsons[-1]
            self.offered += taken
            self.last = int(sequence_numbers[taken - 1])
            if self.last == self._end:
                self.done = True
                self._rest_of_page(records, sequence_numbers, taken, events)
                return
        for at in range(taken, len(records)):
            if self.add(sequence_numbers[at], events(records[at : at + 1])[0]):
                self._rest_of_page(records, sequence_numbers, at + 1, events)
                return

    def _rest_of_page(
        self,
        records: Sequence[Any],
        sequence_numbers: list[str],
        rest: int,
        events: Callable[[Sequence[Any]], list[bytes]],
    ) -> None:
        if rest < len(records):
            self.after_end(sequence_numbers[rest:], lambda i: events(records[rest + i : rest + i + 1])[0])

    def _plain_run(self, sequence_numbers: list[str]) -> int:
        """How many leading records `add` would take with nothing else to note: in order, after the
        last one taken (from the range's very start when none was), up to its end and ceiling."""
        if self.done or self._resync is not None or self._lost_since is not None or not sequence_numbers:
            return 0
        seqs = list(map(int, sequence_numbers))
        if seqs[0] != self._start if self.last is None else seqs[0] <= self.last:
            return 0  # a gap at the range's start, or records read again: `add` says what they mean
        if not all(map(operator.lt, seqs, islice(seqs, 1, None))):
            return 0
        return min(bisect.bisect_right(seqs, self._end), self.ceiling - len(self.records))

    def page_limit(self, most: int) -> int:
        """Records to ask for next: no more than the range may still hold (its ceiling), at most `most`.

        Where the ceiling is the range's batch size, the page then ends with the range, so the
        next range on the shard can go on from its NextShardIterator; one more record is asked
        for at the ceiling, to tell the range's end from a range longer than its batch.
        """
        return max(1, min(most, self.ceiling - len(self.records)))

    def lost_from_here(self, reason: str) -> None:
        """Records after the last one accepted (up to the next one seen) are gone."""
        if self._lost_since is None:
            first = self._start if self.last is None else self.last + 1
            self._lost_since = (first, reason)

    def refuse(self, why: str) -> None:
        """The range cannot be a genuine one: stop reading; it is rejected, not retried."""
        self.refused = f"{OVER_BATCH}: {why}"
        self.done = True

    def too_large(self, why: str) -> None:
        """A page or record larger than the stream's documented maximum: stop reading; the range is
        rejected with the reason (no genuine stream answers so: an endpoint misbehaves)."""
        self.refused = f"{TOO_LARGE}: {why}"
        self.done = True

    def no_stream(self) -> None:
        """The range's stream does not exist: stop reading; it is rejected, not retried nor lost."""
        self.refused = f"{NO_SUCH_STREAM}: {self.failure.stream_arn}"
        self.done = True

    def at_tip(self) -> None:
        """The newest record of an open shard was read and the range's end was not met.

        Nothing of the range left (all trimmed) is a loss; records of the range read and then
        the tip means the range names records that never existed: no genuine failure does.
        """
        if self.last is None:
            self.lost_from_here(
                "no record of the range left in the shard (trimmed past the stream's retention)"
            )
        else:
            self.refuse(f"the shard's newest record ({self.last}) comes before the end of the range")

    def shard_ended(self) -> None:
        """The shard is closed and was read to its end before `end` was reached."""
        if self.done:
            return
        self.lost_from_here("shard ended before the end of the range")
        self._close_gap(self._end)
        self.done = True

    def _close_gap(self, last: int) -> None:
        if self._lost_since is None:
            return
        first, reason = self._lost_since
        self._lost_since = None
        if first <= last:
            self.gaps.append(Gap(str(first), str(last), reason))

    def result(self, *, complete: bool = True) -> ReadResult:
        if self.refused is not None:
            return ReadResult(self.records, (), tuple(self.notes), True, self.refused, self.over)
        if self.conflict is not None:
            return ReadResult(self.records, (), tuple(self.notes), True, conflict=self.conflict)
        if complete and not self.done:
            self._close_gap(self._end)
        notes = list(self.notes)
        batch = self.failure.batch_size
        if complete and batch is not None and len(self.records) != batch and not self.gaps:
            notes.append(batch_note(self.failure, len(self.records)))
        gaps = tuple(sorted(self.gaps, key=lambda g: int(g.first)))  # out-of-order ones come late
        return ReadResult(self.records, gaps, tuple(notes), complete)


@dataclass(frozen=True, slots=True)
class Page:
    """One GetRecords answer, decoded: its records, the next iterator, where it stands."""

    records: list[Any]
    next_iterator: str | None
    at_tip: bool = False  # the shard's newest record has been read (Kinesis: MillisBehindLatest 0)
    child_shards: tuple[str, ...] = ()  # a closed shard's successors
    last_sequence: str | None = None  # the sequence number of the page's last record


class ShardCalls(Protocol):
    """What differs between streams in reading one shard: the calls and their edge cases."""

    books: RangeCollector

    async def iterator(self) -> str | None:
        """An iterator at the first record not yet taken (None when none can be had: the books
        say why)."""
        ...

    async def fetch(self, iterator: str) -> Any | None:
        """The next GetRecords answer, as the client gave it; None when the iterator must be
        re-acquired (it expired, or data was trimmed under it)."""
        ...

    def page(self, response: Any) -> Page:
        """The answer decoded (the cyclic GC is paused meanwhile, as for `feed`)."""
        ...

    def feed(self, page: Page) -> int:
        """Give the page's records, event-shaped, to the books; how many the page held."""
        ...


def decoded_page(response: dict[str, Any]) -> dict[str, Any]:
    """A GetRecords answer as the wire carried it (botocore's parse undone if it ran)."""
    raw = response.get(RAW_BODY)
    if raw is not None:
        page: dict[str, Any] = loads(raw)
        return page
    return {**response, "Records": [jsonable(r) for r in response.get("Records", [])]}


class ShardReader:
    """What DynamoDB and Kinesis readers share: one range at a time per shard, through the one
    loop. Subclasses name their `service` and make their `ShardCalls` (`calls`)."""

    service: str
    max_empty_pages: int
    max_reacquires: int
    _clients: Clients

    def calls(self, client: Any, failure: Failure) -> ShardCalls:
        raise NotImplementedError

    async def read(self, failure: Failure) -> ReadResult:
        lock = _lock_of(failure)
        await lock.acquire()
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                lock.release()

        try:
            client = await self._clients.get(self.service, failure.region, failure.arn.account)
            return await read_range(
                self.calls(client, failure),
                max_empty_pages=self.max_empty_pages,
                max_reacquires=self.max_reacquires,
                shard_id=failure.shard_id,
                end_sequence=failure.end_sequence,
                release_shard=release,
            )
        finally:
            release()


class BaseShardCalls:
    """The state every stream's `ShardCalls` keeps for one range: the client and the books."""

    def __init__(self, client: Any, failure: Failure, ceiling: int, most: int) -> None:
        self.client = client
        self.failure = failure
        self.books = RangeCollector(failure, ceiling=ceiling)
        self.most = most  # records a GetRecords call asks for at most

    async def describe_stream(self) -> None:
        """Describe the range's stream (one cheap call); ClientError when it cannot be."""
        raise NotImplementedError

    async def get_records(self, call: Callable[[int], Awaitable[Any]]) -> Any:
        """`call(limit)`'s GetRecords answer. One larger than the stream's documented maximum allows
        (`replayer.aws.MAX_ANSWER_BYTES`: read no further than that) is asked for again with half as
        many records (this range's later pages too); when even one record is too large, the books
        refuse the range and an empty page with no next iterator is given back."""
        while True:
            asked = self.books.page_limit(self.most)
            try:
                return await call(asked)
            except ClientError as exc:
                if error_code(exc) != ANSWER_TOO_LARGE:
                    raise
                if asked <= 1:
                    self.books.too_large(f"a GetRecords answer of shard {self.failure.shard_id}: {exc}")
                    return {}
                self.most = asked // 2
                log.warning("page_too_large", asked=asked, asking=self.most)

    async def not_found(self, exc: ClientError) -> None:
        """The books after a ResourceNotFoundException reading the range: a stream that does not
        exist rejects it (`NO_SUCH_STREAM`); a shard missing from a stream that does is a loss
        (DynamoDB Streams drop shards 24 hours after they close)."""
        try:
            await self.describe_stream()
        except ClientError as describe:
            if error_code(describe) != "ResourceNotFoundException":
                raise
            self.books.no_stream()
            return
        self.books.lost_from_here(f"shard not found: {exc}")


async def read_range(
    calls: ShardCalls,
    *,
    max_empty_pages: int,
    max_reacquires: int,
    shard_id: str,
    end_sequence: str,
    release_shard: Callable[[], None] | None = None,
) -> ReadResult:
    """The one range-read loop: pages are fed to the books until the range's end, a gap,
    the shard's end, the open shard's tip, or a bound (empty pages, re-acquisitions: the
    range is then incomplete and retried; its ceiling: it is refused).

    `release_shard` lets go of the shard as soon as a page ends exactly at the range's end: the
    next range on the shard goes on from that page's NextShardIterator while this one's records
    are still being turned into events (the shard's reads, one after another, are the critical path).
    """
    books = calls.books
    hand_over = _HandOver(books.failure, release_shard)
    resumed = _resumed(books.failure)  # the previous range on this shard ended right before this one
    iterator = resumed.iterator if resumed is not None else await calls.iterator()
    empty_pages = reacquires = 0
    while iterator is not None and not books.done:
        response = await _fetch(calls, iterator, resumed)
        if response is None:
            reacquires += 1
            if reacquires > max_reacquires:
                books.notes.append(f"gave up after {reacquires - 1} iterator re-acquisitions")
                return books.result(complete=False)
            log.info("reacquire_iterator", after=books.resume_after)
            iterator, resumed = await calls.iterator(), None
            continue
        await hand_over.before_decoding(response)
        # The page's objects (some 15,000 per 1,000 records) are made, fed and freed with no collection
        # walking them: a collection in between costs as much as decoding the page.
        with gc_paused():
            page = calls.page(response)
            del response
            await hand_over.after_decoding(page)
            books.offered = books.before_start = 0
            count = calls.feed(page)
            iterator, at_tip, children = page.next_iterator, page.at_tip, page.child_shards
            del page  # the decoded records die here, not after the next request: a page per range in flight
        if resumed is not None:
            resumed = None
            if books.last is None and books.before_start == count:
                # Nothing of the range on the first page after the previous one (it starts far
                # after it, or the page was empty): ask for an iterator at its start instead.
                iterator = await calls.iterator()
                continue
        if books.done:
            if (
                not hand_over.handed
                and iterator is not None
                and books.offered == count
                and books.last == books.failure.end
            ):
                _remember(books.failure, iterator)  # the page ended with the range: the next may go on
            break
        if iterator is None:
            if children:
                books.notes.append(f"shard {shard_id} is closed; later records are in {', '.join(children)}")
            books.shard_ended()
            break
        if count:
            empty_pages = 0
            continue
        if at_tip:  # records older than the tip cannot arrive later
            books.at_tip()
            break
        empty_pages += 1
        if empty_pages >= max_empty_pages:
            books.notes.append(
                f"gave up after {empty_pages} consecutive empty pages before sequence {end_sequence}; will retry"
            )
            return books.result(complete=False)
    if iterator is None and not books.done:
        books.shard_ended()
    return books.result()


async def _fetch(calls: ShardCalls, iterator: str, resumed: _Handoff | None) -> Any | None:
    """The next answer; None (re-acquire) also when the iterator was handed on by a range whose
    decoded page then contradicted what its raw answer said (never expected: see `peek`)."""
    response = await calls.fetch(iterator)
    return None if resumed is not None and not resumed.sure else response


class _HandOver:
    """Hands the shard, and the iterator right after the range, on to the next range on the shard
    as soon as a page is known to end exactly at the range's end (once per range).

    Known from the answer's raw JSON where it can be (`peek`): the next range's request then goes
    out before this page is even decoded (the shard's reads, one after another, are the critical
    path). The decoded page confirms it; were it ever to contradict it, the next range does not
    go on from that iterator (`_Handoff.sure`).
    """

    def __init__(self, failure: Failure, release: Callable[[], None] | None) -> None:
        self.failure = failure
        self.release = release
        self.handed = False
        self._peeked: tuple[_Handoff, str] | None = (
            None  # handed on from the raw answer: (handoff, its last record)
        )

    async def before_decoding(self, response: Any) -> None:
        if self.release is None or self.handed or (peeked := peek(response)) is None:
            return
        last, iterator = peeked
        if int(last) == self.failure.end:
            self._peeked = (_remember(self.failure, iterator, sure=False), last)
            await self._let_go()

    async def after_decoding(self, page: Page) -> None:
        if self._peeked is not None:
            handoff, last = self._peeked
            self._peeked = None
            handoff.sure = page.last_sequence == last and page.next_iterator == handoff.iterator
            if not handoff.sure:
                log.error("hand_over_contradicted", peeked=last, page_last=page.last_sequence)
            return
        if self.release is None or self.handed or page.next_iterator is None or page.last_sequence is None:
            return
        if int(page.last_sequence) == self.failure.end:
            _remember(self.failure, page.next_iterator)
            await self._let_go()

    async def _let_go(self) -> None:
        """The shard released, and the next range on it let send its request (two turns of the loop:
        its reader runs to its request, whose body aiohttp writes in a task of its own)."""
        assert self.release is not None
        self.handed = True
        self.release()
        await asyncio.sleep(0)
        await asyncio.sleep(0)


_SEQUENCE_KEY = b'"SequenceNumber"'
_ITERATOR_KEY = b'"NextShardIterator"'
_TOP_KEYS_WITHIN = 16_384  # bytes at either end of an answer that hold its top-level keys besides Records
_WHITESPACE = b" \t\r\n"


def peek(response: Any) -> tuple[str, str] | None:
    """The last record's sequence number and the next iterator, read off a GetRecords answer's raw
    JSON without decoding it; None when they cannot be read so.

    A key followed by a string value is found exactly by its bytes (inside a string every quote
    is escaped). In a GetRecords answer only the records' own SequenceNumber key has a string
    value (DynamoDB attribute values are objects, Kinesis records nest none), and records come in
    order, so the last one is the last record's. NextShardIterator is a top-level key: it is near
    one end of the answer (before or after the records).
    """
    raw = response.get(RAW_BODY) if isinstance(response, dict) else None
    if not isinstance(raw, bytes):
        return None
    last = _string_value(raw, _SEQUENCE_KEY, 0, len(raw))
    tail = max(0, len(raw) - _TOP_KEYS_WITHIN)
    iterator = _string_value(raw, _ITERATOR_KEY, tail, len(raw)) or _string_value(
        raw, _ITERATOR_KEY, 0, min(tail, _TOP_KEYS_WITHIN)
    )
    if last is None or iterator is None or not last.isdigit() or b"\\" in iterator:
        return None
    return last.decode(), iterator.decode()


def _string_value(raw: bytes, key: bytes, start: int, end: int) -> bytes | None:
    """The string value of the last `key` in raw[start:end] that has one (escapes left as they are)."""
    while (at := raw.rfind(key, start, end)) >= 0:
        end = at
        colon = raw.find(b":", at + len(key))
        if colon < 0 or raw[at + len(key) : colon].strip(_WHITESPACE):
            continue  # not a key
        after = raw[colon + 1 : colon + 65]
        value = after.lstrip(_WHITESPACE)
        if not value.startswith(b'"'):
            continue  # a key whose value is not a string
        opening = colon + 1 + len(after) - len(value)
        closing = raw.find(b'"', opening + 1)
        return raw[opening + 1 : closing] if closing > 0 else None
    return None


# Where the last range read on each shard ended, and the iterator right after it: the next range
# on the shard, when it starts after that, goes on from there (no GetShardIterator). Iterators
# live 5 minutes (Kinesis) or 15 (DynamoDB Streams); an expired one is re-acquired as usual.
_RESUME_SECONDS = 240.0
_RESUME_MAX = 4096


@dataclass(slots=True)
class _Handoff:
    """The iterator right after a range that ended a page, for the next range on its shard."""

    end: int
    iterator: str
    when: float
    sure: bool = True  # False while (or once) a hand-over read off a raw answer is not confirmed


_resume: dict[tuple[str, str], _Handoff] = {}


def _resumed(failure: Failure) -> _Handoff | None:
    entry = _resume.pop((failure.stream_arn, failure.shard_id), None)
    if entry is None or entry.end >= failure.start or time.monotonic() - entry.when >= _RESUME_SECONDS:
        return None
    return entry


def _remember(failure: Failure, iterator: str, *, sure: bool = True) -> _Handoff:
    if len(_resume) >= _RESUME_MAX:
        del _resume[next(iter(_resume))]
    handoff = _resume[(failure.stream_arn, failure.shard_id)] = _Handoff(
        failure.end, iterator, time.monotonic(), sure
    )
    return handoff


_locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = weakref.WeakValueDictionary()


def _lock_of(failure: Failure) -> asyncio.Lock:
    key = (failure.stream_arn, failure.shard_id)
    lock = _locks.get(key)
    if lock is None:
        lock = _locks[key] = asyncio.Lock()
    return lock


@asynccontextmanager
async def shard_lock(failure: Failure) -> AsyncIterator[None]:
    """At most one reader per shard at a time in this process."""
    async with _lock_of(failure):
        yield
