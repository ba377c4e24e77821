"""The core: one `Failure` in, one `Outcome` out. Sources decide what the outcome means.

read -> deliver to every sink, in order -> settle. Nothing here knows where the
failure came from (queue, file, Lambda event) or how the outcome is acknowledged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import hashlib
import heapq
import itertools
import json
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from replayer import logs
from replayer.allow import AllowList
from replayer.aws import Clients
from replayer.logs import range_context
from replayer.mappings import MappingFinder
from replayer.model import Failure, Outcome, OutcomeKind, StreamKind
from replayer.readers import Readers, ReadResult, judged
from replayer.sinks import ArchiveConflict, Delivery, Sink, SinkError

__all__ = [
    "DEFAULT_EXPIRY_WARNING",
    "DEFAULT_RANGE_BUDGET",
    "OUT_OF_TIME",
    "Replayer",
    "Scheduler",
    "Ticket",
    "by_deadline",
    "cap_ranges",
    "claims_key",
    "deliver",
    "rejected",
]

log = logs.get_logger("replayer")

# Failures we expect from AWS and the network: the range is retried later, never dropped.
_TRANSIENT = (ClientError, BotoCoreError, SinkError, OSError, asyncio.TimeoutError)

DEFAULT_EXPIRY_WARNING = timedelta(hours=2)
DEFAULT_RANGE_BUDGET = 300.0  # seconds per attempt at a range: well inside any stream's retention
# Errors no retry can cure (a file name longer than the file system allows): the range is rejected.
_PERMANENT_ERRNOS = frozenset({errno.ENAMETOOLONG})
_DEFAULT_RETENTION = timedelta(hours=24)  # when a reader cannot tell: the shortest AWS retention
_NO_DEADLINE = timedelta(days=3650)  # retention this long (inline payloads) means never expires


def rejected(failure: Failure | None, reason: str) -> Outcome:
    return Outcome(OutcomeKind.REJECTED, failure, reason=reason)


class Replayer:
    """Replays failures into sinks. Keyword-only configuration, safe to share across tasks."""

    def __init__(
        self,
        clients: Clients,
        sinks: Sequence[Sink],
        *,
        allow: AllowList | None = None,
        readers: Readers | None = None,
        expiry_warning: timedelta = DEFAULT_EXPIRY_WARNING,
        find_mappings: bool = True,
        range_budget: float | None = DEFAULT_RANGE_BUDGET,
    ) -> None:
        """`range_budget`: seconds one attempt at a range (reading and delivering) may take; past
        it the attempt ends as `retry`, with what was done so far (None: no bound)."""
        if not sinks:
            raise ValueError("at least one sink is needed")
        self.clients = clients
        self.sinks = tuple(sinks)
        self.allow = allow or AllowList()  # deny by default: nothing is read unless allowed
        self.readers = readers or Readers(clients)
        self.expiry_warning = expiry_warning
        self.mappings = MappingFinder(clients) if find_mappings else None
        self.range_budget = range_budget
        self._shared: dict[str, _SharedRead] = {}  # range_id -> its read, while a failure naming it is worked

    async def deadline(self, failure: Failure) -> float:
        """When the range's first record leaves the stream: first arrival + the stream's retention.

        Epoch seconds; +inf when unknown (no arrival time, or one beyond the calendar), never
        (an inline payload), or the stream is not allowed (its retention is not asked:
        replayer never touches it).
        """
        start = failure.first_arrival or failure.timestamp
        if start is None or self.check(failure) is not None:
            return math.inf
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        try:
            retention = await self.readers.for_failure(failure).retention(failure)
        except Exception as exc:  # a reader that cannot say must not stop the range from being tried
            log.info("retention_unknown", stream_arn=failure.stream_arn, error=str(exc))
            retention = _DEFAULT_RETENTION
        if retention >= _NO_DEADLINE:
            return math.inf
        try:
            return (start + retention).timestamp()
        except OverflowError:  # an arrival time near year 9999: as good as unknown
            return math.inf

    def near_expiry(self, deadline: float, now: float | None = None) -> bool:
        """True when `deadline` is within `expiry_warning` from now, or past."""
        left = deadline - (time.time() if now is None else now)
        return left < self.expiry_warning.total_seconds()

    def check(self, failure: Failure) -> Outcome | None:
        """The rejection for a failure replayer must not read, or None when it may."""
        if not self.allow.allows(failure.stream_arn):
            why = "no --allow-stream is configured" if self.allow.empty else "it is not in --allow-stream"
            return rejected(failure, f"stream {failure.stream_arn} is not allowed: {why}")
        return None

    def _refusal(self, failure: Failure) -> Outcome | None:
        """`check`, with the refusal logged (the scheduler settles it without a worker)."""
        refusal = self.check(failure)
        if refusal is not None:
            log.warning("range_rejected", range_id=failure.range_id, reason=refusal.reason)
        return refusal

    async def replay(self, failure: Failure) -> Outcome:
        """Re-read the failure's range and hand it to every sink; never raises for AWS trouble."""
        with range_context(failure):
            refusal = self.check(failure)
            if refusal is not None:
                log.warning("range_rejected", reason=refusal.reason)
                return refusal
            deadline = await self.deadline(failure)
            near = self._warn_expiry(deadline)
            outcome = await self._attempt(failure)
            expires = datetime.fromtimestamp(deadline, UTC) if math.isfinite(deadline) else None
            return dataclasses.replace(outcome, deadline=expires, near_expiry=near)

    def _warn_expiry(self, deadline: float) -> bool:
        """A WARNING for a range worked on within `expiry_warning` of its deadline, or past it."""
        now = time.time()
        if not math.isfinite(deadline) or not self.near_expiry(deadline, now):
            return False
        when = datetime.fromtimestamp(deadline, UTC).isoformat()
        if deadline <= now:
            log.warning("range_past_deadline", deadline=when, seconds_past=int(now - deadline))
        else:
            log.warning(
                "range_near_expiry",
                deadline=when,
                seconds_left=int(deadline - now),
                expiry_warning_seconds=int(self.expiry_warning.total_seconds()),
            )
        return True

    async def _attempt(self, failure: Failure) -> Outcome:
        """`_read_and_deliver` within the range budget: past it, `retry` saying how far it got."""
        progress = _Progress()
        try:
            async with asyncio.timeout(self.range_budget):
                return await self._read_and_deliver(failure, progress)
        except TimeoutError:
            reason = (
                f"the attempt took longer than its {self.range_budget:g} s budget, {progress.stage}; "
                "it is retried later"
            )
            log.warning("range_over_budget", reason=reason, budget_seconds=self.range_budget)
            return Outcome(
                OutcomeKind.RETRY,
                failure,
                recovered=progress.recovered,
                reason=reason,
                delivered_to=tuple(progress.delivered),
            )

    async def _read_and_deliver(self, failure: Failure, progress: _Progress | None = None) -> Outcome:
        """The range's records read and handed to every sink: replayed, partial, expired or retry."""
        progress = progress or _Progress()
        if self.mappings is not None and failure.mapping is None:
            try:  # the mapping's filter decides what a repair function receives; the archive notes it
                failure = dataclasses.replace(failure, mapping=await self.mappings.find(failure))
            except _TRANSIENT as exc:
                log.warning("mapping_lookup_failed", error=str(exc))
                return Outcome(
                    OutcomeKind.RETRY, failure, reason=f"finding the event source mapping failed: {exc}"
                )
        try:
            result = await self._read(failure)
        except _TRANSIENT as exc:
            log.warning("read_failed", error=str(exc))
            return Outcome(OutcomeKind.RETRY, failure, reason=f"reading the stream failed: {exc}")
        if result.refused is not None:
            log.warning("range_refused", reason=result.refused, read=len(result.records))
            return rejected(failure, result.refused)
        if result.conflict is not None:  # nothing delivered: kept (quarantined) with the reason
            log.error("read_conflict", reason=result.conflict, read=len(result.records))
            return Outcome(
                OutcomeKind.CONFLICT, failure, recovered=len(result.records), reason=result.conflict,
                notes=result.notes,
            )  # fmt: skip
        if not result.complete:
            log.warning("read_incomplete", notes=list(result.notes), recovered=len(result.records))
            return Outcome(
                OutcomeKind.RETRY,
                failure,
                recovered=len(result.records),
                reason="the stream read did not finish",
                notes=result.notes,
            )
        progress.recovered = len(result.records)
        return await self._deliver(failure, result, progress)

    async def _read(self, failure: Failure) -> ReadResult:
        """The range read, and judged against this failure's own claims.

        Failures naming one range with different claims are different tickets (`claims_key`), so
        each gets its own verdict; their reads of the stream are shared: one at a time, a read
        complete for one claim serves the next one as far as it can tell (`judged`).
        """
        reader = self.readers.for_failure(failure)
        if failure.payload is not None:  # its own records: nothing to share
            return await reader.read(failure)
        shared = self._shared.get(failure.range_id)
        if shared is None:
            shared = self._shared[failure.range_id] = _SharedRead()
        shared.users += 1
        try:
            async with shared.lock:
                ceiling = self.readers.ceiling(failure)
                if shared.last is not None:
                    read_for, last = shared.last
                    mine = judged(last, read_for, failure, ceiling)
                    if mine is not None:
                        log.info("read_shared", records=len(mine.records), refused=mine.refused)
                        return mine
                result = await reader.read(failure)
                shared.last = (failure, result) if result.complete else None
                return result
        finally:
            shared.users -= 1
            if not shared.users:
                del self._shared[failure.range_id]

    async def _deliver(self, failure: Failure, result: ReadResult, progress: _Progress) -> Outcome:
        return await deliver(self.sinks, failure, result, progress)

    def scheduler(
        self,
        *,
        concurrency: int = 8,
        may_start: Callable[[], bool] | None = None,
        on_done: Callable[[Outcome], None] | None = None,
    ) -> Scheduler[Failure]:
        """The one scheduler, working failures through `replay`: deduplicated by `claims_key`,
        earliest expiry deadline first, not-allowed ranges refused without a worker."""
        return Scheduler(
            self.replay,
            key=claims_key,
            failure_of=_itself,
            concurrency=concurrency,
            deadline=self.deadline,
            may_start=may_start,
            refuse=self._refusal,
            on_done=on_done,
        )


