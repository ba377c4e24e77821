"""Re-driving safely: the one place between the core and every `lambda:` sink that paces, stops and checks.

A `Guard` is made once per process from the settings (`Guard.of`) and shared by every lambda:
sink the process builds, so `redrive`, `replay`, `fetch`, `drain`, `run` and the Lambda all get:
- pacing (`pacing.Pacer`): ``--rate`` records per second over every invocation, ``--ramp``,
  ``--max-inflight``; throttling (TooManyRequestsException, HTTP 429) pauses and slows the run
  down instead of counting as a function error;
- the breaker (`breaker.Breaker`): ``--stop-at-error-rate`` of the last ``--error-window``
  invocations; past it nothing more is invoked (`run`, the Lambda: a cool-down, then a trial);
- staleness (`stale.StaleCheck`, DynamoDB): ``--skip-stale`` and ``--latest-per-key`` take
  stale and superseded records out of what is sent, counted and listed per range (`RangeTally`),
  which the run ledger (`replayer.archive.ledger`, written by `run.RecordedRun`) keeps.

A sink calls `select` once per range (after the mapping's filter and --where) and `invoke`
around each invocation; nothing else of it knows about pacing.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from replayer import logs
from replayer.aws import Clients, error_code
from replayer.model import Failure, StreamKind, StreamRecord
from replayer.sinks._base import SinkError
from replayer.sinks.guard.breaker import CLOSED, Breaker, BreakerOpen
from replayer.sinks.guard.pacing import Pacer
from replayer.sinks.guard.stale import StaleCheck, item_key, parsed

if TYPE_CHECKING:
    from replayer.config import Settings

__all__ = ["COUNTS", "Breaker", "BreakerOpen", "Guard", "Pacer", "RangeTally", "RunStopped", "THROTTLE_CODES"]

log = logs.get_logger(__name__)

THROTTLE_CODES = frozenset(
    {"TooManyRequestsException", "ThrottlingException", "Throttling", "RequestLimitExceeded"}
)
# What the guard counts (`Guard.totals`; metrics `replayer_redrive_<name>`, EMF `Redrive<Name>`).
COUNTS = {
    "sent": "Records re-driven to lambda: sinks and confirmed by the function",
    "stale": "Records not sent: the table holds newer data (--skip-stale)",
    "superseded": "Records not sent: a newer record of the same item was selected (--latest-per-key)",
    "invocations": "Invocations of lambda: sinks' functions",
    "failed_invocations": "Invocations that failed or confirmed no record (the breaker counts them)",
    "throttled": "Invocations throttled (waited out, not counted as failures)",
    "breaker_trips": "Times the breaker opened",
}
# Throttled invocations in a row (each after botocore's own attempts) waited out before the range is
# left for later. `Guard()` waits none (the sink alone, as before); commands' guards (`Guard.of`) do.
MAX_THROTTLES = 8
_LISTED = 10  # sequence numbers listed in a note
MAX_TALLIES = 10_000  # ranges' tallies kept at once


class RunStopped(SinkError):
    """The run was stopped (cancelled, or its breaker tripped): this invocation was not started."""


@dataclass(slots=True)
class RangeTally:
    """What became of one range's records at the lambda: sinks (for the ledger and the notes)."""

    range_id: str
    selected: int = 0  # after the mapping's filter and --where
    sent: int = 0  # confirmed by the function
    stale: list[str] = field(default_factory=list)  # sequence numbers
    superseded: list[str] = field(default_factory=list)
    versions: set[str] = field(default_factory=set)  # ExecutedVersion of the invocations
    invocations: int = 0
    throttled: int = 0

    @property
    def failed(self) -> int:
        """Selected records neither sent nor taken out (stale, superseded)."""
        return max(0, self.selected - self.sent - len(self.stale) - len(self.superseded))

    def describe(self) -> dict[str, Any]:
        return {
            "range_id": self.range_id,
            "selected": self.selected,
            "sent": self.sent,
            "stale": len(self.stale),
            "superseded": len(self.superseded),
            "failed": self.failed,
            "stale_records": list(self.stale),
            "superseded_records": list(self.superseded),
            "executed_versions": sorted(self.versions),
            "invocations": self.invocations,
            "throttled": self.throttled,
        }


_current: contextvars.ContextVar[RangeTally | None] = contextvars.ContextVar(
    "replayer_range_tally", default=None
)


def _throttled(exc: BaseException) -> bool:
    cause = exc.__cause__ if isinstance(exc, SinkError) else exc
    if not isinstance(cause, ClientError):
        return False
    status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return error_code(cause) in THROTTLE_CODES or status == 429


