"""Sinks receive recovered ranges: `s3://bucket/prefix`, `file:DIR`, `lambda:NAME`, `-` (stdout).

Every sink follows `Sink` (``deliver(failure, result) -> Delivery``), so adding one
touches nothing else but `sink_from_uri`.
"""

from __future__ import annotations

from dataclasses import dataclass

from replayer.aws import Clients
from replayer.errors import ConfigError
from replayer.selection import Selection
from replayer.sinks._base import Delivery, Sink, SinkError
from replayer.sinks.archive import ArchiveSink, FileSink, S3Sink
from replayer.sinks.lambda_ import DEFAULT_MAX_PAYLOAD, LambdaSink, parse_target
from replayer.sinks.stdout import StdoutSink
from replayer.store import parse_location

__all__ = [
    "ArchiveSink",
    "Delivery",
    "FileSink",
    "LambdaSink",
    "S3Sink",
    "Sink",
    "SinkError",
    "SinkOptions",
    "StdoutSink",
    "sink_from_uri",
]

_ACCEPTED = "s3://BUCKET[/PREFIX], file:DIR, lambda:NAME[:QUALIFIER] or -"


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkOptions:
    """Settings for the sinks that take any (today: `lambda:`); the defaults suit most runs."""

    max_records_per_invoke: int | None = None  # None: the range's batchSize, else 100
    invoke_retries: int = 3  # invocations after the first, per batch, on a function error
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD
    retry_wait: float = 1.0  # first backoff (seconds); doubles, with as much jitter
    retry_wait_max: float = 30.0
    no_filter: bool = False  # send every record, not only those the mapping's FilterCriteria admits
    selection: Selection | None = None  # --where/--since/--until/--limit: narrows what lambda: sinks send


def sink_from_uri(uri: str, clients: Clients, options: SinkOptions | None = None) -> Sink:
    """Build the sink a `--to` URI names, or raise ConfigError saying what is accepted."""
    options = options or SinkOptions()
    if uri == "-":
        return StdoutSink()
    if uri.startswith(("s3://", "file:")):
        location = parse_location(uri)
        if location is None:
            raise ConfigError(f"--to {uri!r}: no bucket or directory; expected {_ACCEPTED}")
        kind, where, prefix = location
        return S3Sink(clients, where, prefix) if kind == "s3" else FileSink(where)
    if uri.startswith("lambda:"):
        try:
            target = parse_target(uri[len("lambda:") :])
        except ConfigError as exc:
            raise ConfigError(f"--to {uri!r}: {exc}") from None
        return LambdaSink(
            clients,
            target,
            max_records_per_invoke=options.max_records_per_invoke,
            invoke_retries=options.invoke_retries,
            max_payload_bytes=options.max_payload_bytes,
            retry_wait=options.retry_wait,
            retry_wait_max=options.retry_wait_max,
            apply_filter=not options.no_filter,
            selection=options.selection,
        )
    raise ConfigError(f"--to {uri!r}: unknown sink; expected {_ACCEPTED}")