async def deliver(
    sinks: Sequence[Sink], failure: Failure, result: ReadResult, progress: _Progress | None = None
) -> Outcome:
    """Hand `result` to every sink in order; the range's outcome (replayed, partial, expired, rejected,
    retry or conflict).

    Shared by `Replayer` (records read from the stream) and re-driving (records read back from an archive).
    """
    deliveries: list[Delivery] = []
    for sink in sinks:
        if progress is not None:
            progress.stage = f"while delivering {len(result.records)} records to {sink.uri}"
        try:
            deliveries.append(await sink.deliver(failure, result))
        except ArchiveConflict as exc:
            log.error("archive_conflict", sink=sink.uri, error=str(exc), archived_sha256=exc.archived,
                      attempt_sha256=exc.attempted)  # fmt: skip
            return Outcome(
                OutcomeKind.CONFLICT,
                failure,
                recovered=len(result.records),
                reason=str(exc),
                notes=result.notes,
                delivered_to=tuple(d.location for d in deliveries),
            )
        except _TRANSIENT as exc:
            if _permanent(exc):  # e.g. a name longer than the file system allows: no retry can cure it
                log.error("sink_refused", sink=sink.uri, error=str(exc))
                return rejected(failure, f"{sink.uri} cannot hold this range: {exc}")
            log.warning("sink_failed", sink=sink.uri, error=str(exc))
            return _sink_retry(failure, result, sink, exc, deliveries)
    report = next((d.report for d in deliveries if d.report), None)
    # An archive that kept more than this attempt read (an earlier attempt's records) decides what is lost.
    kept = next((d for d in deliveries if d.gaps is not None), None)
    gaps = kept.gaps if kept is not None and kept.gaps is not None else result.gaps
    recovered = kept.recovered if kept is not None and kept.recovered is not None else len(result.records)
    kind = OutcomeKind.REPLAYED
    if gaps:
        kind = OutcomeKind.PARTIAL if recovered else OutcomeKind.EXPIRED
        log.error("records_lost", recovered=recovered, missing=[g.describe() for g in gaps], report=report)
    for note in result.notes:
        log.info("range_note", note=note)
    log.info("range_done", outcome=kind.value, recovered=recovered)
    return Outcome(
        kind,
        failure,
        recovered=recovered,
        gaps=gaps,
        reason="; ".join(g.reason for g in gaps),
        notes=(*result.notes, *(note for d in deliveries for note in d.notes)),
        report_uri=report,
        delivered_to=tuple(d.location for d in deliveries),
    )


