"""The core: one `Failure` in, one `Outcome` out. Sources decide what the outcome means.

read -> deliver to every sink, in order -> settle. Nothing here knows where the
failure came from (queue, file, Lambda event) or how the outcome is acknowledged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from replayer.allow import AllowList
from replayer.aws import Clients
from replayer.model import Failure, Outcome, OutcomeKind
from replayer.readers import Readers, ReadResult
from replayer.sinks import Delivery, Sink, SinkError

__all__ = ["Replayer", "by_deadline", "rejected"]

log = structlog.get_logger("replayer")

# Failures we expect from AWS and the network: the range is retried later, never dropped.
_TRANSIENT = (ClientError, BotoCoreError, SinkError, OSError, asyncio.TimeoutError)


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
    ) -> None:
        if not sinks:
            raise ValueError("at least one sink is needed")
        self.clients = clients
        self.sinks = tuple(sinks)
        self.allow = allow or AllowList()
        self.readers = readers or Readers(clients)

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
        """Replay ranges `concurrency` at a time, earliest expiry first; one outcome each, in order.

        A range named twice is worked on once; its second mention gets the same outcome.
        """
        ordered = by_deadline(failures)
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
    """Earliest first arrival (hence earliest expiry) first; unknown arrival times last."""
    return sorted(
        failures,
        key=lambda f: (f.first_arrival is None, f.first_arrival.timestamp() if f.first_arrival else 0.0),
    )
