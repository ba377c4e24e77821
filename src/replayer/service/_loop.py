"""The SQS consumer: receive, schedule ranges earliest-deadline-first, keep messages invisible, settle.

One `Service` runs three kinds of tasks on one event loop: a receiver (long polls while
there is room), `concurrency` workers (each takes the held range with the earliest
expiry deadline and hands it to the shared core), and a heartbeat (extends the
visibility of every held message, so a slow range is never handed to a second worker).
In burst mode (`replayer drain`) the receiver stops at the first empty receive and the
service exits once what it holds is settled.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from replayer.config import Settings, queue_region
from replayer.core import Replayer, rejected
from replayer.errors import ParseError
from replayer.model import Failure, Outcome, OutcomeKind
from replayer.parse import parse_message
from replayer.service._metrics import Recorder
from replayer.service._quarantine import Quarantine, QuarantineError
from replayer.service._settle import Action, Decision, decide, retry_delay

__all__ = ["Job", "Service", "ServiceSummary", "deadline_of"]

log = structlog.get_logger("replayer.service")

_AWS_TROUBLE = (ClientError, BotoCoreError, OSError, asyncio.TimeoutError)


async def deadline_of(replayer: Replayer, failure: Failure) -> float:
    """When the range's first record leaves the stream (epoch seconds; +inf when unknown/never)."""
    return await replayer.deadline(failure)


@dataclass(eq=False)
class Job:
    """One received SQS message and the outcomes of the ranges it names."""

    message_id: str
    receipt: str
    body: str
    receive_count: int
    range_ids: list[str] = field(default_factory=list)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    parse_error: str | None = None
    deadline: float = math.inf
    settling: bool = False

    @property
    def complete(self) -> bool:
        return len(self.outcomes) == len(self.range_ids)

    def ordered_outcomes(self) -> list[Outcome]:
        return [self.outcomes[r] for r in self.range_ids]


@dataclass(eq=False)
class _Work:
    """A range waiting for, or in, a worker; every job naming it gets its outcome."""

    failure: Failure
    deadline: float
    jobs: list[Job]
    started: bool = False


