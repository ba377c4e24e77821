"""What the service counts, in a Prometheus registry of its own.

`Recorder` is the small interface the loop, the timing wrappers and the Lambda handler
report to; `PromMetrics` keeps it in Prometheus form for `/metrics`, `Tally` in plain
numbers for one Lambda invocation (flushed as CloudWatch EMF).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client import Counter as PromCounter

from replayer.model import Failure, Outcome, OutcomeKind
from replayer.readers import Readers, ReadResult, StreamReader
from replayer.sinks import Delivery, Sink

__all__ = ["PromMetrics", "Recorder", "Tally", "TimedReaders", "TimedSink", "records_lost"]

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def records_lost(outcome: Outcome) -> int:
    """How many records an outcome lost: exact when the batch size is known, else one per gap."""
    if not outcome.gaps:
        return 0
    batch = outcome.failure.batch_size if outcome.failure else None
    if batch is not None and batch > outcome.recovered:
        return batch - outcome.recovered
    return len(outcome.gaps)


class Recorder(Protocol):
    def message(self, event: str, n: int = 1) -> None:
        """`received`, `deleted`, `retried`, `quarantined` or `left`."""

    def outcome(self, outcome: Outcome) -> None: ...

    def read_seconds(self, seconds: float) -> None: ...

    def sink_seconds(self, sink: str, seconds: float, delivery: Delivery | None) -> None: ...

    def gauges(self, *, in_flight: int, held: int, nearest_expiry: float, near_expiry: int = 0) -> None:
        """Ranges in flight, messages held, seconds to the nearest expiry deadline (+inf: none),
        held ranges within the expiry warning of their deadline (or past it)."""


class PromMetrics:
    """The service's metrics. `registry` is the service's own (not the process-global one)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.messages = {
            event: PromCounter(f"replayer_messages_{event}", help_text, registry=r)
            for event, help_text in (
                ("received", "SQS messages received"),
                ("deleted", "SQS messages deleted: every range replayed or its loss durably reported"),
                ("retried", "SQS messages sent back to the queue with a delay"),
                ("quarantined", "Malformed or not-allowed messages kept in the quarantine (then deleted)"),
                ("left", "Malformed or not-allowed messages left for the queue's redrive policy"),
            )
        }
        self.ranges = PromCounter("replayer_ranges", "Ranges worked on, by outcome", ["outcome"], registry=r)
        self.recovered = PromCounter("replayer_records_recovered", "Records read and delivered", registry=r)
        self.lost = PromCounter("replayer_records_lost", "Records lost to stream retention", registry=r)
        self.in_flight = Gauge("replayer_ranges_in_flight", "Ranges being read or delivered now", registry=r)
        self.held = Gauge("replayer_messages_held", "Messages held invisible by this process", registry=r)
        self.deadline = Gauge(
            "replayer_nearest_expiry_seconds",
            "Seconds until the earliest expiry deadline among held ranges (+Inf when none)",
            registry=r,
        )
        self.deadline.set(math.inf)
        self.near_expiry = Gauge(
            "replayer_held_ranges_near_expiry",
            "Held ranges within --expiry-warning of their expiry deadline, or past it",
            registry=r,
        )
        self.expiry_warnings = PromCounter(
            "replayer_ranges_near_expiry",
            "Ranges worked on within --expiry-warning of their expiry deadline, or past it",
            registry=r,
        )
        self.read_latency = Histogram(
            "replayer_read_seconds", "Time to re-read one range", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.sink_latency = Histogram(
            "replayer_sink_seconds", "Time to deliver one range to one sink", ["sink"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.deliveries = PromCounter(
            "replayer_deliveries",
            "Ranges delivered to a sink; already_there=true when an earlier attempt or replica had",
            ["sink", "already_there"],
            registry=r,
        )
        for kind in OutcomeKind:
            self.ranges.labels(kind.value)

    def message(self, event: str, n: int = 1) -> None:
        self.messages[event].inc(n)

    def outcome(self, outcome: Outcome) -> None:
        self.ranges.labels(outcome.kind.value).inc()
        if outcome.near_expiry:
            self.expiry_warnings.inc()
        if outcome.kind in (OutcomeKind.REPLAYED, OutcomeKind.PARTIAL, OutcomeKind.EXPIRED):
            self.recovered.inc(outcome.recovered)
            self.lost.inc(records_lost(outcome))

    def read_seconds(self, seconds: float) -> None:
        self.read_latency.observe(seconds)

    def sink_seconds(self, sink: str, seconds: float, delivery: Delivery | None) -> None:
        self.sink_latency.labels(sink).observe(seconds)
        if delivery is not None:
            self.deliveries.labels(sink, str(delivery.already_there).lower()).inc()

    def gauges(self, *, in_flight: int, held: int, nearest_expiry: float, near_expiry: int = 0) -> None:
        self.in_flight.set(in_flight)
        self.held.set(held)
        self.deadline.set(nearest_expiry)
        self.near_expiry.set(near_expiry)


class Tally:
    """Plain counts for one Lambda invocation."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.read_times: list[float] = []
        self.sink_times: list[float] = []

    def message(self, event: str, n: int = 1) -> None:
        self.counts[f"messages_{event}"] += n

    def outcome(self, outcome: Outcome) -> None:
        self.counts[f"ranges_{outcome.kind.value}"] += 1
        if outcome.near_expiry:
            self.counts["ranges_near_expiry"] += 1
        if outcome.kind in (OutcomeKind.REPLAYED, OutcomeKind.PARTIAL, OutcomeKind.EXPIRED):
            self.counts["records_recovered"] += outcome.recovered
            self.counts["records_lost"] += records_lost(outcome)

    def read_seconds(self, seconds: float) -> None:
        self.read_times.append(seconds)

    def sink_seconds(self, sink: str, seconds: float, delivery: Delivery | None) -> None:
        self.sink_times.append(seconds)
        if delivery is not None and delivery.already_there:
            self.counts["deliveries_already_there"] += 1

    def gauges(self, *, in_flight: int, held: int, nearest_expiry: float, near_expiry: int = 0) -> None:
        pass  # an invocation reports counts; its deadlines are in the logs


class _TimedReader:
    def __init__(self, inner: StreamReader, observe: Callable[[float], None]) -> None:
        self._inner = inner
        self._observe = observe

    async def read(self, failure: Failure) -> ReadResult:
        started = time.perf_counter()
        try:
            return await self._inner.read(failure)
        finally:
            self._observe(time.perf_counter() - started)

    async def retention(self, failure: Failure) -> timedelta:
        return await self._inner.retention(failure)


class TimedReaders(Readers):
    """The usual readers, each read timed into a `Recorder` (the core stays unaware)."""

    def __init__(self, *args: object, recorder: Recorder, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._recorder = recorder

    def for_failure(self, failure: Failure) -> StreamReader:
        return _TimedReader(super().for_failure(failure), self._recorder.read_seconds)


class TimedSink:
    """A sink whose deliveries are timed and counted into a `Recorder`."""

    def __init__(self, inner: Sink, recorder: Recorder) -> None:
        self._inner = inner
        self._recorder = recorder

    @property
    def uri(self) -> str:
        return self._inner.uri

    @property
    def durable(self) -> bool:
        return self._inner.durable

    async def deliver(self, failure: Failure, result: ReadResult) -> Delivery:
        started = time.perf_counter()
        delivery: Delivery | None = None
        try:
            delivery = await self._inner.deliver(failure, result)
            return delivery
        finally:
            self._recorder.sink_seconds(self._inner.uri, time.perf_counter() - started, delivery)
