"""Where failures come from: the SQS service loop (`sqs`), the Lambda runtime (`lambda_`).

Both are thin: they turn what arrives into typed messages (`replayer.parse`), hand the
ranges to the one scheduler (`replayer.core`) and settle each message with the one rule
(`replayer.settle`). The functions here wire the shared core from a command's `Settings`
(the one option table, `replayer.config`): every command and the Lambda runtime build it
through them, so an option reaches the core in one place.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from replayer.allow import AllowList
from replayer.aws import AssumeRoles, Clients
from replayer.config import Settings
from replayer.core import Replayer
from replayer.observe import Recorder, TimedReaders, TimedSink
from replayer.readers import Readers
from replayer.settle.quarantine import Quarantine, quarantine_from_uri
from replayer.sinks import Sink, SinkOptions, sink_from_uri

if TYPE_CHECKING:
    from replayer.selection import Selection
    from replayer.sinks.guard import Guard

__all__ = ["build_replayer", "clients_for", "readers_for", "sinks_for"]


def clients_for(settings: Settings) -> Clients:
    """The AWS clients a command works with: a pool for its concurrency, its call deadline, the
    roles it assumes for other accounts."""
    return Clients(
        max_pool_connections=max(10, settings.concurrency * 2 + 4),
        call_deadline=settings.call_deadline_seconds,
        assume_roles=AssumeRoles.of(settings.assume_roles),
    )


def readers_for(settings: Settings, clients: Clients, recorder: Recorder | None = None) -> Readers:
    """The stream readers as the settings bound them; each read timed into `recorder` when given."""
    options: dict[str, Any] = {
        "invoke_identity_arn": settings.invoke_identity_arn,
        "max_records_per_range": settings.max_records_per_range,
        "kafka_brokers": settings.kafka_brokers,
    }
    if recorder is None:
        return Readers(clients, **options)
    return TimedReaders(clients, recorder=recorder, **options)


def sinks_for(
    settings: Settings,
    clients: Clients,
    recorder: Recorder | None = None,
    *,
    selection: Selection | None = None,
    guard: Guard | None = None,
) -> list[Sink]:
    """One sink per `--to`, in order, with the settings' sink options (and the record `selection`
    lambda: sinks apply, and `guard`, the process's pacing and breaker: else one of their own);
    each delivery timed into `recorder` when given."""
    options = SinkOptions.of(settings, selection=selection, guard=guard)
    sinks = [sink_from_uri(uri, clients, options) for uri in settings.to]
    if recorder is None:
        return sinks
    if options.guard is not None:
        recorder.watch(options.guard)
    return [TimedSink(sink, recorder) for sink in sinks]


def build_replayer(
    settings: Settings,
    clients: Clients,
    recorder: Recorder | None = None,
    *,
    selection: Selection | None = None,
    guard: Guard | None = None,
) -> tuple[Replayer, Quarantine | None]:
    """The shared core wired from the settings: readers and sinks (timed into `recorder` when
    given), the allow-list, the expiry warning, the range budget; and the quarantine, if any."""
    replayer = Replayer(
        clients,
        sinks_for(settings, clients, recorder, selection=selection, guard=guard),
        allow=AllowList.of(settings.allow_streams),
        readers=readers_for(settings, clients, recorder),
        expiry_warning=timedelta(seconds=settings.expiry_warning),
        range_budget=settings.range_budget_seconds,
    )
    quarantine = quarantine_from_uri(settings.quarantine, clients) if settings.quarantine else None
    return replayer, quarantine
