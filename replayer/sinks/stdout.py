"""`-`: JSON Lines on standard output, one record per line."""

from __future__ import annotations

import sys
from typing import BinaryIO

from replayer.model import Failure
from replayer.readers import ReadResult, pages_of
from replayer.sinks._base import Delivery

__all__ = ["StdoutSink"]


class StdoutSink:
    """Writes each record as it would appear in the Lambda event; keeps no reports."""

    durable = False
    uri = "-"

    def __init__(self, stream: BinaryIO | None = None) -> None:
        self._stream = stream

    async def deliver(self, failure: Failure, result: ReadResult) -> Delivery:
        out = self._stream or sys.stdout.buffer
        for page in pages_of(result.records):  # a page at a time: the range is never one body
            out.write(b"".join([r.json + b"\n" for r in page]))
        out.flush()
        return Delivery("-")
