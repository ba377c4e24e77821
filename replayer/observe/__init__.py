"""What replayer counts and times, by one rule, for Prometheus and for Lambda's EMF.

`Recorder` is the one recorder: every count goes into its plain tally (`take()` hands
it over and starts a new one: a Lambda invocation's, flushed as CloudWatch EMF by
`emf.flush`) and, when it has a Prometheus registry, into that registry too (the
service's `/metrics`, served by `http`). `TimedReaders` and `TimedSink` time the
core's reads and deliveries into it without the core knowing.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from replayer.model import Failure, Outcome, OutcomeKind
from replayer.readers import Readers, ReadResult, StreamReader
from replayer.sinks import Delivery, Sink
from replayer.sinks.guard import COUNTS as REDRIVE_COUNTS
from replayer.sinks.guard import Guard

if TYPE_CHECKING:  # imported when a registry is made: commands without /metrics never load it
    from prometheus_client import CollectorRegistry
    from prometheus_client import Counter as PromCounter

__all__ = ["MESSAGE_EVENTS", "Recorder", "Tally", "TimedReaders", "TimedSink", "records_lost"]

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

# What can happen to a message, with its Prometheus help text. The tally counts `messages_<event>`.
MESSAGE_EVENTS: Mapping[str, str] = {
    "received": "SQS messages received",
    "deleted": "SQS messages deleted: every range replayed or its loss durably reported",
    "retried": "SQS messages sent back to the queue with a delay",
    "quarantined": "Malformed or not-allowed messages kept in the quarantine (then deleted)",
    "left": "Malformed or not-allowed messages left for the queue's redrive policy",
    "released": "Unfinished messages made visible again when the service stopped",
}


def records_lost(outcome: Outcome) -> int:
    """How many records an outcome lost (`Outcome.lost`: bounded by what the read found, never a message alone)."""
    return outcome.lost[0]


def outcome_counts(outcome: Outcome) -> Counter[str]:
    """The one counting rule for a range's outcome: tally name -> increment."""
    counts: Counter[str] = Counter({f"ranges_{outcome.kind.value}": 1})
    if outcome.near_expiry:
        counts["ranges_near_expiry"] += 1
    if outcome.kind in (OutcomeKind.REPLAYED, OutcomeKind.PARTIAL, OutcomeKind.EXPIRED):
        counts["records_recovered"] += outcome.recovered
        counts["records_lost"] += records_lost(outcome)
    return counts


@dataclass
class Tally:
    """Plain counts and timings (one Lambda invocation's, or the process's so far)."""

    counts: Counter[str] = field(default_factory=Counter)
    read_times: list[float] = field(default_factory=list)
    sink_times: list[float] = field(default_factory=list)


