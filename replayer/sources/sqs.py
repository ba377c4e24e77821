"""The SQS service: receive, hand ranges to the one scheduler, keep messages invisible, settle.

One `Service` runs on one event loop: a receiver (long polls while there is room), the
scheduler's workers (earliest expiry deadline first, deduplicated by range), one task
per held message (waits for its ranges' outcomes, then settles it with the one rule),
and a heartbeat (extends the visibility of every held message, so a slow range is never
handed to a second worker). In burst mode (`replayer drain`) the receiver stops at the
first empty receive and the service exits once what it holds is settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import math
import os
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from replayer import logs
from replayer.aws import SqsQueue
from replayer.config import Settings
from replayer.core import Replayer, Ticket, cap_ranges, rejected
from replayer.errors import ParseError
from replayer.model import Failure, Outcome
from replayer.observe import MESSAGE_EVENTS, Recorder
from replayer.parse import Message, parse_message, queue_message
from replayer.settle import Action, Settler
from replayer.settle.quarantine import Quarantine

__all__ = ["Job", "Service", "ServiceSummary"]

log = logs.get_logger("replayer.service")

_AWS_TROUBLE = (ClientError, BotoCoreError, OSError, asyncio.TimeoutError)


@dataclass(eq=False)
class Job:
    """One received SQS message and the tickets of the ranges it names (one per range)."""

    message: Message
    tickets: list[Ticket[Failure]] = field(default_factory=list)
    refused: list[Outcome] = field(default_factory=list)  # ranges past the cap: never read
    settling: bool = False

    def overdue(self, budget: float) -> bool:
        """True when one of its ranges has run past the range budget (and then some)."""
        return any(t.running_for() > budget for t in self.tickets)

    @property
    def message_id(self) -> str:
        return self.message.id

    @property
    def deadline(self) -> float:
        """The earliest expiry deadline among its ranges (epoch seconds; +inf when unknown)."""
        return min((t.deadline for t in self.tickets), default=math.inf)


class _ReceiveFailures:
    """Failed receives, logged once while the same error repeats (then once more when receiving works
    again, with how many there were); a failure to log (no descriptor left) is swallowed: neither can
    end the receive loop."""

    def __init__(self) -> None:
        self.error: str | None = None
        self.count = 0

    def failed(self, exc: Exception, retry_in: float) -> None:
        error = f"{type(exc).__name__}: {exc}"
        self.count += 1
        if error == self.error:
            return
        self.error = error
        _log_safely("receive_failed", error=error, retry_in=retry_in)

    def recovered(self) -> None:
        if self.count:
            _log_safely("receive_recovered", failed_receives=self.count, last_error=self.error)
        self.error, self.count = None, 0


def _log_safely(event: str, **values: Any) -> None:
    try:
        log.warning(event, **values)
    except Exception:  # the log line costs a descriptor or an import there is none left for
        with contextlib.suppress(Exception):
            os.write(2, b'{"event": "%s", "note": "logging failed"}\n' % event.encode())


KEPT_OUTCOMES = 1000  # outcomes a `run` keeps for its final summary
RECEIVES_AT_ONCE = 4  # ReceiveMessage calls in flight at once while the queue is deep


@dataclass
class ServiceSummary:
    """What a service run did so far: every range's outcome, and message counts by event."""

    recorder: Recorder
    outcomes: deque[Outcome] = field(default_factory=deque)  # `run` keeps the latest KEPT_OUTCOMES
    peak_in_flight: int = 0
    counted_before: Counter[str] = field(default_factory=Counter)  # the recorder's counts at start

    @property
    def messages(self) -> dict[str, int]:
        """`received`, `deleted`, `retried`, `quarantined`, `left`, `released` (non-zero ones)."""
        counts = self.recorder.tally.counts
        return {
            event: n
            for event in MESSAGE_EVENTS
            if (n := counts[f"messages_{event}"] - self.counted_before[f"messages_{event}"])
        }