class Guard:
    """Pacing, the breaker and staleness for every lambda: sink of a process (see the module doc)."""

    def __init__(
        self,
        pacer: Pacer | None = None,
        breaker: Breaker | None = None,
        *,
        skip_stale: bool = False,
        latest_per_key: bool = False,
        reads: Pacer | None = None,
        throttle_waits: int = 0,
    ) -> None:
        self.throttle_waits = throttle_waits
        self.pacer = pacer or Pacer()
        self.breaker = breaker or Breaker(None)
        self.skip_stale = skip_stale
        self.latest_per_key = latest_per_key
        self.reads = reads or Pacer(self.pacer.rate, ramp=self.pacer.ramp)  # --skip-stale's reads
        self.tallies: dict[str, RangeTally] = {}
        self.stopped: str | None = None  # why no invocation starts any more
        self.on_stop: list[Callable[[str], None]] = []
        self._newest: dict[str, int] = {}  # --latest-per-key: item -> newest sequence `prime` was shown
        self.totals = dict.fromkeys(COUNTS, 0)
        self.count: Callable[[str, int], None] | None = None  # a metrics recorder's, when one watches
        if self.breaker.cooldown is None:
            self.breaker.on_trip.append(self.stop)
        self.breaker.on_trip.append(lambda _reason: self._add("breaker_trips", 1))

    def _add(self, name: str, n: int) -> None:
        self.totals[name] += n
        if self.count is not None and n:
            self.count(name, n)

    @classmethod
    def of(cls, settings: Settings) -> Guard:
        """The guard the settings describe (one per process: every lambda: sink shares it)."""
        return cls(
            Pacer(settings.rate, ramp=settings.ramp_seconds, max_inflight=settings.max_inflight),
            Breaker(settings.stop_at_error_rate, settings.error_window, cooldown=settings.breaker_cooldown),
            skip_stale=settings.skip_stale,
            latest_per_key=settings.latest_per_key,
            throttle_waits=MAX_THROTTLES,
        )

    def stop(self, reason: str) -> None:
        """No invocation starts from now on (those in flight finish); tell whoever listens, once."""
        if self.stopped is not None:
            return
        self.stopped = reason
        log.warning("redrive_stopped", reason=reason)
        for tell in list(self.on_stop):
            tell(reason)

    def tally(self, range_id: str) -> RangeTally:
        """The range's tally (a run's ledger takes it when the range ends; the oldest are dropped past
        `MAX_TALLIES`, so a service that keeps no ledger keeps no growing table)."""
        if range_id not in self.tallies and len(self.tallies) >= MAX_TALLIES:
            self.tallies.pop(next(iter(self.tallies)))
        return self.tallies.setdefault(range_id, RangeTally(range_id))

    # ---- what is sent

    def prime(self, failure: Failure, records: Iterable[StreamRecord]) -> None:
        """--latest-per-key: records of the run (any range) that make older ones of their item superseded."""
        for record in records:
            key = self._item(failure, parsed(record))
            if key is not None and record.sequence > self._newest.get(key, -1):
                self._newest[key] = record.sequence

    def _item(self, failure: Failure, document: dict[str, Any]) -> str | None:
        key = item_key(document)
        if key is None:
            return None
        arn = failure.arn
        return f"{arn.account}/{arn.region}/{arn.name}/{key}"

    async def select(
        self, failure: Failure, records: Sequence[StreamRecord], clients: Clients
    ) -> list[StreamRecord]:
        """The records to send of a range's selected ones: stale and superseded ones taken out, counted."""
        tally = self.tally(failure.range_id)
        _current.set(tally)
        tally.selected = max(tally.selected, len(records))  # each target of the range selects the same
        kept = list(records)
        if failure.kind is not StreamKind.DYNAMODB or not (self.skip_stale or self.latest_per_key):
            return kept
        if self.latest_per_key:
            newest = self._newest_of(failure, kept)
            older = [r for r in kept if newest.get(self._item(failure, parsed(r)) or "", -1) > r.sequence]
            known = set(tally.superseded)
            fresh = [r.sequence_number for r in older if r.sequence_number not in known]
            tally.superseded += fresh
            self._add("superseded", len(fresh))
            gone = {r.sequence_number for r in older}
            kept = [r for r in kept if r.sequence_number not in gone]
        if self.skip_stale and kept:
            stale = await StaleCheck(clients, self.reads.take).stale(failure, kept)
            unseen = stale - set(tally.stale)  # another target of the range may have listed them
            fresh = [r.sequence_number for r in kept if r.sequence_number in unseen]
            tally.stale += fresh
            self._add("stale", len(fresh))
            kept = [r for r in kept if r.sequence_number not in stale]
        if len(kept) != len(records):
            log.info("records_not_sent", stale=len(tally.stale), superseded=len(tally.superseded))
        return kept

    def _newest_of(self, failure: Failure, records: Sequence[StreamRecord]) -> dict[str, int]:
        """Each item's newest sequence number among `records` and what `prime` was shown (redrive)."""
        newest: dict[str, int] = {}
        for record in records:
            key = self._item(failure, parsed(record))
            if key is not None:
                newest[key] = max(record.sequence, newest.get(key, -1), self._newest.get(key, -1))
        return newest

    def notes(self, uri: str, failure: Failure) -> tuple[str, ...]:
        """Lines for the range's outcome: the records not sent, and why."""
        tally = self.tallies.get(failure.range_id)
        if tally is None:
            return ()
        notes = []
        for what, sequences, why in (
            ("stale", tally.stale, "the table holds newer data"),
            ("superseded", tally.superseded, "a newer record of the item was selected"),
        ):
            if sequences:
                listed = ", ".join(sequences[:_LISTED]) + (", ..." if len(sequences) > _LISTED else "")
                notes.append(f"{uri}: {len(sequences)} {what} records not sent ({why}): {listed}")
        return tuple(notes)

    # ---- each invocation

    async def invoke(
        self, records: Sequence[StreamRecord], call: Callable[[], Awaitable[tuple[StreamRecord, ...]]]
    ) -> tuple[StreamRecord, ...]:
        """One invocation through pacing and the breaker; throttling is waited out here, not counted.

        Returns what `call` returns: the records left unconfirmed.
        """
        tally = _current.get() or RangeTally("")
        throttles = 0
        while True:
            async with self.pacer.slot():
                self._may_start()
                await self.pacer.take(len(records))
                self._may_start()
                await self.breaker.admit()  # once: in the service, the trial after a pause goes from here
                tally.invocations += 1
                self._add("invocations", 1)
                try:
                    remaining = await call()
                except Exception as exc:
                    if not _throttled(exc):
                        self._add("failed_invocations", 1)
                        self.breaker.record(True, str(exc))
                        raise
                    self.breaker.abandon()  # a throttle says nothing of the function's health
                    throttles += 1
                    tally.throttled += 1
                    self._add("throttled", 1)
                    pause = self.pacer.throttled()
                    log.warning("invoke_throttled", in_a_row=throttles, pause_seconds=round(pause, 2))
                    if throttles > self.throttle_waits:
                        raise SinkError(f"{exc} (throttled {throttles} times in a row)") from exc
                    continue
                except BaseException:  # cancelled (the range's budget): no result to count
                    self.breaker.abandon()
                    raise
            confirmed = len(records) - len(remaining)
            tally.sent += confirmed
            self._add("sent", confirmed)
            self.pacer.went(len(records))
            if confirmed:
                self.breaker.record(False)
            else:
                self._add("failed_invocations", 1)
                self.breaker.record(True, "the function confirmed none of the records (batchItemFailures)")
            return remaining

    def _may_start(self) -> None:
        if self.stopped is not None:
            raise RunStopped(f"not invoked: {self.stopped}")

    def executed(self, version: str | None) -> None:
        """The function version an invocation ran (the Invoke answer's ExecutedVersion)."""
        tally = _current.get()
        if tally is not None and version:
            tally.versions.add(version)

    # ---- for people and metrics

    def status(self) -> dict[str, Any]:
        """Rate, in flight, the breaker and the counts, now."""
        return {
            "rate": round(self.pacer.current(), 2),
            "rate_allowed": self.pacer.allowed(),
            "in_flight": self.pacer.in_flight,
            "breaker": self.breaker.state,
            **self.totals,
        }

    def line(self) -> str:
        """The progress line's tail: ``12/s, 2 in flight, breaker closed, 3 stale, 1 superseded``."""
        s = self.status()
        breaker = s["breaker"] if s["breaker"] != CLOSED or self.stopped is None else "stopped"
        parts = [f"{s['rate']:g}/s", f"{s['in_flight']} in flight", f"breaker {breaker}"]
        parts += [f"{s[k]} {k}" for k in ("stale", "superseded", "throttled") if s[k]]
        return ", ".join(parts)
