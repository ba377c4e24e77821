"""`-`: JSON Lines on standard output, one record per line."""

from __future__ import annotations

import sys
from typing import BinaryIO

from replayer.aws import Clients
from replayer.model import Failure
from replayer.readers import ReadResult
from replayer.sinks._base import Delivery
from replayer.sinks._identity import Roles, as_delivered

__all__ = ["StdoutSink"]


class StdoutSink:
    """Writes each record as it would appear in the Lambda event (Kinesis: with the invokeIdentityArn
    the archive of the same run keeps); keeps no reports."""

    durable = False
    uri = "-"

    def __init__(self, stream: BinaryIO | None = None, clients: Clients | None = None) -> None:
        self._stream = stream
        self.roles = Roles(clients) if clients is not None else None

    async def deliver(self, failure: Failure, result: ReadResult) -> Delivery:
        out = self._stream or sys.stdout.buffer
        for page in await as_delivered(self.roles, failure, result.records):  # never the range as one body
            out.write(b"".join([r.json + b"\n" for r in page]))
        out.flush()
        return Delivery("-")