class Service:
    """Consumes `settings.queue` until stopped (or, with `burst`, until it is empty).

    `on_outcome` is called with each range's outcome, `on_settled` with each message's
    action once it is settled (both from the event loop; keep them quick).
    """

    def __init__(
        self,
        settings: Settings,
        replayer: Replayer,
        *,
        recorder: Recorder,
        quarantine: Quarantine | None = None,
        burst: bool = False,
        on_outcome: Callable[[Outcome], None] | None = None,
        on_settled: Callable[[Job, Action], None] | None = None,
    ) -> None:
        if settings.queue is None:
            raise ValueError("settings.queue is required")
        self.settings = settings
        self.queue_url: str = settings.queue
        self.replayer = replayer
        self.recorder = recorder
        self.burst = burst
        self.on_outcome = on_outcome
        self.on_settled = on_settled
        self.settler = Settler.of(settings, recorder=recorder, quarantine=quarantine, deletes=True)
        self.scheduler = replayer.scheduler(concurrency=settings.concurrency, on_done=self._record)
        # A drain reports every range; a service running for weeks only its latest (counts are kept whole).
        self.summary = ServiceSummary(recorder, deque(maxlen=None if burst else KEPT_OUTCOMES))
        self.seconds_to_nearest_expiry = math.inf  # among the ranges held, not yet saved
        self.ready = False  # the queue answered a receive, and the service is not stopping
        self.stopping = False
        self._stop = asyncio.Event()
        self._held: dict[int, Job] = {}
        self._job_ids = itertools.count()
        self._holding: set[asyncio.Task[None]] = set()  # one task per held message
        self._room = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._seen: set[str] = set()  # burst mode: message ids already worked on in this run
        self._deep = False  # the last receive came back full: receive for all the room at once

    # ---- public

    def stop(self) -> None:
        """Stop receiving; in-flight ranges get `grace_seconds` to finish (safe from a signal handler)."""
        self._stop.set()

    @property
    def alive(self) -> bool:
        tasks_ok = not any(t.done() and not t.cancelled() and t.exception() for t in self._tasks)
        return tasks_ok and self.scheduler.healthy

    @property
    def held(self) -> int:
        return len(self._held)

    async def run(self) -> ServiceSummary:
        """Work until `stop()` (or, in burst mode, until the queue is empty); then release what is held."""
        queue = await SqsQueue.open(self.replayer.clients, self.queue_url)
        self.summary.counted_before = Counter(self.recorder.tally.counts)
        self.scheduler.start()
        heartbeat = asyncio.create_task(self._heartbeat(queue), name="heartbeat")
        receiver = asyncio.create_task(self._receive_loop(queue), name="receiver")
        stopped = asyncio.create_task(self._stop.wait(), name="stop")
        self._tasks = [heartbeat, receiver]
        try:
            await asyncio.wait({receiver, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if receiver.done() and not self._stop.is_set():
                receiver.result()  # a crashed receiver is a bug: let it show
                while not self._stop.is_set() and self._holding:
                    await asyncio.wait({*self._holding, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await self._shutdown(receiver, heartbeat, stopped, queue)
        return self.summary

    # ---- receiving

    async def _until_stopped(self, awaitable: Awaitable[Any], at_most: float | None = None) -> None:
        """Wait for `awaitable`, the stop signal or `at_most` seconds, whichever comes first."""
        task = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stop}, timeout=at_most, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (task, stop):
                t.cancel()

    async def _receive_loop(self, queue: SqsQueue) -> None:
        capacity = self.settings.concurrency + self.settings.prefetch
        backoff = 1.0
        self.ready = True  # until a receive fails: the first long poll may wait 20 s for nothing
        # Burst mode, once messages came: receives are short polls, and the first empty one ends
        # the drain when SQS also counts none waiting. A long poll's last empty wait would cost
        # its whole --wait-seconds after the work is done; a short poll's false empty (it asks
        # only some of SQS's servers) is caught by the count, and at worst a message is left for
        # the next drain, never lost.
        traffic = False
        failing = _ReceiveFailures()
        while not self._stop.is_set():
            room = capacity - len(self._held)
            if room <= 0:
                self._room.clear()
                await self._until_stopped(self._room.wait())
                continue
            try:
                messages = await self._receive(queue, room, 0 if traffic else self.settings.wait_seconds)
                if self.burst and not messages and traffic and await queue.visible() > 0:
                    traffic = False  # a short poll's false empty: long-poll again
                    continue
            except Exception as exc:  # AWS trouble, or none left of a resource (EMFILE): never the loop's end
                self.ready = False
                failing.failed(exc, backoff)
                await self._until_stopped(self._stop.wait(), at_most=backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            failing.recovered()
            backoff = 1.0
            self.ready = not self._stop.is_set()
            if not messages and self.burst:
                return
            if self.burst:
                messages = await self._skip_seen(messages, queue)
                if not messages:
                    return  # only messages this drain already settled came back: it is done
                traffic = True
            if messages:
                await self._accept(messages, queue)

    async def _receive(self, queue: SqsQueue, room: int, wait_seconds: int) -> list[dict[str, Any]]:
        """Up to `room` messages. While the queue is deep (the last receive came back full), one
        ReceiveMessage per ten messages of room, at once (up to RECEIVES_AT_ONCE): the workers are
        fed in one round trip, not one per ten messages. The extra receives are short polls (a deep
        queue answers at once); a receive that fails while others bring messages is logged, not
        raised (its messages, if any, come back after their visibility timeout)."""
        calls = min(RECEIVES_AT_ONCE, -(-room // 10)) if self._deep else 1
        asks = [min(10, room - 10 * i) for i in range(calls)]
        visibility = self.settings.visibility_timeout
        results = await asyncio.gather(
            *(
                queue.receive(
                    at_most=n, wait_seconds=wait_seconds if i == 0 else 0, visibility_timeout=visibility
                )
                for i, n in enumerate(asks)
            ),
            return_exceptions=True,
        )
        messages = [m for r in results if isinstance(r, list) for m in r]
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors and (not messages or not all(isinstance(e, Exception) for e in errors)):
            raise errors[0]
        for error in errors:
            log.warning("receive_failed", error=str(error), receives=calls)
        self._deep = any(isinstance(r, list) and len(r) >= 10 for r in results)
        return messages

    async def _skip_seen(self, messages: list[dict[str, Any]], queue: SqsQueue) -> list[dict[str, Any]]:
        """Burst mode works each message once: one that comes back (a short retry delay) is put back."""
        seen = [m for m in messages if m.get("MessageId") in self._seen]
        if seen:
            async with queue.visibility_lock:
                await self._change_visibility(
                    queue, [str(m["ReceiptHandle"]) for m in seen], 0, failed_event="put_back_failed"
                )
        for m in messages:
            self._seen.add(str(m.get("MessageId")))
        return [m for m in messages if m not in seen]

    async def _accept(self, raw_messages: list[dict[str, Any]], queue: SqsQueue) -> None:
        self.recorder.message("received", len(raw_messages))
        jobs: list[tuple[Job, list[Failure]]] = []
        for raw in raw_messages:
            job = Job(queue_message(raw))
            self._held[next(self._job_ids)] = job
            failures: list[Failure] = []
            try:
                failures, job.refused = cap_ranges(
                    parse_message(job.message.body, path="$"), self.settings.max_ranges_per_message
                )
            except ParseError as exc:
                job.message = dataclasses.replace(job.message, parse_error=str(exc))
                self._record(rejected(None, f"message {job.message_id}: {exc}"))
            for refusal in job.refused:
                self._record(refusal)
            jobs.append((job, failures))
        # Every range of the batch at once: the earliest deadline of the batch goes first.
        tickets = iter(await self.scheduler.submit_many(f for _, failures in jobs for f in failures))
        for job, failures in jobs:
            for _ in failures:
                ticket = next(tickets)
                if all(t is not ticket for t in job.tickets):  # a range named twice is waited for once
                    job.tickets.append(ticket)
            task = asyncio.create_task(self._hold(job, queue), name=f"message-{job.message_id}")
            self._holding.add(task)
            task.add_done_callback(self._holding.discard)
        self._update_gauges()

    # ---- settling

    async def _hold(self, job: Job, queue: SqsQueue) -> None:
        """Wait for the job's ranges, then settle it (cancelled at shutdown: it is released)."""
        outcomes = [await asyncio.shield(t.outcome) for t in job.tickets] + job.refused
        job.settling = True
        decision = await self.settler.settle(job.message, outcomes, queue=queue, deadline=job.deadline)
        self._forget(job)
        if self.on_settled is not None:
            self.on_settled(job, decision.action)

    def _record(self, outcome: Outcome) -> None:
        self.recorder.outcome(outcome)
        self.summary.outcomes.append(outcome)
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        self._update_gauges()

    def _forget(self, job: Job) -> None:
        for key, held in list(self._held.items()):
            if held is job:
                del self._held[key]
        self._room.set()
        self._update_gauges()

    # ---- keeping messages invisible

    async def _heartbeat(self, queue: SqsQueue) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            # Past the range budget (the attempt should have ended) a message is no longer kept
            # invisible: it comes back, its receive count grows, and a hopeless one reaches the DLQ.
            overdue = self.settings.range_budget_seconds + self.settings.visibility_timeout
            async with queue.visibility_lock:  # a message settling meanwhile is left to its settle
                receipts = [
                    j.message.receipt
                    for j in self._held.values()
                    if not j.settling and not j.overdue(overdue)
                ]
                await self._change_visibility(
                    queue,
                    [r for r in receipts if r is not None],
                    self.settings.visibility_timeout,
                    failed_event="heartbeat_failed",
                )
            self._update_gauges()

    async def _change_visibility(
        self, queue: SqsQueue, receipts: Iterable[str], seconds: int, *, failed_event: str
    ) -> int:
        """ChangeMessageVisibility for `receipts`, ten at a time; how many succeeded."""
        receipts = list(receipts)
        ok = 0
        for start in range(0, len(receipts), 10):
            chunk = receipts[start : start + 10]
            try:
                failed = await queue.change_visibility_batch(chunk, seconds)
            except _AWS_TROUBLE as exc:
                log.warning(failed_event, error=str(exc), messages=len(chunk))
                continue
            ok += len(chunk) - len(failed)
            for _, code in failed:
                log.warning(failed_event, error=code)
        return ok

    def _update_gauges(self) -> None:
        now = time.time()
        deadlines = [t.deadline for t in self.scheduler.pending()]
        nearest = min(deadlines, default=math.inf)
        self.summary.peak_in_flight = self.scheduler.peak_in_flight
        self.seconds_to_nearest_expiry = nearest - now if math.isfinite(nearest) else math.inf
        self.recorder.gauges(
            in_flight=self.scheduler.in_flight,
            held=len(self._held),
            nearest_expiry=nearest - now if math.isfinite(nearest) else math.inf,
            near_expiry=sum(1 for d in deadlines if self.replayer.near_expiry(d, now)),
        )

    def status(self) -> dict[str, Any]:
        """This process's part of /status: messages held, ranges in flight, time to the nearest expiry."""
        seconds = self.seconds_to_nearest_expiry
        return {
            "held": len(self._held),
            "in_flight": self.scheduler.in_flight,
            "seconds_to_nearest_expiry": seconds if math.isfinite(seconds) else None,
        }

    # ---- stopping

    async def _shutdown(
        self,
        receiver: asyncio.Task[None],
        heartbeat: asyncio.Task[None],
        stopped: asyncio.Task[Any],
        queue: SqsQueue,
    ) -> None:
        self.ready = False
        self.stopping = True
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)
        started = time.monotonic()
        if self.scheduler.in_flight:
            log.info(
                "finishing_in_flight",
                ranges=self.scheduler.in_flight,
                grace_seconds=self.settings.grace_seconds,
            )
        try:
            # Ranges running get the grace period; ranges not started are not started.
            await self.scheduler.close(finish_queued=False, within=self.settings.grace_seconds)
        finally:
            if self._holding:  # settling what finished (bounded by each AWS call's own deadline)
                left = max(0.0, self.settings.grace_seconds - (time.monotonic() - started))
                _, late = await asyncio.wait(set(self._holding), timeout=left)
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
            heartbeat.cancel()
            stopped.cancel()
            await asyncio.gather(heartbeat, stopped, return_exceptions=True)
            unfinished = [j.message.receipt for j in self._held.values() if not j.settling]
            if unfinished:
                async with queue.visibility_lock:
                    released = await self._change_visibility(
                        queue, [r for r in unfinished if r is not None], 0, failed_event="release_failed"
                    )
                self.recorder.message("released", released)
                log.warning("released_unfinished", messages=len(unfinished), released=released)
            self._held.clear()
            self._update_gauges()