@dataclass(eq=False)
class _SharedRead:
    """One range's reading, shared by the failures naming it that are worked at the same time."""

    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    users: int = 0
    last: tuple[Failure, ReadResult] | None = None  # the last complete read, and whose claims it was for


@dataclass
class _Progress:
    """How far one attempt got: said when it runs out of budget."""

    stage: str = "while reading the stream"
    recovered: int = 0
    delivered: list[str] = dataclasses.field(default_factory=list)


def _permanent(exc: BaseException) -> bool:
    """True when `exc`, or what caused it, is an error no retry can cure."""
    seen: BaseException | None = exc
    for _ in range(8):  # causes chain a few levels deep at most
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in _PERMANENT_ERRNOS:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _sink_retry(
    failure: Failure, result: ReadResult, sink: Sink, exc: Exception, deliveries: Sequence[Delivery]
) -> Outcome:
    return Outcome(
        OutcomeKind.RETRY,
        failure,
        recovered=len(result.records),
        reason=str(exc) if str(exc).startswith(sink.uri) else f"{sink.uri}: {exc}",
        notes=result.notes,
        delivered_to=tuple(d.location for d in deliveries),
    )


def claims_key(failure: Failure) -> str:
    """The range and every claim its failure record makes about it (batch size, arrival times,
    origin, function, payload, ...): the scheduler's key. Failures naming one range share a
    ticket, and so an outcome, only when they claim the same; otherwise each is judged by its own
    claims (and they share the reading: `Replayer._read`)."""
    claims = {**failure.describe(), "mapping_uuid": failure.mapping_uuid}
    claims.pop("mapping", None)  # found by replayer, not claimed
    digest = hashlib.sha256(json.dumps(claims, sort_keys=True, default=str).encode())
    if failure.payload is not None:
        digest.update(json.dumps(list(failure.payload), sort_keys=True, default=str).encode())
    return f"{failure.range_id}/{digest.hexdigest()[:16]}"


