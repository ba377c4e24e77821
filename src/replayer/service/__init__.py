"""The ways replayer consumes a failure queue: a long-running service, a burst drain, a Lambda.

`Service` is the SQS loop (`replayer run`, and `replayer drain` with ``burst=True``);
`decide` is the one rule that turns a message's outcomes into delete / retry /
quarantine / leave, shared with the Lambda handler.
"""

from __future__ import annotations

from replayer.aws import Clients
from replayer.config import Settings
from replayer.core import Replayer
from replayer.service._loop import Job, Service, ServiceSummary, deadline_of
from replayer.service._metrics import PromMetrics, Recorder, Tally, TimedReaders, TimedSink
from replayer.service._quarantine import (
    Quarantine,
    QuarantineError,
    S3Quarantine,
    SqsQuarantine,
    quarantine_from_uri,
)
from replayer.service._settle import Action, Decision, decide, retry_delay
from replayer.sinks import Sink, SinkOptions, sink_from_uri

__all__ = [
    "Action",
    "Decision",
    "Job",
    "PromMetrics",
    "Quarantine",
    "QuarantineError",
    "Recorder",
    "S3Quarantine",
    "Service",
    "ServiceSummary",
    "SqsQuarantine",
    "Tally",
    "TimedReaders",
    "TimedSink",
    "build_replayer",
    "deadline_of",
    "decide",
    "quarantine_from_uri",
    "retry_delay",
]


def build_replayer(
    settings: Settings, clients: Clients, recorder: Recorder
) -> tuple[Replayer, Quarantine | None]:
    """The shared core wired for a consumer: timed readers and sinks, the allow-list, the quarantine."""
    from datetime import timedelta

    from replayer.allow import AllowList

    options = SinkOptions(
        max_records_per_invoke=settings.max_records_per_invoke, invoke_retries=settings.invoke_retries
    )
    sinks: list[Sink] = [TimedSink(sink_from_uri(uri, clients, options), recorder) for uri in settings.to]
    replayer = Replayer(
        clients,
        sinks,
        allow=AllowList.of(settings.allow_streams),
        readers=TimedReaders(clients, recorder=recorder),
        expiry_warning=timedelta(seconds=settings.expiry_warning),
    )
    quarantine = quarantine_from_uri(settings.quarantine, clients) if settings.quarantine else None
    return replayer, quarantine
