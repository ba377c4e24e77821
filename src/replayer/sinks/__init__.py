"""Sinks receive recovered ranges: `s3://bucket/prefix`, `file:DIR`, `-` (stdout).

Every sink follows `Sink` (``deliver(failure, result) -> Delivery``), so adding one
touches nothing else but `sink_from_uri`.
"""

from __future__ import annotations

from replayer.aws import Clients
from replayer.errors import ConfigError
from replayer.sinks._base import Delivery, Sink, SinkError
from replayer.sinks.file import FileSink
from replayer.sinks.s3 import S3Sink
from replayer.sinks.stdout import StdoutSink

__all__ = ["Delivery", "FileSink", "S3Sink", "Sink", "SinkError", "StdoutSink", "sink_from_uri"]


def sink_from_uri(uri: str, clients: Clients) -> Sink:
    """Build the sink a `--to` URI names, or raise ConfigError saying what is accepted."""
    if uri == "-":
        return StdoutSink()
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise ConfigError(f"--to {uri!r}: no bucket; expected s3://BUCKET[/PREFIX]")
        return S3Sink(clients, bucket, prefix)
    if uri.startswith("file:"):
        root = uri[len("file:") :]
        if root.startswith("//"):
            root = root[2:]
        if not root:
            raise ConfigError(f"--to {uri!r}: no directory; expected file:DIR")
        return FileSink(root)
    raise ConfigError(f"--to {uri!r}: unknown sink; expected s3://BUCKET[/PREFIX], file:DIR or -")