class _Prometheus:
    """The tally's names as Prometheus metrics, in a registry of the service's own."""

    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import Counter as PromCounter
        from prometheus_client import Gauge, Histogram

        r = self.registry = registry
        self.counters: dict[str, tuple[PromCounter, tuple[str, ...]]] = {
            f"messages_{event}": (PromCounter(f"replayer_messages_{event}", help_text, registry=r), ())
            for event, help_text in MESSAGE_EVENTS.items()
        }
        ranges = PromCounter("replayer_ranges", "Ranges worked on, by outcome", ["outcome"], registry=r)
        for kind in OutcomeKind:
            self.counters[f"ranges_{kind.value}"] = (ranges, (kind.value,))
            ranges.labels(kind.value)
        for name, help_text in (
            ("records_recovered", "Records read and delivered"),
            ("records_lost", "Records lost to stream retention"),
            (
                "ranges_near_expiry",
                "Ranges worked on within --expiry-warning of their expiry deadline, or past it",
            ),
        ):
            self.counters[name] = (PromCounter(f"replayer_{name}", help_text, registry=r), ())
        self.in_flight = Gauge("replayer_ranges_in_flight", "Ranges being read or delivered now", registry=r)
        self.held = Gauge("replayer_messages_held", "Messages held invisible by this process", registry=r)
        self.to_expiry = Gauge(
            "replayer_seconds_to_nearest_expiry",
            "Seconds until the first records of the ranges this process holds, not yet saved, leave "
            "their stream (+Inf when none); `replayer status` and /status say the same",
            registry=r,
        )
        self.to_expiry.set(math.inf)
        self.near_expiry = Gauge(
            "replayer_held_ranges_near_expiry",
            "Held ranges within --expiry-warning of their expiry deadline, or past it",
            registry=r,
        )
        self.read_latency = Histogram(
            "replayer_read_seconds", "Time to re-read one range", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.sink_latency = Histogram(
            "replayer_sink_seconds", "Time to deliver one range to one sink", ["sink"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        for name, help_text in REDRIVE_COUNTS.items():
            self.counters[f"redrive_{name}"] = (
                PromCounter(f"replayer_redrive_{name}", help_text, registry=r),
                (),
            )
        self.redrive_rate = Gauge(
            "replayer_redrive_rate",
            "Records per second sent to lambda: sinks (the last 5 seconds)",
            registry=r,
        )
        self.redrive_in_flight = Gauge("replayer_redrive_in_flight", "Invocations in flight now", registry=r)
        self.breaker_open = Gauge(
            "replayer_redrive_breaker_open",
            "The breaker: 0 closed, 0.5 half-open (trying), 1 open",
            registry=r,
        )
        self.deliveries = PromCounter(
            "replayer_deliveries",
            "Ranges delivered to a sink; already_there=true when an earlier attempt or replica had",
            ["sink", "already_there"],
            registry=r,
        )

    def add(self, name: str, n: float) -> None:
        counter, labels = self.counters[name]
        (counter.labels(*labels) if labels else counter).inc(n)


class Recorder:
    """The one recorder. `prometheus=True` also keeps every count in `registry` (the service)."""

    def __init__(self, *, prometheus: bool = False, registry: CollectorRegistry | None = None) -> None:
        self.tally = Tally()
        self._prometheus: _Prometheus | None = None
        if prometheus or registry is not None:
            if registry is None:
                from prometheus_client import CollectorRegistry

                registry = CollectorRegistry(auto_describe=True)
            self._prometheus = _Prometheus(registry)

    @property
    def registry(self) -> CollectorRegistry:
        """The Prometheus registry (only for a recorder made with `prometheus=True`)."""
        if self._prometheus is None:
            raise ValueError("this recorder keeps no Prometheus registry")
        return self._prometheus.registry

    def take(self) -> Tally:
        """The tally so far; counting starts again from zero (one Lambda invocation each)."""
        tally, self.tally = self.tally, Tally()
        return tally

    def _add(self, name: str, n: float) -> None:
        self.tally.counts[name] += int(n)
        if self._prometheus is not None:
            self._prometheus.add(name, n)

    def message(self, event: str, n: int = 1) -> None:
        """One of `MESSAGE_EVENTS` happened to `n` messages."""
        if event not in MESSAGE_EVENTS:
            raise ValueError(f"unknown message event {event!r}")
        self._add(f"messages_{event}", n)

    def outcome(self, outcome: Outcome) -> None:
        for name, n in outcome_counts(outcome).items():
            self._add(name, n)

    # Timings: a Prometheus histogram for the service; listed in the tally only without one (the
    # Lambda takes its tally each invocation), so a long-running service keeps no growing list.
    def read_seconds(self, seconds: float) -> None:
        if self._prometheus is None:
            self.tally.read_times.append(seconds)
        else:
            self._prometheus.read_latency.observe(seconds)

    def sink_seconds(self, sink: str, seconds: float, delivery: Delivery | None) -> None:
        if delivery is not None and delivery.already_there:
            self.tally.counts["deliveries_already_there"] += 1
        if self._prometheus is None:
            self.tally.sink_times.append(seconds)
        else:
            self._prometheus.sink_latency.labels(sink).observe(seconds)
            if delivery is not None:
                self._prometheus.deliveries.labels(sink, str(delivery.already_there).lower()).inc()

    def watch(self, guard: Guard) -> None:
        """Count what the re-drive guard counts (sent, stale, superseded, invocations, throttled, breaker
        trips) as `redrive_<name>`; with Prometheus, its rate, invocations in flight and breaker as gauges."""
        guard.count = lambda name, n: self._add(f"redrive_{name}", n)
        if self._prometheus is not None:
            p = self._prometheus
            p.redrive_rate.set_function(guard.pacer.current)
            p.redrive_in_flight.set_function(lambda: guard.pacer.in_flight)
            p.breaker_open.set_function(
                lambda: {"closed": 0.0, "half-open": 0.5}.get(guard.breaker.state, 1.0)
            )

    def gauges(self, *, in_flight: int, held: int, nearest_expiry: float, near_expiry: int = 0) -> None:
        """Ranges in flight, messages held, seconds to the nearest expiry deadline (+inf: none),
        held ranges within the expiry warning of their deadline (or past it). Prometheus only:
        an invocation reports counts; its deadlines are in the logs."""
        if self._prometheus is not None:
            self._prometheus.in_flight.set(in_flight)
            self._prometheus.held.set(held)
            self._prometheus.to_expiry.set(nearest_expiry)
            self._prometheus.near_expiry.set(near_expiry)


class _TimedReader:
    def __init__(self, inner: StreamReader, recorder: Recorder) -> None:
        self._inner = inner
        self._recorder = recorder

    async def read(self, failure: Failure) -> ReadResult:
        started = time.perf_counter()
        try:
            return await self._inner.read(failure)
        finally:
            self._recorder.read_seconds(time.perf_counter() - started)

    async def retention(self, failure: Failure) -> timedelta:
        return await self._inner.retention(failure)


class TimedReaders(Readers):
    """The usual readers, each read timed into a `Recorder` (the core stays unaware)."""

    def __init__(self, *args: object, recorder: Recorder, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._recorder = recorder

    def for_failure(self, failure: Failure) -> StreamReader:
        return _TimedReader(super().for_failure(failure), self._recorder)


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
