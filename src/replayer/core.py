"""The core: one `Failure` in, one `Outcome` out. Sources decide what the outcome means.

read -> deliver to every sink, in order -> settle. Nothing here knows where the
failure came from (queue, file, Lambda event) or how the outcome is acknowledged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from replayer.allow import AllowList
from replayer.aws import Clients
from replayer.model import Failure, Outcome, OutcomeKind
from replayer.readers import Readers, ReadResult
from replayer.sinks import Delivery, Sink, SinkError

__all__ = ["DEFAULT_EXPIRY_WARNING", "Replayer", "by_deadline", "rejected"]

log = structlog.get_logger("replayer")

# Failures we expect from AWS and the network: the range is retried later, never dropped.
_TRANSIENT = (ClientError, BotoCoreError, SinkError, OSError, asyncio.TimeoutError)

DEFAULT_EXPIRY_WARNING = timedelta(hours=2)
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
    ) -> None:
        if not sinks:
            raise ValueError("at least one sink is needed")
        self.clients = clients
        self.sinks = tuple(sinks)
        self.allow = allow or AllowList()
        self.readers = readers or Readers(clients)
        self.expiry_warning = expiry_warning

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
            return rejected(failure, f"stream {failure.stream_arn} is not in --allow-stream")
        return None

    async def replay(self, failure: Failure) -> Outcome:
        """Re-read the failure's range and hand it to every sink; never raises for AWS trouble."""
        with structlog.contextvars.bound_contextvars(
            range_id=failure.range_id,
            stream_arn=failure.stream_arn,
            shard_id=failure.shard_id,
            start=failure.start_sequence,
            end=failure.end_sequence,
        ):
            refusal = self.check(failure)
            if refusal is not None:
                log.warning("range_rejected", reason=refusal.reason)
                return refusal
            deadline = await self.deadline(failure)
            near = self._warn_expiry(deadline)
            outcome = await self._read_and_deliver(failure)
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

    async def _read_and_deliver(self, failure: Failure) -> Outcome:
        """The range's records read and handed to every sink: replayed, partial, expired or retry."""
        try:
            result = await self.readers.for_failure(failure).read(failure)
        except _TRANSIENT as exc:
            log.warning("read_failed", error=str(exc))
            return Outcome(OutcomeKind.RETRY, failure, reason=f"reading the stream failed: {exc}")
        if not result.complete:
            log.warning("read_incomplete", notes=list(result.notes), recovered=len(result.records))
            return Outcome(
                OutcomeKind.RETRY,
                failure,
                recovered=len(result.records),
                reason="the stream read did not finish",
                notes=result.notes,
            )
        return await self._deliver(failure, result)

    async def _deliver(self, failure: Failure, result: ReadResult) -> Outcome:
        deliveries: list[Delivery] = []
        for sink in self.sinks:
            try:
                deliveries.append(await sink.deliver(failure, result))
            except _TRANSIENT as exc:
                log.warning("sink_failed", sink=sink.uri, error=str(exc))
                return Outcome(
                    OutcomeKind.RETRY,
                    failure,
                    recovered=len(result.records),
                    reason=f"{sink.uri}: {exc}",
                    notes=result.notes,
                    delivered_to=tuple(d.location for d in deliveries),
                )
        report = next((d.report for d in deliveries if d.report), None)
        kind = OutcomeKind.REPLAYED
        if result.gaps:
            kind = OutcomeKind.PARTIAL if result.records else OutcomeKind.EXPIRED
            log.error(
                "records_lost",
                recovered=len(result.records),
                missing=[g.describe() for g in result.gaps],
                report=report,
            )
        for note in result.notes:
            log.info("range_note", note=note)
        log.info("range_done", outcome=kind.value, recovered=len(result.records))
        return Outcome(
            kind,
            failure,
            recovered=len(result.records),
            gaps=result.gaps,
            reason="; ".join(g.reason for g in result.gaps),
            notes=result.notes,
            report_uri=report,
            delivered_to=tuple(d.location for d in deliveries),
        )

    async def replay_many(
        self,
        failures: Iterable[Failure],
        *,
        concurrency: int = 8,
        on_done: Callable[[Outcome], None] | None = None,
    ) -> list[Outcome]:
        """Replay ranges `concurrency` at a time, earliest expiry deadline first (first arrival +
        the stream's retention); one outcome each, in that order.

        A range named twice is worked on once; its second mention gets the same outcome.
        """
        failures = list(failures)
        deadlines = await asyncio.gather(*(self.deadline(f) for f in failures))
        ordered = [f for _, _, f in sorted(zip(deadlines, range(len(failures)), failures, strict=True))]
        semaphore = asyncio.Semaphore(max(1, concurrency))
        tasks: dict[str, asyncio.Task[Outcome]] = {}

        async def one(failure: Failure) -> Outcome:
            async with semaphore:
                outcome = await self.replay(failure)
            if on_done is not None:
                on_done(outcome)
            return outcome

        async with asyncio.TaskGroup() as group:
            for failure in ordered:
                if failure.range_id not in tasks:
                    tasks[failure.range_id] = group.create_task(one(failure))
        return [tasks[f.range_id].result() for f in ordered]


def by_deadline(failures: Iterable[Failure]) -> list[Failure]:
    """Earliest first arrival first; unknown arrival times last. No AWS call: for plans (dry runs).

    Work itself is ordered by `Replayer.deadline`, which also knows each stream's retention.
    """
    return sorted(
        failures,
        key=lambda f: (f.first_arrival is None, f.first_arrival.timestamp() if f.first_arrival else 0.0),
    )
