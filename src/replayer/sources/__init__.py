"""Where failures come from: the SQS service loop (`sqs`), the Lambda runtime (`lambda_`).

Both are thin: they turn what arrives into typed messages (`replayer.parse`), hand the
ranges to the one scheduler (`replayer.core`) and settle each message with the one rule
(`replayer.settle`). `build_replayer` wires the shared core from their settings.
"""

from __future__ import annotations

from datetime import timedelta

from replayer.allow import AllowList
from replayer.aws import Clients
from replayer.config import Settings
from replayer.core import Replayer
from replayer.observe import Recorder, TimedReaders, TimedSink
from replayer.settle.quarantine import Quarantine, quarantine_from_uri
from replayer.sinks import Sink, SinkOptions, sink_from_uri

__all__ = ["build_replayer"]


def build_replayer(
    settings: Settings, clients: Clients, recorder: Recorder
) -> tuple[Replayer, Quarantine | None]:
    """The shared core wired for a consumer: timed readers and sinks, the allow-list, the quarantine."""
    options = SinkOptions.of(settings)
    sinks: list[Sink] = [TimedSink(sink_from_uri(uri, clients, options), recorder) for uri in settings.to]
    replayer = Replayer(
        clients,
        sinks,
        allow=AllowList.of(settings.allow_streams),
        readers=TimedReaders(
            clients, recorder=recorder, max_records_per_range=settings.max_records_per_range
        ),
        expiry_warning=timedelta(seconds=settings.expiry_warning),
        range_budget=settings.range_budget_seconds,
    )
    quarantine = quarantine_from_uri(settings.quarantine, clients) if settings.quarantine else None
    return replayer, quarantine
