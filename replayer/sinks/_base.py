"""The one small protocol every sink follows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from replayer.model import Failure, Gap
from replayer.readers import ReadResult

__all__ = ["Delivery", "Sink", "SinkError"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where a sink put a range, and where its loss report is (durable sinks only)."""

    location: str
    report: str | None = None
    already_there: bool = False  # an earlier attempt or another replica delivered it
    # A durable sink that kept more than this attempt read (an earlier attempt's records):
    # what it holds and reports missing. None: exactly what was read.
    recovered: int | None = None
    gaps: tuple[Gap, ...] | None = None
    notes: tuple[str, ...] = ()  # worth telling with the outcome (e.g. an earlier re-drive marker kept)


class SinkError(Exception):
    """A sink could not deliver; the range is retried (its message stays on the queue)."""


class Sink(Protocol):
    """Delivers one range's records. Idempotent for the same `range_id`."""

    @property
    def uri(self) -> str: ...

    @property
    def durable(self) -> bool:
        """True when the sink keeps loss reports that outlive the stream."""
        ...

    async def deliver(self, failure: Failure, result: ReadResult) -> Delivery: ...