@dataclass
class ServiceSummary:
    outcomes: list[Outcome] = field(default_factory=list)
    messages: dict[str, int] = field(default_factory=dict)
    peak_in_flight: int = 0


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
        self.quarantine = quarantine
        self.burst = burst
        self.on_outcome = on_outcome
        self.on_settled = on_settled
        self.summary = ServiceSummary()
        self.ready = False  # the queue answered a receive, and the service is not stopping
        self.stopping = False
        self._stop = asyncio.Event()
        self._held: dict[int, Job] = {}
        self._job_ids = itertools.count()
        self._works: dict[str, _Work] = {}
        self._heap: list[tuple[float, int, _Work]] = []
        self._order = itertools.count()
        self._wake = asyncio.Condition()
        self._room = asyncio.Event()
        self._visibility = asyncio.Lock()  # heartbeats never land after a retry's own visibility change
        self._in_flight = 0
        self._receiving_done = False
        self._closing = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._seen: set[str] = set()  # burst mode: message ids already worked on in this run

    # ---- public

    def stop(self) -> None:
        """Stop receiving; in-flight ranges get `grace_seconds` to finish (safe from a signal handler)."""
        self._stop.set()

    @property
    def alive(self) -> bool:
        return not any(t.done() and not t.cancelled() and t.exception() for t in self._tasks)

    @property
    def held(self) -> int:
        return len(self._held)

    async def run(self) -> ServiceSummary:
        """Work until `stop()` (or, in burst mode, until the queue is empty); then release what is held."""
        sqs = await self._sqs()
        workers = [
            asyncio.create_task(self._worker(), name=f"worker-{i}") for i in range(self.settings.concurrency)
        ]
        heartbeat = asyncio.create_task(self._heartbeat(sqs), name="heartbeat")
        receiver = asyncio.create_task(self._receive_loop(sqs), name="receiver")
        stopped = asyncio.create_task(self._stop.wait(), name="stop")
        self._tasks = [*workers, heartbeat, receiver]
        try:
            await asyncio.wait({receiver, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if receiver.done() and not self._stop.is_set():
                receiver.result()  # a crashed receiver is a bug: let it show
                async with self._wake:
                    self._receiving_done = True
                    self._wake.notify_all()
                while not self._stop.is_set() and not all(w.done() for w in workers):
                    await asyncio.wait({*workers, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await self._shutdown(receiver, workers, heartbeat, stopped, sqs)
        return self.summary

    # ---- receiving

    async def _sqs(self) -> Any:
        return await self.replayer.clients.get("sqs", queue_region(self.queue_url))

    async def _until_stopped(self, awaitable: Awaitable[Any], at_most: float | None = None) -> None:
        """Wait for `awaitable`, the stop signal or `at_most` seconds, whichever comes first."""
        task = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stop}, timeout=at_most, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (task, stop):
                t.cancel()

    async def _receive_loop(self, sqs: Any) -> None:
        capacity = self.settings.concurrency + self.settings.prefetch
        backoff = 1.0
        self.ready = True  # until a receive fails: the first long poll may wait 20 s for nothing
        while not self._stop.is_set():
            room = capacity - len(self._held)
            if room <= 0:
                self._room.clear()
                await self._until_stopped(self._room.wait())
                continue
            try:
                answer = await sqs.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=min(10, room),
                    WaitTimeSeconds=self.settings.wait_seconds,
                    VisibilityTimeout=self.settings.visibility_timeout,
                    MessageSystemAttributeNames=["ApproximateReceiveCount"],
                )
            except _AWS_TROUBLE as exc:
                self.ready = False
                log.warning("receive_failed", error=str(exc), retry_in=backoff)
                await self._until_stopped(self._stop.wait(), at_most=backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 1.0
            self.ready = not self._stop.is_set()
            messages = answer.get("Messages") or []
            if not messages and self.burst:
                return
            if self.burst:
                messages = await self._skip_seen(messages, sqs)
                if not messages:
                    return  # only messages this drain already settled came back: it is done
            if messages:
                await self._accept(messages, sqs)

    async def _skip_seen(self, messages: list[dict[str, Any]], sqs: Any) -> list[dict[str, Any]]:
        """Burst mode works each message once: one that comes back (a short retry delay) is put back."""
        seen = [m for m in messages if m.get("MessageId") in self._seen]
        if seen:
            again = [Job(str(m.get("MessageId")), str(m["ReceiptHandle"]), "", 1) for m in seen]
            async with self._visibility:
                await self._change_visibility(sqs, again, 0, "put_back")
        for m in messages:
            self._seen.add(str(m.get("MessageId")))
        return [m for m in messages if m not in seen]

    async def _accept(self, messages: list[dict[str, Any]], sqs: Any) -> None:
        self.recorder.message("received", len(messages))
        self._count("received", len(messages))
        jobs: list[tuple[Job, list[Failure]]] = []
        for message in messages:
            job = Job(
                message_id=str(message.get("MessageId", "")),
                receipt=str(message["ReceiptHandle"]),
                body=str(message.get("Body", "")),
                receive_count=_int(message.get("Attributes", {}).get("ApproximateReceiveCount"), 1),
            )
            self._held[next(self._job_ids)] = job
            failures: list[Failure] = []
            try:
                failures = parse_message(job.body, path="$")
            except ParseError as exc:
                job.parse_error = str(exc)
                self._record(rejected(None, f"message {job.message_id}: {exc}"))
            jobs.append((job, failures))
        # Every deadline first, then every push: the earliest range of the batch goes first.
        unique = {f.range_id: f for _, failures in jobs for f in failures}
        deadlines = dict(
            zip(
                unique,
                await asyncio.gather(*(deadline_of(self.replayer, f) for f in unique.values())),
                strict=True,
            )
        )
        to_settle: list[Job] = []
        async with self._wake:
            for job, failures in jobs:
                for failure in failures:
                    rid = failure.range_id
                    if rid in job.range_ids:
                        continue  # one message naming a range twice waits for it once
                    job.range_ids.append(rid)
                    job.deadline = min(job.deadline, deadlines[rid])
                    refusal = self.replayer.check(failure)
                    if refusal is not None:  # not allowed: never read, so never scheduled
                        job.outcomes[rid] = refusal
                        self._record(refusal)
                    elif rid in self._works:
                        self._works[rid].jobs.append(job)
                    else:
                        work = _Work(failure, deadlines[rid], [job])
                        self._works[rid] = work
                        heapq.heappush(self._heap, (work.deadline, next(self._order), work))
                if job.complete:
                    to_settle.append(job)
            self._wake.notify_all()
        self._update_gauges()
        for job in to_settle:
            await self._settle(job, sqs)

    # ---- working

    async def _next_work(self) -> _Work | None:
        async with self._wake:
            while True:
                if self._closing:
                    return None
                if self._heap:
                    _, _, work = heapq.heappop(self._heap)
                    work.started = True
                    return work
                if self._receiving_done:
                    return None
                await self._wake.wait()

    async def _worker(self) -> None:
        sqs = await self._sqs()
        while (work := await self._next_work()) is not None:
            outcome = await self._replay(work.failure)
            self._works.pop(work.failure.range_id, None)
            self._record(outcome)
            for job in work.jobs:
                job.outcomes[work.failure.range_id] = outcome
                if job.complete and not job.settling:
                    await self._settle(job, sqs)
            self._update_gauges()

    async def _replay(self, failure: Failure) -> Outcome:
        self._in_flight += 1
        self.summary.peak_in_flight = max(self.summary.peak_in_flight, self._in_flight)
        self._update_gauges()
        try:
            return await self.replayer.replay(failure)
        except Exception as exc:  # a bug or an unsupported stream: the message goes back, never away
            log.exception("replay_crashed", range_id=failure.range_id)
            return Outcome(
                OutcomeKind.RETRY, failure, reason=f"unexpected error: {type(exc).__name__}: {exc}"
            )
        finally:
            self._in_flight -= 1

    def _record(self, outcome: Outcome) -> None:
        self.recorder.outcome(outcome)
        self.summary.outcomes.append(outcome)
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    def _count(self, event: str, n: int = 1) -> None:
        self.summary.messages[event] = self.summary.messages.get(event, 0) + n

    # ---- settling

    async def _settle(self, job: Job, sqs: Any) -> None:
        job.settling = True
        decision = decide(
            job.ordered_outcomes(), parse_error=job.parse_error, can_quarantine=self.quarantine is not None
        )
        with structlog.contextvars.bound_contextvars(message_id=job.message_id):
            action = await self._act(job, decision, sqs)
        self._forget(job)
        if self.on_settled is not None:
            self.on_settled(job, action)

    async def _act(self, job: Job, decision: Decision, sqs: Any) -> Action:
        action = decision.action
        if action is Action.QUARANTINE:
            assert self.quarantine is not None
            try:
                where = await self.quarantine.put(job.body, decision.reason, job.message_id, self.queue_url)
            except QuarantineError as exc:
                log.error("quarantine_failed", error=str(exc), reason=decision.reason)
                action = Action.RETRY
            else:
                log.warning("message_quarantined", reason=decision.reason, quarantine=where)
                self.recorder.message("quarantined")
                self._count("quarantined")
                await self._delete(job, sqs)
                return action
        if action is Action.DELETE:
            await self._delete(job, sqs)
            return action
        delay = retry_delay(
            job.receive_count,
            base=self.settings.retry_base_seconds,
            maximum=self.settings.retry_max_seconds,
            deadline=datetime.fromtimestamp(job.deadline, UTC) if math.isfinite(job.deadline) else None,
            now=datetime.now(UTC),
        )
        event = "retried" if action is Action.RETRY else "left"
        log.warning(
            f"message_{event}", reason=decision.reason, visible_in=delay, receive_count=job.receive_count
        )
        async with self._visibility:
            try:
                await sqs.change_message_visibility(
                    QueueUrl=self.queue_url, ReceiptHandle=job.receipt, VisibilityTimeout=delay
                )
            except _AWS_TROUBLE as exc:  # it comes back when its current visibility lapses anyway
                log.warning("change_visibility_failed", error=str(exc))
        self.recorder.message(event)
        self._count(event)
        return action

    async def _delete(self, job: Job, sqs: Any) -> None:
        try:
            await sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=job.receipt)
        except _AWS_TROUBLE as exc:  # it will come back, and its ranges are already archived
            log.error("delete_failed", error=str(exc))
            return
        self.recorder.message("deleted")
        self._count("deleted")
        log.info("message_deleted", ranges=len(job.range_ids))

    def _forget(self, job: Job) -> None:
        for key, held in list(self._held.items()):
            if held is job:
                del self._held[key]
        self._room.set()
        self._update_gauges()

    # ---- keeping messages invisible

    async def _heartbeat(self, sqs: Any) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            jobs = [j for j in self._held.values() if not j.settling]
            async with self._visibility:
                await self._change_visibility(sqs, jobs, self.settings.visibility_timeout, "heartbeat")
            self._update_gauges()

    async def _change_visibility(self, sqs: Any, jobs: Iterable[Job], seconds: int, why: str) -> int:
        """ChangeMessageVisibility for `jobs`, ten at a time; how many succeeded."""
        jobs = [j for j in jobs if not j.settling]
        ok = 0
        for start in range(0, len(jobs), 10):
            chunk = jobs[start : start + 10]
            entries = [
                {"Id": str(i), "ReceiptHandle": j.receipt, "VisibilityTimeout": seconds}
                for i, j in enumerate(chunk)
            ]
            try:
                answer = await sqs.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)
            except _AWS_TROUBLE as exc:
                log.warning(f"{why}_failed", error=str(exc), messages=len(chunk))
                continue
            ok += len(answer.get("Successful") or [])
            for failed in answer.get("Failed") or []:
                job = chunk[int(failed.get("Id", 0))]
                log.warning(f"{why}_failed", message_id=job.message_id, error=failed.get("Code"))
        return ok

    def _update_gauges(self) -> None:
        now = time.time()
        nearest = min((w.deadline for w in self._works.values()), default=math.inf)
        self.recorder.gauges(
            in_flight=self._in_flight,
            held=len(self._held),
            nearest_expiry=nearest - now if math.isfinite(nearest) else math.inf,
            near_expiry=sum(1 for w in self._works.values() if self.replayer.near_expiry(w.deadline, now)),
        )

    # ---- stopping

    async def _shutdown(
        self,
        receiver: asyncio.Task[None],
        workers: list[asyncio.Task[None]],
        heartbeat: asyncio.Task[None],
        stopped: asyncio.Task[Any],
        sqs: Any,
    ) -> None:
        self.ready = False
        self.stopping = True
        receiver.cancel()
        async with self._wake:
            self._closing = True  # workers finish what they hold and take nothing new
            self._wake.notify_all()
        running = [w for w in workers if not w.done()]
        if running:
            log.info("finishing_in_flight", ranges=self._in_flight, grace_seconds=self.settings.grace_seconds)
            _, late = await asyncio.wait(running, timeout=self.settings.grace_seconds)
            for task in late:
                task.cancel()
        await asyncio.gather(receiver, *workers, return_exceptions=True)
        heartbeat.cancel()
        stopped.cancel()
        await asyncio.gather(heartbeat, stopped, return_exceptions=True)
        unfinished = [j for j in self._held.values() if not j.settling]
        if unfinished:
            released = await self._change_visibility(sqs, unfinished, 0, "release")
            self._count("released", released)
            log.warning("released_unfinished", messages=len(unfinished), released=released)
        self._held.clear()
        self._works.clear()
        self._heap.clear()
        self._update_gauges()
        for worker in workers:
            error = None if worker.cancelled() else worker.exception()
            if error is not None:
                raise error


def _int(value: object, default: int) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return default