def _itself(failure: Failure) -> Failure:
    return failure


def cap_ranges(failures: Iterable[Failure], limit: int) -> tuple[list[Failure], list[Outcome]]:
    """A message's distinct ranges to work on (the first `limit`), and a rejection for each one
    past them: a failure record names one range; a message naming many is not AWS's doing.
    A Kafka record names one range per partition of its batch (at most 1,000, bounded when
    parsed): its ranges count as one."""
    distinct = list({f.range_id: f for f in failures}.values())
    counted: dict[object, int] = {}
    for f in distinct:
        counted.setdefault(id(f.raw) if f.kind is StreamKind.KAFKA else f.range_id, len(counted))
    number = [counted[id(f.raw) if f.kind is StreamKind.KAFKA else f.range_id] for f in distinct]
    if len(counted) <= limit:
        return distinct, []
    reason = f"the message names {len(counted)} ranges, more than the {limit} a message may name"
    log.warning("too_many_ranges", ranges=len(counted), limit=limit)
    kept = [f for f, n in zip(distinct, number, strict=True) if n < limit]
    return kept, [rejected(f, reason) for f, n in zip(distinct, number, strict=True) if n >= limit]


def by_deadline(failures: Iterable[Failure]) -> list[Failure]:
    """Earliest first arrival first; unknown arrival times last. No AWS call: for plans (dry runs).

    Work itself is ordered by `Replayer.deadline`, which also knows each stream's retention.
    """
    return sorted(
        failures,
        key=lambda f: (f.first_arrival is None, f.first_arrival.timestamp() if f.first_arrival else 0.0),
    )


# ---- the one scheduler

T = TypeVar("T")

# The reason of a range the scheduler did not start because its may-start budget said no.
OUT_OF_TIME = "not started: too little time left to work on it"


@dataclass(eq=False)
class Ticket(Generic[T]):
    """One unit of work in a `Scheduler`; every submission of the same key shares it.

    `outcome` resolves to the range's `Outcome`; it is cancelled when the scheduler is
    closed before the work finished (the work then counts as not done).
    """

    key: str
    item: T
    deadline: float
    lane: Hashable | None
    outcome: asyncio.Future[Outcome]
    order: int = 0
    started: float | None = None  # time.monotonic() when its attempt began

    @property
    def done(self) -> bool:
        return self.outcome.done()

    def result(self) -> Outcome | None:
        """The outcome, or None when the work was cancelled or is not finished."""
        if not self.outcome.done() or self.outcome.cancelled():
            return None
        return self.outcome.result()

    def running_for(self, now: float | None = None) -> float:
        """Seconds its attempt has been running (0 when not started or finished)."""
        if self.started is None or self.outcome.done():
            return 0.0
        return (time.monotonic() if now is None else now) - self.started


def _no_lane(item: object) -> Hashable | None:
    return None


class Scheduler(Generic[T]):
    """The one scheduler of replayer: every source and command works ranges through it.

    - a key named twice while pending or running is worked once: every submission of it
      gets the same `Ticket` (so the same outcome);
    - earliest expiry deadline first (`deadline(item)`, epoch seconds; +inf when unknown),
      submission order among equal deadlines;
    - at most `concurrency` at once, and at most one at a time per `lane(item)` (e.g. the
      shard, for work that must go in sequence order);
    - `may_start()` is asked before each item starts (Lambda: time left); when it says
      no, the item's outcome is `retry` with reason `OUT_OF_TIME`;
    - `refuse(item)` may settle an item at submission, without a worker (not allowed);
    - the crash guard: an exception from `work` becomes a `retry` outcome, logged.

    Streaming use: `start()`, `await submit(...)` as work arrives, `await close(...)`.
    Batch use: `await run(items)`.
    """

    def __init__(
        self,
        work: Callable[[T], Awaitable[Outcome]],
        *,
        key: Callable[[T], str],
        failure_of: Callable[[T], Failure | None],
        concurrency: int = 8,
        deadline: Callable[[T], Awaitable[float]] | None = None,
        lane: Callable[[T], Hashable | None] = _no_lane,
        may_start: Callable[[], bool] | None = None,
        refuse: Callable[[T], Outcome | None] | None = None,
        on_done: Callable[[Outcome], None] | None = None,
    ) -> None:
        self._work = work
        self._key = key
        self._failure_of = failure_of
        self.concurrency = max(1, concurrency)
        self._deadline = deadline
        self._lane = lane
        self._may_start = may_start
        self._refuse = refuse
        self._on_done = on_done
        self._pending: dict[str, Ticket[T]] = {}  # queued or running, by key
        self._heap: list[tuple[float, int, Ticket[T]]] = []
        self._parked: dict[Hashable, deque[Ticket[T]]] = {}  # waiting for their lane
        self._busy_lanes: set[Hashable] = set()
        self._order = itertools.count()
        self._wake = asyncio.Condition()
        self._workers: list[asyncio.Task[None]] = []
        self._accepting = True  # False: workers exit once nothing is queued
        self._closing = False  # True: workers take nothing new
        self.in_flight = 0
        self.peak_in_flight = 0

    # ---- submitting

    def start(self) -> None:
        """Start the workers (idempotent; needs a running event loop)."""
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._worker(), name=f"scheduler-worker-{i}")
                for i in range(self.concurrency)
            ]

    async def submit(self, item: T) -> Ticket[T]:
        """Queue one item (or join the pending ticket of its key)."""
        return (await self.submit_many([item]))[0]

    async def submit_many(self, items: Iterable[T]) -> list[Ticket[T]]:
        """Queue items, one ticket per item (shared between items of the same key).

        Every deadline is known before any item is queued, so the earliest of the batch goes first.
        """
        keyed = [(self._key(i), i) for i in items]  # each key made once (a claims digest)
        fresh = {key: i for key, i in keyed if key not in self._pending}
        deadlines = dict(
            zip(
                fresh, await asyncio.gather(*(self._deadline_of(k, i) for k, i in fresh.items())), strict=True
            )
        )
        tickets: list[Ticket[T]] = []
        refused: list[tuple[Ticket[T], Outcome]] = []
        async with self._wake:
            for key, item in keyed:
                ticket = self._pending.get(key)
                if ticket is None:
                    ticket = self._ticket(key, item, deadlines.get(key, math.inf))
                    refusal = self._refuse(item) if self._refuse is not None else None
                    if refusal is not None:
                        ticket.outcome.set_result(refusal)
                        refused.append((ticket, refusal))
                    else:
                        self._pending[key] = ticket
                        heapq.heappush(self._heap, (ticket.deadline, ticket.order, ticket))
                tickets.append(ticket)
            self._wake.notify_all()
        for _, refusal in refused:
            self._report(refusal)
        return tickets

    def _ticket(self, key: str, item: T, deadline: float) -> Ticket[T]:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        return Ticket(key, item, deadline, self._lane(item), future, order=next(self._order))

    async def _deadline_of(self, key: str, item: T) -> float:
        if self._deadline is None:
            return math.inf
        try:
            return await self._deadline(item)
        except Exception as exc:  # an unknown deadline must not keep the range from being worked
            log.warning("deadline_unknown", key=key, error=str(exc))
            return math.inf

    # ---- what is held

    def pending(self) -> list[Ticket[T]]:
        """Tickets queued or running."""
        return list(self._pending.values())

    @property
    def healthy(self) -> bool:
        """False once a worker has stopped on an error (a bug: the crash guard catches the rest)."""
        return not any(w.done() and not w.cancelled() and w.exception() for w in self._workers)

    # ---- batch mode and stopping

    async def run(self, items: Iterable[T], *, within: float | None = None) -> list[Ticket[T]]:
        """Batch mode: work every item, then stop; one ticket per item, in submission order.

        After `within` seconds what is still running is cancelled (its ticket holds no outcome).
        """
        self.start()
        tickets = await self.submit_many(items)
        await self.close(finish_queued=True, within=within)
        return tickets

    async def close(self, *, finish_queued: bool, within: float | None = None) -> None:
        """Take no more submissions; finish what runs (and, with `finish_queued`, what is
        queued) for at most `within` seconds; then cancel the rest. Idempotent."""
        async with self._wake:
            self._accepting = False
            self._closing = self._closing or not finish_queued
            self._wake.notify_all()
        running = [w for w in self._workers if not w.done()]
        if running:
            _, late = await asyncio.wait(running, timeout=within)
            for task in late:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        for ticket in list(self._pending.values()):
            ticket.outcome.cancel()
        self._pending.clear()
        self._heap.clear()
        self._parked.clear()
        for worker in self._workers:
            error = None if worker.cancelled() else worker.exception()
            if error is not None:
                raise error

    # ---- working

    async def _next(self) -> Ticket[T] | None:
        async with self._wake:
            while True:
                if self._closing:
                    return None
                while self._heap:
                    _, _, ticket = heapq.heappop(self._heap)
                    if ticket.outcome.done():
                        continue
                    if ticket.lane is not None and ticket.lane in self._busy_lanes:
                        self._parked.setdefault(ticket.lane, deque()).append(ticket)
                        continue
                    if ticket.lane is not None:
                        self._busy_lanes.add(ticket.lane)
                    return ticket
                if not self._accepting and not self._parked:
                    return None  # nothing queued and nothing can come
                await self._wake.wait()

    async def _release(self, ticket: Ticket[T]) -> None:
        async with self._wake:
            if ticket.lane is not None:
                self._busy_lanes.discard(ticket.lane)
                parked = self._parked.get(ticket.lane)
                if parked:
                    nxt = parked.popleft()
                    heapq.heappush(self._heap, (nxt.deadline, nxt.order, nxt))
                    if not parked:
                        del self._parked[ticket.lane]
            self._wake.notify_all()

    async def _worker(self) -> None:
        while (ticket := await self._next()) is not None:
            try:
                outcome = await self._attempt(ticket)
                if self._pending.get(ticket.key) is ticket:
                    del self._pending[ticket.key]
                if not ticket.outcome.done():
                    ticket.outcome.set_result(outcome)
                self._report(outcome)
            finally:
                await asyncio.shield(self._release(ticket))

    async def _attempt(self, ticket: Ticket[T]) -> Outcome:
        failure = self._failure_of(ticket.item)
        if self._may_start is not None and not self._may_start():
            log.warning("range_not_started", key=ticket.key, reason=OUT_OF_TIME)
            return Outcome(OutcomeKind.RETRY, failure, reason=OUT_OF_TIME)
        ticket.started = time.monotonic()
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            return await self._work(ticket.item)
        except Exception as exc:  # a bug or an unsupported stream: the range is retried, never dropped
            log.exception("replay_crashed", key=ticket.key)
            return Outcome(
                OutcomeKind.RETRY, failure, reason=f"unexpected error: {type(exc).__name__}: {exc}"
            )
        finally:
            self.in_flight -= 1

    def _report(self, outcome: Outcome) -> None:
        if self._on_done is not None:
            self._on_done(outcome)
